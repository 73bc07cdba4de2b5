#include "engine/client/message.h"

#include <stdexcept>

#include "engine/client/connection.h"
#include "engine/protocol/streams.h"

namespace warren {
namespace {

std::optional<std::string> opt_string(bool present, std::string_view v) {
  if (!present) return std::nullopt;
  return std::string(v);
}

bool is_valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    std::size_t n;
    if (c < 0x80) {
      n = 0;
    } else if ((c >> 5) == 0x6) {
      n = 1;
    } else if ((c >> 4) == 0xE) {
      n = 2;
    } else if ((c >> 3) == 0x1E) {
      n = 3;
    } else {
      return false;
    }
    if (s.size() - i - 1 < n) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += n + 1;
  }
  return true;
}

}  // namespace

codec::errc properties::from_wire(const codec::basic_properties& in, properties& out) {
  out.content_type = opt_string(in.has_content_type(), in.content_type);
  out.content_encoding = opt_string(in.has_content_encoding(), in.content_encoding);
  if (in.has_headers()) {
    codec::field_table t;
    codec::errc e = codec::decode_table(in.headers, t);
    if (e != codec::errc::ok) return e;
    out.headers = std::move(t);
  } else {
    out.headers.reset();
  }
  out.delivery_mode =
      in.has_delivery_mode() ? std::optional<std::uint8_t>(in.delivery_mode) : std::nullopt;
  out.priority = in.has_priority() ? std::optional<std::uint8_t>(in.priority) : std::nullopt;
  out.correlation_id = opt_string(in.has_correlation_id(), in.correlation_id);
  out.reply_to = opt_string(in.has_reply_to(), in.reply_to);
  out.expiration = opt_string(in.has_expiration(), in.expiration);
  out.message_id = opt_string(in.has_message_id(), in.message_id);
  out.timestamp = in.has_timestamp() ? std::optional<std::uint64_t>(in.timestamp) : std::nullopt;
  out.type = opt_string(in.has_type(), in.type);
  out.user_id = opt_string(in.has_user_id(), in.user_id);
  out.app_id = opt_string(in.has_app_id(), in.app_id);
  out.cluster_id = opt_string(in.has_cluster_id(), in.cluster_id);
  return codec::errc::ok;
}

codec::basic_properties properties::to_wire(std::string& headers_scratch) const {
  codec::basic_properties p;
  if (content_type) p.set_content_type(*content_type);
  if (content_encoding) p.set_content_encoding(*content_encoding);
  if (headers) {
    codec::errc e = codec::errc::ok;
    headers_scratch = codec::encode_table(*headers, &e);
    if (e != codec::errc::ok) {
      throw std::invalid_argument("message headers cannot be encoded: " +
                                  std::error_code(e).message());
    }
    p.set_headers(codec::table_view{headers_scratch});
  }
  if (delivery_mode) p.set_delivery_mode(*delivery_mode);
  if (priority) p.set_priority(*priority);
  if (correlation_id) p.set_correlation_id(*correlation_id);
  if (reply_to) p.set_reply_to(*reply_to);
  if (expiration) p.set_expiration(*expiration);
  if (message_id) p.set_message_id(*message_id);
  if (timestamp) p.set_timestamp(*timestamp);
  if (type) p.set_type(*type);
  if (user_id) p.set_user_id(*user_id);
  if (app_id) p.set_app_id(*app_id);
  if (cluster_id) p.set_cluster_id(*cluster_id);
  return p;
}

message& message::operator=(const message& o) {
  if (this == &o) return *this;
  owned_ = o.owned_;
  for (int i = 0; i < 3; ++i) keep_[i] = o.keep_[i];
  // An owned body must point at our copy; a received one stays a view into the shared buffer.
  body_ = o.body_.data() == o.owned_.data() ? std::string_view(owned_) : o.body_;
  props_ = o.props_;
  info_ = o.info_;
  channel_ = o.channel_;
  channel_alive_ = o.channel_alive_;
  return *this;
}

message& message::operator=(message&& o) noexcept {
  if (this == &o) return *this;
  const bool owned = o.body_.data() == o.owned_.data();
  owned_ = std::move(o.owned_);
  for (int i = 0; i < 3; ++i) keep_[i] = std::move(o.keep_[i]);
  body_ = owned ? std::string_view(owned_) : o.body_;
  props_ = std::move(o.props_);
  info_ = std::move(o.info_);
  channel_ = o.channel_;
  channel_alive_ = std::move(o.channel_alive_);
  o.body_ = {};
  return *this;
}

const codec::field_table& message::headers() const noexcept {
  static const codec::field_table empty;
  return props_.headers ? *props_.headers : empty;
}

std::optional<std::uint64_t> message::delivery_count() const noexcept {
  return props_.headers ? delivery_count_header(*props_.headers) : std::nullopt;
}

std::optional<std::uint64_t> message::stream_offset() const noexcept {
  return props_.headers ? stream_offset_header(*props_.headers) : std::nullopt;
}

std::string message::text() const {
  std::string enc = props_.content_encoding.value_or("utf-8");
  for (char& c : enc) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (enc == "utf-8" || enc == "utf8" || enc.empty()) {
    if (!is_valid_utf8(body_)) throw std::invalid_argument("message body is not valid UTF-8");
    return std::string(body_);
  }
  if (enc == "ascii" || enc == "us-ascii") {
    for (char c : body_) {
      if (static_cast<unsigned char>(c) >= 0x80) {
        throw std::invalid_argument("message body is not valid ASCII");
      }
    }
    return std::string(body_);
  }
  if (enc == "latin-1" || enc == "latin1" || enc == "iso-8859-1" || enc == "iso8859-1") {
    std::string out;
    out.reserve(body_.size() * 2);
    for (char ch : body_) {
      const unsigned char c = static_cast<unsigned char>(ch);
      if (c < 0x80) {
        out += static_cast<char>(c);
      } else {
        out += static_cast<char>(0xC0 | (c >> 6));
        out += static_cast<char>(0x80 | (c & 0x3F));
      }
    }
    return out;
  }
  throw std::invalid_argument("unsupported content_encoding '" + enc + "'");
}

warren::channel* message::channel() const noexcept {
  return channel_alive_.expired() ? nullptr : channel_;
}

void message::set_channel(warren::channel* ch) noexcept {
  channel_ = ch;
  channel_alive_ =
      ch != nullptr ? std::weak_ptr<const void>(ch->alive_) : std::weak_ptr<const void>();
}

namespace {

warren::channel& receiving_channel(const message& m) {
  warren::channel* ch = m.channel();
  if (ch == nullptr) {
    throw std::logic_error(
        "message was not received on a channel, or its connection has been destroyed");
  }
  return *ch;
}

}  // namespace

void message::ack() const {
  receiving_channel(*this).basic_ack(info_.delivery_tag);
}

void message::reject(bool requeue) const {
  receiving_channel(*this).basic_reject(info_.delivery_tag, requeue);
}

void message::nack(bool multiple, bool requeue) const {
  receiving_channel(*this).basic_nack(info_.delivery_tag, multiple, requeue);
}

}  // namespace warren
