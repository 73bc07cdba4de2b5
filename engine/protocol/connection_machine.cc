#include "engine/protocol/connection_machine.h"

#include <algorithm>
#include <cstring>

namespace warren::protocol {
namespace {

constexpr std::string_view protocol_header{"AMQP\x00\x00\x09\x01", 8};
constexpr std::uint16_t default_channel_max = 65535;
constexpr std::uint32_t default_frame_max = 131072;

template <class T>
T negotiate_limit(T client, T server, T unlimited) {
  // 0 on either side means "no limit" from that side; otherwise the smaller value wins.
  if (client == 0) return server == 0 ? unlimited : server;
  if (server == 0) return client;
  return std::min(client, server);
}

std::vector<std::string> split_words(std::string_view s) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    std::size_t j = i;
    while (j < s.size() && s[j] != ' ') ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// True while `data` may still be a protocol header: it starts with "AMQP", or with as much of
// it as has arrived.
bool starts_like_protocol_header(std::string_view data) {
  constexpr std::string_view amqp = "AMQP";
  const std::size_t n = std::min(data.size(), amqp.size());
  return n > 0 && data.substr(0, n) == amqp.substr(0, n);
}

std::string with_name(std::uint16_t code, std::string_view detail) {
  std::string text(reply_name(code));
  if (!detail.empty()) {
    if (!text.empty()) text += " - ";
    text += detail;
  }
  return text;
}

}  // namespace

std::string_view reply_name(std::uint16_t code) noexcept {
  switch (code) {
    case 200:
      return "REPLY_SUCCESS";
    case 311:
      return "CONTENT_TOO_LARGE";
    case 312:
      return "NO_ROUTE";
    case 313:
      return "NO_CONSUMERS";
    case 320:
      return "CONNECTION_FORCED";
    case 402:
      return "INVALID_PATH";
    case 403:
      return "ACCESS_REFUSED";
    case 404:
      return "NOT_FOUND";
    case 405:
      return "RESOURCE_LOCKED";
    case 406:
      return "PRECONDITION_FAILED";
    case 501:
      return "FRAME_ERROR";
    case 502:
      return "SYNTAX_ERROR";
    case 503:
      return "COMMAND_INVALID";
    case 504:
      return "CHANNEL_ERROR";
    case 505:
      return "UNEXPECTED_FRAME";
    case 506:
      return "RESOURCE_ERROR";
    case 530:
      return "NOT_ALLOWED";
    case 540:
      return "NOT_IMPLEMENTED";
    case 541:
      return "INTERNAL_ERROR";
  }
  return "";
}

sasl_credentials sasl_plain(std::string_view user, std::string_view password) {
  std::string r;
  r.reserve(user.size() + password.size() + 2);
  r += '\0';
  r += user;
  r += '\0';
  r += password;
  return {"PLAIN", std::move(r)};
}

sasl_credentials sasl_amqplain(std::string_view user, std::string_view password) {
  codec::field_table t;
  t.set("LOGIN", codec::field_value::long_string(std::string(user)));
  t.set("PASSWORD", codec::field_value::long_string(std::string(password)));
  // AMQPLAIN's response is a field table's entries without the table's length prefix.
  return {"AMQPLAIN", codec::encode_table(t)};
}

sasl_credentials sasl_external() {
  return {"EXTERNAL", ""};
}

sasl_credentials sasl_raw(std::string_view mechanism, std::string_view response) {
  return {std::string(mechanism), std::string(response)};
}

const std::vector<std::string>& handled_capabilities() {
  static const std::vector<std::string> caps = {
      "publisher_confirms",     "exchange_exchange_bindings", "basic.nack",
      "consumer_cancel_notify", "connection.blocked",         "authentication_failure_close",
      "per_consumer_qos",
  };
  return caps;
}

connection_machine::connection_machine(connection_config config, connection_handler& handler)
    : config_(std::move(config)), handler_(handler) {}

void connection_machine::start(time_point now) {
  out_.append(protocol_header);
  state_ = connection_state::awaiting_start;
  last_recv_ = now;
  last_send_ = now;
}

void connection_machine::consume_output(std::size_t n, time_point now) noexcept {
  out_head_ += std::min(n, out_.size() - out_head_);
  if (n > 0) last_send_ = now;
  if (out_head_ == out_.size()) {
    out_.clear();
    out_head_ = 0;
  } else if (out_head_ > (1u << 20) && out_head_ > out_.size() / 2) {
    out_.erase(0, out_head_);
    out_head_ = 0;
  }
}

std::size_t connection_machine::feed(std::string_view data, const rx_ref& owner, time_point now) {
  if (!data.empty()) last_recv_ = now;
  if (parse_stopped_ || state_ == connection_state::closed) return data.size();

  std::size_t used = 0;
  if (state_ == connection_state::awaiting_start && starts_like_protocol_header(data)) {
    // A broker that does not speak 0-9-1 answers our header with its own, then closes.
    if (data.size() < 8) return 0;
    char buf[96];
    std::snprintf(buf, sizeof buf, "the broker does not speak AMQP 0-9-1; it offered AMQP %d-%d-%d",
                  static_cast<unsigned char>(data[5]), static_cast<unsigned char>(data[6]),
                  static_cast<unsigned char>(data[7]));
    parse_stopped_ = true;
    mark_closed({540, with_name(540, buf), 0, 0, true});
    return data.size();
  }

  while (used < data.size() && !parse_stopped_ && state_ != connection_state::closed) {
    std::size_t consumed = 0;
    if (state_ == connection_state::open && fast_delivery(data.substr(used), owner, consumed)) {
      used += consumed;
      continue;
    }
    codec::frame_view f;
    codec::errc e = codec::decode_frame(data.substr(used), frame_max_, f, consumed);
    if (e == codec::errc::need_more) break;
    if (e != codec::errc::ok) {
      std::uint16_t code = codec::reply_code(e);
      std::string detail(std::error_code(e).message());
      if (e == codec::errc::frame_too_large) {
        detail += " (" +
                  std::to_string(frame_max_ ? frame_max_ : codec::default_pre_tune_frame_max) + ")";
      }
      parse_stopped_ = true;
      fail(code, with_name(code, detail));
      return data.size();
    }
    used += consumed;
    handle_frame(f, owner);
  }
  return parse_stopped_ ? data.size() : used;
}

void connection_machine::handle_frame(const codec::frame_view& f, const rx_ref& owner) {
  if (metrics_ != nullptr) metrics_->on_frames_received();
  if (f.type == codec::frame_heartbeat) return;  // any received byte already counts as life
  if (f.channel == 0) {
    if (f.type != codec::frame_method) {
      fail(505, with_name(505, "content frame on channel 0"));
      return;
    }
    handle_connection_method(f.payload);
    return;
  }
  if (state_ == connection_state::closing) return;  // discard until close-ok
  if (state_ != connection_state::open) {
    fail(504, with_name(504, "frame on channel " + std::to_string(f.channel) +
                                 " before the connection is open"));
    return;
  }
  handle_channel_frame(f, owner);
}

void connection_machine::handle_connection_method(std::string_view payload) {
  codec::errc e = codec::dispatch_method(payload, [&](const auto& m) {
    using M = std::decay_t<decltype(m)>;
    // While closing, only the close handshake matters.
    if (state_ == connection_state::closing && !std::is_same_v<M, codec::connection_close> &&
        !std::is_same_v<M, codec::connection_close_ok>) {
      return;
    }
    if constexpr (std::is_same_v<M, codec::connection_start>) {
      if (state_ != connection_state::awaiting_start) {
        fail(503, with_name(503, "unexpected connection.start"), M::class_id, M::method_id);
        return;
      }
      on_start(m);
    } else if constexpr (std::is_same_v<M, codec::connection_secure>) {
      if (state_ != connection_state::awaiting_tune) {
        fail(503, with_name(503, "unexpected connection.secure"), M::class_id, M::method_id);
        return;
      }
      if (!config_.on_challenge || ++secure_rounds_ > 16) {
        fail(540,
             with_name(540, "the broker sent a SASL challenge, which mechanism " +
                                chosen_mechanism_ + " does not answer"),
             M::class_id, M::method_id);
        return;
      }
      codec::connection_secure_ok ok;
      std::string response = config_.on_challenge(m.challenge);
      ok.response = response;
      send(0, ok);
    } else if constexpr (std::is_same_v<M, codec::connection_tune>) {
      if (state_ != connection_state::awaiting_tune) {
        fail(503, with_name(503, "unexpected connection.tune"), M::class_id, M::method_id);
        return;
      }
      on_tune(m);
    } else if constexpr (std::is_same_v<M, codec::connection_open_ok>) {
      if (state_ != connection_state::awaiting_open_ok) {
        fail(503, with_name(503, "unexpected connection.open-ok"), M::class_id, M::method_id);
        return;
      }
      state_ = connection_state::open;
      handler_.on_open();
    } else if constexpr (std::is_same_v<M, codec::connection_close>) {
      send(0, codec::connection_close_ok{});
      close_reason why{m.reply_code, std::string(m.reply_text), m.failing_class_id,
                       m.failing_method_id, true};
      if (state_ == connection_state::closing && closed_emitted_) {
        state_ = connection_state::closed;
        return;
      }
      mark_closed(std::move(why));
    } else if constexpr (std::is_same_v<M, codec::connection_close_ok>) {
      if (state_ != connection_state::closing) {
        fail(503, with_name(503, "unexpected connection.close-ok"), M::class_id, M::method_id);
        return;
      }
      close_reason why = closed_reason_;
      mark_closed(std::move(why));
    } else if constexpr (std::is_same_v<M, codec::connection_blocked>) {
      blocked_ = true;
      if (metrics_ != nullptr) metrics_->on_blocked(last_recv_);
      handler_.on_blocked(m.reason);
    } else if constexpr (std::is_same_v<M, codec::connection_unblocked>) {
      blocked_ = false;
      if (metrics_ != nullptr) metrics_->on_unblocked(last_recv_);
      handler_.on_unblocked();
    } else if constexpr (std::is_same_v<M, codec::connection_update_secret_ok>) {
      command c;
      c.channel = 0;
      c.class_id = M::class_id;
      c.method_id = M::method_id;
      handler_.on_command(c);
    } else {
      fail(503,
           with_name(503, std::string("a client does not accept ") + std::string(M::name) +
                              " on channel 0"),
           M::class_id, M::method_id);
    }
  });
  if (e == codec::errc::unknown_method) {
    fail(540, with_name(540, "unknown method on channel 0"));
  } else if (e != codec::errc::ok) {
    fail(502, with_name(502, std::error_code(e).message()));
  }
}

void connection_machine::on_start(const codec::connection_start& m) {
  version_major_ = m.version_major;
  version_minor_ = m.version_minor;
  server_properties_ = {};
  if (codec::decode_table(m.server_properties, server_properties_) != codec::errc::ok) {
    fail(502, with_name(502, "malformed server-properties table"), 10, 10);
    return;
  }
  mechanisms_ = split_words(m.mechanisms);
  locales_ = split_words(m.locales);

  const sasl_credentials* chosen = nullptr;
  for (const auto& cred : config_.authentication) {
    if (std::find(mechanisms_.begin(), mechanisms_.end(), cred.mechanism) != mechanisms_.end()) {
      chosen = &cred;
      break;
    }
  }
  if (chosen == nullptr) {
    std::string offer, avail;
    for (const auto& c : config_.authentication) offer += (offer.empty() ? "" : ", ") + c.mechanism;
    for (const auto& c : mechanisms_) avail += (avail.empty() ? "" : ", ") + c;
    // Not a protocol violation by the broker: nothing to send but a polite close.
    fail(403, with_name(403, "no common authentication mechanism (client can offer: " + offer +
                                 "; broker accepts: " + avail + ")"));
    return;
  }
  chosen_mechanism_ = chosen->mechanism;

  client_properties_ = {};
  client_properties_.set("product", codec::field_value::long_string("warren"));
  client_properties_.set("version", codec::field_value::long_string("0.1.0"));
  client_properties_.set("platform", codec::field_value::long_string("C++20"));
  client_properties_.set("information",
                         codec::field_value::long_string("multithreaded AMQP 0-9-1 client"));
  for (const auto& [name, value] : config_.client_properties) client_properties_.set(name, value);
  // Only negotiation may claim capabilities: a configured table would claim unoffered ones.
  client_properties_.erase("capabilities");

  const codec::field_table& server_caps = server_capabilities();
  codec::field_table caps;
  const auto& wanted = config_.capabilities.empty() ? handled_capabilities() : config_.capabilities;
  for (const auto& cap : wanted) {
    if (std::find(handled_capabilities().begin(), handled_capabilities().end(), cap) ==
        handled_capabilities().end()) {
      continue;  // never claim what this client does not implement
    }
    const codec::field_value* v = server_caps.find(cap);
    if (v != nullptr && v->as_boolean() != nullptr && *v->as_boolean())
      caps.set(cap, codec::field_value::boolean(true));
  }
  if (caps.size() > 0) client_properties_.set("capabilities", codec::field_value::table(caps));

  std::string props = codec::encode_table(client_properties_);
  codec::connection_start_ok ok;
  ok.client_properties = codec::table_view{props};
  ok.mechanism = chosen->mechanism;
  ok.response = chosen->response;
  ok.locale = config_.locale;
  if (send(0, ok) != codec::errc::ok) {
    fail(541, with_name(541, "client properties or credentials too large to encode"));
    return;
  }
  state_ = connection_state::awaiting_tune;
}

void connection_machine::on_tune(const codec::connection_tune& m) {
  std::uint16_t client_channel_max =
      config_.channel_max ? config_.channel_max : default_channel_max;
  std::uint32_t client_frame_max = config_.frame_max ? config_.frame_max : default_frame_max;
  channel_max_ =
      negotiate_limit<std::uint16_t>(client_channel_max, m.channel_max, default_channel_max);
  frame_max_ = negotiate_limit<std::uint32_t>(client_frame_max, m.frame_max, default_frame_max);
  if (frame_max_ < codec::frame_min_size) {
    fail(530,
         with_name(530, "negotiated frame_max " + std::to_string(frame_max_) +
                            " below the protocol minimum 4096"),
         10, 30);
    return;
  }
  server_heartbeat_ = m.heartbeat;
  // py-amqp's rule: a client asking for 0 disables heartbeats; otherwise the smaller of the
  // two non-zero values, or the non-zero one.
  std::uint16_t client_hb = config_.heartbeat;
  if (client_hb == 0) {
    heartbeat_ = 0;
  } else if (server_heartbeat_ == 0) {
    heartbeat_ = client_hb;
  } else {
    heartbeat_ = std::min(client_hb, server_heartbeat_);
  }
  codec::connection_tune_ok ok;
  ok.channel_max = channel_max_;
  ok.frame_max = frame_max_;
  ok.heartbeat = heartbeat_;
  send(0, ok);
  codec::connection_open open;
  open.virtual_host = config_.virtual_host;
  if (send(0, open) != codec::errc::ok) {
    fail(402, with_name(402, "virtual host name longer than 255 octets"), 10, 40);
    return;
  }
  state_ = connection_state::awaiting_open_ok;
  handler_.on_tuned();
}

const codec::field_table& connection_machine::server_capabilities() const noexcept {
  static const codec::field_table empty;
  const codec::field_value* v = server_properties_.find("capabilities");
  if (v == nullptr) return empty;
  const codec::field_table* t = v->as_table();
  return t != nullptr ? *t : empty;
}

connection_machine::channel_slot* connection_machine::slot_of(std::uint16_t channel) {
  if (channel == cached_id_ && cached_slot_ != nullptr) return cached_slot_;
  auto it = channels_.find(channel);
  if (it == channels_.end()) return nullptr;
  cached_id_ = channel;
  cached_slot_ = &it->second;
  return cached_slot_;
}

channel_state connection_machine::state_of(std::uint16_t channel) const noexcept {
  auto it = channels_.find(channel);
  return it == channels_.end() ? channel_state::closed : it->second.state;
}

void connection_machine::handle_channel_frame(const codec::frame_view& f, const rx_ref& owner) {
  channel_slot* slot = slot_of(f.channel);
  if (slot == nullptr || slot->state == channel_state::closed) {
    fail(504,
         with_name(504, "frame on channel " + std::to_string(f.channel) + ", which is not open"));
    return;
  }
  switch (f.type) {
    case codec::frame_method:
      if (slot->stage != channel_slot::stage::idle) {
        fail(505, with_name(505, "method frame while content was expected on channel " +
                                     std::to_string(f.channel)));
        return;
      }
      handle_channel_method(*slot, f.channel, f.payload, owner);
      return;
    case codec::frame_header: {
      if (slot->stage != channel_slot::stage::header) {
        fail(505, with_name(505, "content header without a content method on channel " +
                                     std::to_string(f.channel)));
        return;
      }
      command& c = slot->pending;
      if (codec::decode(f.payload, c.header) != codec::errc::ok ||
          c.header.class_id != c.class_id) {
        fail(502,
             with_name(502, "malformed content header on channel " + std::to_string(f.channel)));
        return;
      }
      if (c.header.body_size > config_.max_body_size) {
        // Refused before anything is allocated for it: body-size is the peer's claim.
        fail(506, with_name(506, "content body of " + std::to_string(c.header.body_size) +
                                     " octets on channel " + std::to_string(f.channel) +
                                     " above the client's limit of " +
                                     std::to_string(config_.max_body_size)));
        return;
      }
      if (owner.get() != c.keep[0].get()) c.keep[1] = owner;
      if (c.header.body_size == 0) {
        c.body = {};
        deliver(*slot);
      } else {
        slot->stage = channel_slot::stage::body;
        slot->body_received = 0;
      }
      return;
    }
    case codec::frame_body: {
      if (slot->stage != channel_slot::stage::body) {
        fail(505, with_name(505, "content body without a content header on channel " +
                                     std::to_string(f.channel)));
        return;
      }
      command& c = slot->pending;
      const std::uint64_t total = c.header.body_size;
      const std::uint64_t left = total - slot->body_received;
      if (f.payload.size() > left) {
        fail(502, with_name(502, "content body longer than its header's body-size on channel " +
                                     std::to_string(f.channel)));
        return;
      }
      if (slot->state == channel_state::closing) {
        // Content of a channel being closed is dropped: count it, keep nothing.
        slot->body_received += f.payload.size();
        if (slot->body_received == total) deliver(*slot);
        return;
      }
      if (slot->body_received == 0 && f.payload.size() == total) {
        // The whole body in one frame: hand out a view into the receive buffer, no copy.
        c.body = f.payload;
        if (owner.get() != c.keep[0].get() && owner.get() != c.keep[1].get()) c.keep[2] = owner;
        deliver(*slot);
        return;
      }
      if (slot->body_received == 0) {
        slot->body_buffer = rx_ref::allocate(static_cast<std::size_t>(total));
      }
      std::memcpy(slot->body_buffer->data() + slot->body_received, f.payload.data(),
                  f.payload.size());
      slot->body_received += f.payload.size();
      if (slot->body_received == total) {
        c.body = std::string_view(slot->body_buffer->data(), static_cast<std::size_t>(total));
        c.keep[2] = std::move(slot->body_buffer);
        deliver(*slot);
      }
      return;
    }
    default:
      fail(505, with_name(505, "unexpected frame type " + std::to_string(f.type)));
  }
}

void connection_machine::handle_channel_method(channel_slot& slot, std::uint16_t channel,
                                               std::string_view payload, const rx_ref& owner) {
  codec::reader r(payload);
  std::uint16_t class_id = 0, method_id = 0;
  if (!r.read_u16(class_id) || !r.read_u16(method_id)) {
    fail(502, with_name(502, "method frame shorter than its ids"));
    return;
  }
  if (!codec::method_known(class_id, method_id)) {
    fail(540,
         with_name(540,
                   "unknown method " + std::to_string(class_id) + "." + std::to_string(method_id)),
         class_id, method_id);
    return;
  }
  const std::uint32_t id = (std::uint32_t{class_id} << 16) | method_id;

  if (slot.state == channel_state::closing) {
    // After our channel.close only the close handshake counts (spec 2.3.5.2). A content
    // method is still set up (and dropped by deliver()), so that its header and body frames
    // are consumed rather than taken for content without a method.
    if (id == codec::channel_close_ok::id) {
      slot.state = channel_state::closed;
    } else if (id == codec::channel_close::id) {
      // The closes crossed. The broker answers ours with close-ok too (RabbitMQ does), which
      // ends the channel; taking it for closed now would make that close-ok a 504.
      send(channel, codec::channel_close_ok{});
      return;
    } else if (!codec::method_has_content(class_id, method_id)) {
      return;
    }
  } else if (id == codec::channel_close::id) {
    codec::channel_close m;
    if (codec::decode(payload.substr(4), m) != codec::errc::ok) {
      fail(502, with_name(502, "malformed channel.close"), class_id, method_id);
      return;
    }
    send(channel, codec::channel_close_ok{});
    slot.state = channel_state::closed;
    slot.stage = channel_slot::stage::idle;
    handler_.on_channel_closed(channel, {m.reply_code, std::string(m.reply_text),
                                         m.failing_class_id, m.failing_method_id, true});
    return;
  } else if (id == codec::channel_open_ok::id) {
    if (slot.state != channel_state::opening) {
      fail(503, with_name(503, "unexpected channel.open-ok"), class_id, method_id);
      return;
    }
    slot.state = channel_state::open;
  } else if (id == codec::channel_close_ok::id) {
    // Only our channel.close (the closing branch above) is answered by close-ok.
    fail(503, with_name(503, "unexpected channel.close-ok"), class_id, method_id);
    return;
  } else if (id == codec::channel_flow::id) {
    if (slot.state == channel_state::opening) {
      fail(505, with_name(505, "channel.flow before channel.open-ok"), class_id, method_id);
      return;
    }
    codec::channel_flow m;
    if (codec::decode(payload.substr(4), m) != codec::errc::ok) {
      fail(502, with_name(502, "malformed channel.flow"), class_id, method_id);
      return;
    }
    codec::channel_flow_ok ok;
    ok.active = m.active;
    send(channel, ok);
  } else if (slot.state == channel_state::opening) {
    fail(505, with_name(505, "method before channel.open-ok"), class_id, method_id);
    return;
  }

  command& c = slot.pending;
  c.channel = channel;
  c.class_id = class_id;
  c.method_id = method_id;
  c.args = payload.substr(4);
  c.keep[0] = owner;
  if (codec::method_has_content(class_id, method_id)) {
    c.has_content = true;
    slot.stage = channel_slot::stage::header;
    return;
  }
  c.has_content = false;
  deliver(slot);
}

bool connection_machine::fast_delivery(std::string_view in, const rx_ref& owner,
                                       std::size_t& consumed) {
  // A method frame of basic.deliver (60.60)? Checked on the raw octets before any decoding.
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  if (in.size() < codec::frame_header_size + 4 || p[0] != codec::frame_method || p[7] != 0 ||
      p[8] != 60 || p[9] != 0 || p[10] != 60) {
    return false;
  }
  codec::delivery_view& d = fast_view_;
  std::size_t used = 0;
  if (codec::decode_delivery(in, frame_max_, d, used) != codec::errc::ok ||
      d.body_frame_count > 1 || d.header.body_size > config_.max_body_size) {
    return false;
  }
  channel_slot* slot = slot_of(d.channel);
  if (slot == nullptr || slot->state != channel_state::open ||
      slot->stage != channel_slot::stage::idle) {
    return false;
  }
  const std::size_t method_size =
      std::size_t{p[3]} << 24 | std::size_t{p[4]} << 16 | std::size_t{p[5]} << 8 | p[6];
  command& c = fast_;
  c.channel = d.channel;
  c.class_id = 60;
  c.method_id = 60;
  c.args = in.substr(codec::frame_header_size + 4, method_size - 4);
  c.has_content = true;
  c.header = d.header;
  c.body = d.body;
  c.keep[0] = owner;  // all three parts are in `in`
  c.has_deliver = true;
  c.deliver = d.method;
  consumed = used;
  if (metrics_ != nullptr) metrics_->on_frames_received(2 + d.body_frame_count);
  handler_.on_command(c);
  // Whatever the handler did not take goes now, so that the buffer is not held until the next
  // delivery.
  c.keep[0].reset();
  return true;
}

void connection_machine::deliver(channel_slot& slot) {
  slot.stage = channel_slot::stage::idle;
  command c = std::move(slot.pending);
  slot.pending = command{};
  if (slot.state == channel_state::closing) return;  // see handle_channel_method
  handler_.on_command(c);
}

void connection_machine::open_channel(std::uint16_t channel) {
  channel_slot& slot = channels_[channel];
  cached_slot_ = nullptr;
  slot.state = channel_state::opening;
  slot.stage = channel_slot::stage::idle;
  slot.pending = command{};
  send(channel, codec::channel_open{});
}

void connection_machine::close_channel(std::uint16_t channel, std::uint16_t reply_code,
                                       std::string_view reply_text, std::uint16_t class_id,
                                       std::uint16_t method_id) {
  channel_slot* slot = slot_of(channel);
  if (slot == nullptr || slot->state == channel_state::closed ||
      slot->state == channel_state::closing) {
    return;
  }
  slot->state = channel_state::closing;
  codec::channel_close m;
  m.reply_code = reply_code;
  m.reply_text = reply_text.substr(0, 255);
  m.failing_class_id = class_id;
  m.failing_method_id = method_id;
  send(channel, m);
}

codec::errc connection_machine::send_publish(std::uint16_t channel, const codec::basic_publish& m,
                                             const codec::basic_properties& props,
                                             std::string_view body) {
  const std::size_t need = codec::publish_size(m, props, body.size(), frame_max_);
  const std::size_t at = out_.size();
  out_.resize(at + need);
  std::size_t written = 0;
  codec::errc e =
      codec::encode_publish(out_.data() + at, need, written, channel, m, props, body, frame_max_);
  out_.resize(at + (e == codec::errc::ok ? written : 0));
  if (e == codec::errc::ok && metrics_ != nullptr) {
    metrics_->on_frames_sent(2 + codec::body_frame_count(body.size(), frame_max_));
  }
  return e;
}

void connection_machine::close(std::uint16_t reply_code, std::string_view reply_text,
                               std::uint16_t class_id, std::uint16_t method_id) {
  if (state_ == connection_state::closing || state_ == connection_state::closed) return;
  if (state_ == connection_state::initial) {
    mark_closed({reply_code, std::string(reply_text), class_id, method_id, false});
    return;
  }
  codec::connection_close m;
  m.reply_code = reply_code;
  m.reply_text = reply_text.substr(0, 255);
  m.failing_class_id = class_id;
  m.failing_method_id = method_id;
  send(0, m);
  closed_reason_ = {reply_code, std::string(reply_text), class_id, method_id, false};
  state_ = connection_state::closing;
}

void connection_machine::fail(std::uint16_t reply_code, std::string reply_text,
                              std::uint16_t class_id, std::uint16_t method_id) {
  if (closed_emitted_) return;
  close_reason why{reply_code, std::move(reply_text), class_id, method_id, false};
  if (state_ != connection_state::closing && state_ != connection_state::closed &&
      state_ != connection_state::initial) {
    close(why.reply_code, why.reply_text, class_id, method_id);
  }
  closed_reason_ = why;
  closed_emitted_ = true;
  handler_.on_closed(why);
}

void connection_machine::mark_closed(close_reason why) {
  state_ = connection_state::closed;
  if (closed_emitted_) return;
  closed_reason_ = why;
  closed_emitted_ = true;
  handler_.on_closed(closed_reason_);
}

void connection_machine::transport_closed(std::string_view why) {
  if (state_ == connection_state::closed && closed_emitted_) return;
  close_reason r;
  if (state_ == connection_state::awaiting_tune) {
    // Without authentication_failure_close, RabbitMQ reports a refused login by closing the
    // socket right after start-ok.
    r = {403,
         with_name(403,
                   "login refused: the broker closed the connection during "
                   "authentication (mechanism " +
                       chosen_mechanism_ + ")"),
         10, 11, true};
  } else if (state_ == connection_state::closing) {
    r = closed_reason_;
  } else {
    r = {320, with_name(320, std::string("connection lost: ") + std::string(why)), 0, 0, true};
  }
  if (closed_emitted_) {
    state_ = connection_state::closed;
    return;
  }
  mark_closed(std::move(r));
}

time_point connection_machine::next_timer() const noexcept {
  // Once on_closed has been emitted no timer work remains; a past deadline would make the
  // caller's loop spin while it waits for the transport to end.
  if (heartbeat_ == 0 || state_ == connection_state::closed || closed_emitted_) {
    return time_point::max();
  }
  return std::min(last_send_ + half_heartbeat(), last_recv_ + 4 * half_heartbeat());
}

void connection_machine::on_timer(time_point now) {
  if (heartbeat_ == 0 || state_ == connection_state::closed || closed_emitted_) return;
  const auto hb = std::chrono::seconds(heartbeat_);
  if (metrics_ != nullptr) {
    // Each whole interval of silence counts once, however often on_timer looks at it.
    if (missed_since_ != last_recv_) {
      missed_since_ = last_recv_;
      missed_counted_ = 0;
    }
    const std::int64_t missed = (now - last_recv_) / hb;
    for (; missed_counted_ < missed; ++missed_counted_) metrics_->on_heartbeat_missed();
  }
  if (now - last_recv_ >= 2 * hb) {
    parse_stopped_ = true;
    fail(320,
         with_name(
             320,
             "Too many heartbeats missed: nothing received from the broker for " +
                 std::to_string(
                     std::chrono::duration_cast<std::chrono::seconds>(now - last_recv_).count()) +
                 " s (heartbeat " + std::to_string(heartbeat_) + " s)"));
    return;
  }
  if (now - last_send_ >= half_heartbeat() && !has_output()) send_heartbeat();
}

void connection_machine::send_heartbeat_if_idle(time_point now) {
  if (heartbeat_ == 0 || state_ == connection_state::closed || closed_emitted_) return;
  if (now - last_send_ >= half_heartbeat() && !has_output()) send_heartbeat();
}

void connection_machine::send_heartbeat() {
  out_.append(codec::heartbeat_frame);
  if (metrics_ != nullptr) metrics_->on_frames_sent();
}

void connection_machine::update_secret(std::string_view new_secret, std::string_view reason) {
  codec::connection_update_secret m;
  m.new_secret = new_secret;
  m.reason = reason;
  send(0, m);
}

}  // namespace warren::protocol
