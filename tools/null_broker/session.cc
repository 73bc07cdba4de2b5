#include "tools/null_broker/session.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "codec/content.h"
#include "codec/field_table.h"
#include "codec/frame.h"
#include "codec/methods.h"

namespace warren::null_broker {

namespace {

constexpr std::string_view protocol_header{"AMQP\x00\x00\x09\x01", 8};
// Reads go straight into the input buffer, so it is large: one read then carries thousands of
// small publishes. The rest of a partial method frame is kept in front of the next read.
constexpr std::size_t input_buffer_octets = 1 << 20;
constexpr std::size_t min_read_space = 64 * 1024;

// Advertised so that clients enable what they would use against RabbitMQ.
codec::field_table server_properties() {
  codec::field_table capabilities;
  for (const char* name :
       {"publisher_confirms", "basic.nack", "consumer_cancel_notify", "connection.blocked",
        "exchange_exchange_bindings", "per_consumer_qos"}) {
    capabilities.set(name, codec::field_value::boolean(true));
  }
  codec::field_table props;
  props.set("product", codec::field_value::long_string("warren null_broker"));
  props.set("version", codec::field_value::long_string("0"));
  props.set("platform", codec::field_value::long_string("C++20"));
  props.set("information",
            codec::field_value::long_string("a measuring instrument: no queues, no routing"));
  props.set("capabilities", codec::field_value::table(std::move(capabilities)));
  return props;
}

}  // namespace

session::session(const options& o)
    : options_(o),
      frame_max_(o.frame_max),
      in_(std::max<std::size_t>(input_buffer_octets, 2 * std::size_t{o.frame_max} + min_read_space),
          '\0'),
      channels_(std::size_t{channel_max} + 1) {}

template <class Method>
void session::send(std::uint16_t channel, const Method& m) {
  codec::writer w(control_);
  // Only replies built here from bounded inputs (shortstrs that arrived as shortstrs) are
  // encoded, so encoding cannot fail.
  (void)codec::encode_method_frame(channel, m, w);
  w.finish();
}

void session::take_control(std::string& out) {
  out.append(control_);
  control_.clear();
}

void session::queue_heartbeat() {
  control_.append(codec::heartbeat_frame);
}

bool session::commit_read(std::size_t n) {
  counters_.octets_received += n;
  const std::size_t avail = in_used_ + n;
  std::size_t pos = 0;
  if (state_ == state::protocol_header) {
    if (avail < protocol_header.size()) {
      in_used_ = avail;
      return true;
    }
    if (!on_protocol_header(std::string_view(in_.data(), protocol_header.size()))) return false;
    pos = protocol_header.size();
  }
  if (skip_ != 0) {
    const std::size_t s = static_cast<std::size_t>(std::min<std::uint64_t>(skip_, avail - pos));
    skip_ -= s;
    pos += s;
  }
  std::size_t consumed = 0;
  const bool ok = process_frames(in_.data() + pos, avail - pos, consumed);
  pos += consumed;
  queue_confirms();
  if (!ok) return false;
  // A partial frame (a few octets, or a method frame below frame-max) moves to the front.
  in_used_ = avail - pos;
  if (in_used_ != 0 && pos != 0) std::memmove(in_.data(), in_.data() + pos, in_used_);
  return true;
}

bool session::on_protocol_header(std::string_view header) {
  if (header != protocol_header) {
    // As the spec asks: our own header, then close.
    control_.append(protocol_header);
    return false;
  }
  const std::string props = codec::encode_table(server_properties());
  codec::connection_start start;
  start.server_properties = codec::table_view{props};
  start.mechanisms = "PLAIN AMQPLAIN EXTERNAL";
  start.locales = "en_US";
  send(0, start);
  state_ = state::start_ok;
  return true;
}

bool session::process_frames(const char* p, std::size_t n, std::size_t& consumed) {
  // The frame-max in force while the client has not answered tune yet is ours.
  const std::uint32_t frame_max = frame_max_;
  std::size_t pos = 0;
  while (n - pos >= codec::frame_header_size) {
    codec::frame_view f;
    std::size_t used = 0;
    const codec::errc e =
        codec::decode_frame(std::string_view(p + pos, n - pos), frame_max, f, used);
    if (e == codec::errc::need_more) {
      const auto type = static_cast<std::uint8_t>(p[pos]);
      if (type == codec::frame_body || type == codec::frame_header) {
        // Nothing of a content frame is needed: drop what is here, skip the rest as it comes.
        const std::uint64_t whole =
            std::uint64_t{codec::reader::load_u32(p + pos + 3)} + codec::frame_overhead;
        skip_ = whole - (n - pos);
        pos = n;
      }
      break;
    }
    if (e != codec::errc::ok) {
      consumed = pos;
      return close_connection(codec::reply_code(e), codec::make_error_code(e).message(), 0);
    }
    pos += used;
    if (f.type != codec::frame_method) continue;  // content and heartbeats: nothing to do
    if (f.payload.size() >= 4 &&
        codec::reader::load_u32(f.payload.data()) == codec::basic_publish::id &&
        state_ == state::open) {
      if (f.channel > channel_max || !channels_[f.channel].open) {
        consumed = pos;
        return close_connection(codec::constants::channel_error, "CHANNEL_ERROR - not open",
                                codec::basic_publish::id);
      }
      ++counters_.published;
      channel_state& c = channels_[f.channel];
      if (c.confirm) {
        ++c.published;
        if (!c.ack_due) {
          c.ack_due = true;
          ack_due_.push_back(f.channel);
        }
      }
      continue;
    }
    if (!on_method(f.channel, f.payload)) {
      consumed = pos;
      return false;
    }
  }
  consumed = pos;
  return true;
}

void session::queue_confirms() {
  for (const std::uint16_t ch : ack_due_) {
    channel_state& c = channels_[ch];
    c.ack_due = false;
    if (!c.open || !c.confirm) continue;
    send(ch, codec::basic_ack{.delivery_tag = c.published, .multiple = true});
    ++counters_.acks_sent;
  }
  ack_due_.clear();
}

bool session::close_connection(std::uint16_t code, std::string_view text, std::uint32_t method_id) {
  send(0, codec::connection_close{.reply_code = code,
                                  .reply_text = text,
                                  .failing_class_id = static_cast<std::uint16_t>(method_id >> 16),
                                  .failing_method_id = static_cast<std::uint16_t>(method_id)});
  drop_streams(0, {});
  state_ = state::closing;
  return false;
}

bool session::on_method(std::uint16_t ch, std::string_view payload) {
  const std::uint32_t id = payload.size() >= 4 ? codec::reader::load_u32(payload.data()) : 0;
  // Returns true to go on, false to close.
  auto visit = [&](const auto& m) -> bool {
    using method = std::decay_t<decltype(m)>;
    if constexpr (std::is_same_v<method, codec::connection_close>) {
      drop_streams(0, {});
      send(0, codec::connection_close_ok{});
      state_ = state::closing;
      return false;
    } else if constexpr (std::is_same_v<method, codec::connection_close_ok>) {
      state_ = state::closing;
      return false;
    } else if constexpr (std::is_same_v<method, codec::connection_start_ok>) {
      if (state_ != state::start_ok || ch != 0) return close_connection(503, "start-ok", id);
      send(0, codec::connection_tune{.channel_max = channel_max,
                                     .frame_max = options_.frame_max,
                                     .heartbeat = options_.heartbeat});
      state_ = state::tune_ok;
      return true;
    } else if constexpr (std::is_same_v<method, codec::connection_tune_ok>) {
      if (state_ != state::tune_ok || ch != 0) return close_connection(503, "tune-ok", id);
      if (m.frame_max != 0 && m.frame_max < codec::frame_min_size) {
        return close_connection(530, "frame-max below 4096", id);
      }
      if (m.frame_max != 0) frame_max_ = std::min(m.frame_max, options_.frame_max);
      heartbeat_ = m.heartbeat;
      state_ = state::connection_open;
      return true;
    } else if constexpr (std::is_same_v<method, codec::connection_open>) {
      if (state_ != state::connection_open || ch != 0) return close_connection(503, "open", id);
      send(0, codec::connection_open_ok{});
      state_ = state::open;
      return true;
    } else {
      if (state_ != state::open) return close_connection(503, "COMMAND_INVALID", id);
      if (ch == 0 || ch > channel_max) {
        return close_connection(503, "COMMAND_INVALID - not on channel 0", id);
      }
      channel_state& c = channels_[ch];
      if constexpr (std::is_same_v<method, codec::channel_open>) {
        if (c.open) return close_connection(504, "CHANNEL_ERROR - already open", id);
        // A reopened channel starts new tag sequences, as in RabbitMQ.
        c = channel_state{};
        c.open = true;
        send(ch, codec::channel_open_ok{});
        return true;
      } else if constexpr (std::is_same_v<method, codec::channel_close_ok>) {
        c.open = false;
        return true;
      } else {
        if (!c.open) return close_connection(504, "CHANNEL_ERROR - channel not open", id);
        if constexpr (std::is_same_v<method, codec::channel_close>) {
          drop_streams(ch, {});
          c.open = false;
          send(ch, codec::channel_close_ok{});
        } else if constexpr (std::is_same_v<method, codec::channel_flow>) {
          send(ch, codec::channel_flow_ok{.active = m.active});
        } else if constexpr (std::is_same_v<method, codec::queue_declare>) {
          std::string name(m.queue);
          if (name.empty()) name = "amq.gen-null-" + std::to_string(++generated_names_);
          if (!m.nowait) send(ch, codec::queue_declare_ok{.queue = name});
        } else if constexpr (std::is_same_v<method, codec::queue_bind>) {
          if (!m.nowait) send(ch, codec::queue_bind_ok{});
        } else if constexpr (std::is_same_v<method, codec::queue_unbind>) {
          send(ch, codec::queue_unbind_ok{});
        } else if constexpr (std::is_same_v<method, codec::queue_purge>) {
          if (!m.nowait) send(ch, codec::queue_purge_ok{.message_count = 0});
        } else if constexpr (std::is_same_v<method, codec::queue_delete>) {
          if (!m.nowait) send(ch, codec::queue_delete_ok{.message_count = 0});
        } else if constexpr (std::is_same_v<method, codec::exchange_declare>) {
          if (!m.nowait) send(ch, codec::exchange_declare_ok{});
        } else if constexpr (std::is_same_v<method, codec::exchange_delete>) {
          if (!m.nowait) send(ch, codec::exchange_delete_ok{});
        } else if constexpr (std::is_same_v<method, codec::exchange_bind>) {
          if (!m.nowait) send(ch, codec::exchange_bind_ok{});
        } else if constexpr (std::is_same_v<method, codec::exchange_unbind>) {
          if (!m.nowait) send(ch, codec::exchange_unbind_ok{});
        } else if constexpr (std::is_same_v<method, codec::basic_qos>) {
          send(ch, codec::basic_qos_ok{});
        } else if constexpr (std::is_same_v<method, codec::confirm_select>) {
          c.confirm = true;
          if (!m.nowait) send(ch, codec::confirm_select_ok{});
        } else if constexpr (std::is_same_v<method, codec::basic_consume>) {
          std::string tag(m.consumer_tag);
          if (tag.empty()) tag = "amq.ctag-null-" + std::to_string(++generated_names_);
          if (!m.nowait) send(ch, codec::basic_consume_ok{.consumer_tag = tag});
          if (options_.mode == mode::firehose) start_stream(ch, tag, m.queue);
        } else if constexpr (std::is_same_v<method, codec::basic_cancel>) {
          drop_streams(ch, m.consumer_tag);
          if (!m.nowait) send(ch, codec::basic_cancel_ok{.consumer_tag = m.consumer_tag});
        } else if constexpr (std::is_same_v<method, codec::basic_ack> ||
                             std::is_same_v<method, codec::basic_nack> ||
                             std::is_same_v<method, codec::basic_reject>) {
          ++counters_.acks_received;
        } else {
          return close_connection(540, "NOT_IMPLEMENTED - not in the null broker", id);
        }
        return true;
      }
    }
  };
  bool go_on = true;
  const codec::errc e = codec::dispatch_method(payload, [&](const auto& m) { go_on = visit(m); });
  if (e != codec::errc::ok)
    return close_connection(codec::reply_code(e), codec::make_error_code(e).message(), id);
  return go_on;
}

void session::start_stream(std::uint16_t ch, std::string_view consumer_tag,
                           std::string_view queue) {
  // One delivery, encoded with the codec, then repeated to fill a chunk.
  std::string one;
  codec::writer w(one);
  (void)codec::encode_method_frame(ch,
                                   codec::basic_deliver{.consumer_tag = consumer_tag,
                                                        .delivery_tag = 0,
                                                        .redelivered = false,
                                                        .exchange = "",
                                                        .routing_key = queue},
                                   w);
  // frame header, class and method ids, then the consumer tag shortstr.
  const std::size_t tag_at = codec::frame_header_size + 4 + 1 + consumer_tag.size();
  const codec::content_header header{.body_size = options_.body_size};
  const std::size_t header_at = w.reserve(codec::frame_header_size);
  (void)codec::encode(header, w);
  w.u8(codec::frame_end);
  w.finish();
  codec::write_frame_header(one.data() + header_at, codec::frame_header, ch,
                            static_cast<std::uint32_t>(codec::encoded_size(header)));
  const std::size_t chunk_max = codec::max_body_chunk(frame_max_);
  for (std::size_t left = options_.body_size; left != 0;) {
    const std::size_t n = std::min(left, chunk_max);
    char frame_header[codec::frame_header_size];
    codec::write_frame_header(frame_header, codec::frame_body, ch, static_cast<std::uint32_t>(n));
    one.append(frame_header, sizeof frame_header);
    one.append(n, 'x');
    one.push_back(static_cast<char>(codec::frame_end));
    left -= n;
  }

  stream s;
  s.channel = ch;
  s.consumer_tag = std::string(consumer_tag);
  const std::size_t copies = std::max<std::size_t>(1, options_.firehose_chunk_octets / one.size());
  s.chunk.reserve(copies * one.size());
  for (std::size_t i = 0; i < copies; ++i) {
    s.tag_offsets.push_back(s.chunk.size() + tag_at);
    s.chunk.append(one);
  }
  streams_.push_back(std::move(s));
}

void session::drop_streams(std::uint16_t ch, std::string_view consumer_tag) {
  for (stream& s : streams_) {
    if ((ch == 0 || s.channel == ch) && (consumer_tag.empty() || s.consumer_tag == consumer_tag)) {
      s.cancelled = true;
    }
  }
}

std::string_view session::next_deliveries() {
  // The previous chunk is written by now (the contract), so cancelled streams can go.
  std::erase_if(streams_, [](const stream& s) { return s.cancelled; });
  if (streams_.empty() || state_ != state::open) return {};
  stream& s = streams_[next_stream_++ % streams_.size()];
  channel_state& c = channels_[s.channel];
  char* base = s.chunk.data();
  for (const std::size_t at : s.tag_offsets) codec::detail::put_u64(base + at, c.next_delivery++);
  counters_.delivered += s.tag_offsets.size();
  return s.chunk;
}

}  // namespace warren::null_broker
