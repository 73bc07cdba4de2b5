// The py-amqp-style Message: a body, the 14 basic properties, and (for received messages)
// delivery_info and the channel it arrived on.
//
// Received bodies are not copied: body() is a view into the connection's receive buffer, and
// the message holds a reference that keeps that buffer alive for as long as the message (or a
// copy of it) exists, even after the connection is destroyed. body_copy() gives an owning
// std::string when one is wanted.
//
// Threading: a message is a value; distinct messages may be used on distinct threads. ack(),
// reject() and nack() go through the owning channel and follow its thread rules.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "codec/content.h"
#include "codec/field_table.h"
#include "engine/buffer.h"

namespace warren {

class channel;

// The 14 basic properties, owning. py-amqp calls `headers` "application_headers".
struct properties {
  std::optional<std::string> content_type;
  std::optional<std::string> content_encoding;
  std::optional<codec::field_table> headers;
  std::optional<std::uint8_t> delivery_mode;  // 1 transient, 2 persistent
  std::optional<std::uint8_t> priority;
  std::optional<std::string> correlation_id;
  std::optional<std::string> reply_to;
  std::optional<std::string> expiration;
  std::optional<std::string> message_id;
  std::optional<std::uint64_t> timestamp;  // seconds since the epoch
  std::optional<std::string> type;
  std::optional<std::string> user_id;
  std::optional<std::string> app_id;
  std::optional<std::string> cluster_id;

  bool operator==(const properties&) const = default;

  // Decodes the wire form (views) into owning values. Errors: the headers table's decode error.
  static codec::errc from_wire(const codec::basic_properties& in, properties& out);
  // A wire view of these properties. `headers_scratch` receives the encoded headers table and
  // must outlive the returned value; string views point into *this.
  codec::basic_properties to_wire(std::string& headers_scratch) const;
};

// How a received message arrived. message_count is set for basic.get-ok only.
struct delivery_info {
  std::string consumer_tag;
  std::uint64_t delivery_tag = 0;
  bool redelivered = false;
  std::string exchange;
  std::string routing_key;
  std::optional<std::uint32_t> message_count;
};

class message {
 public:
  message() = default;
  // An outgoing message owning its body.
  explicit message(std::string body, properties props = {})
      : owned_(std::move(body)), props_(std::move(props)) {
    body_ = owned_;
  }
  // Internal: a received message whose body is a view kept alive by `keep`.
  message(std::string_view body, rx_ref keep_method, rx_ref keep_header, rx_ref keep_body)
      : body_(body) {
    keep_[0] = std::move(keep_method);
    keep_[1] = std::move(keep_header);
    keep_[2] = std::move(keep_body);
  }

  message(const message& o) { *this = o; }
  message& operator=(const message& o);
  message(message&& o) noexcept { *this = std::move(o); }
  message& operator=(message&& o) noexcept;

  // The body octets. Valid while this message lives.
  std::string_view body() const noexcept { return body_; }
  std::string body_copy() const { return std::string(body_); }
  std::size_t body_size() const noexcept { return body_.size(); }
  // The body as UTF-8 text, honouring content_encoding: utf-8/utf8/ascii/us-ascii (or none) as
  // is, latin-1/iso-8859-1 converted. Throws std::invalid_argument for another encoding or for
  // bytes not valid in the declared one.
  std::string text() const;

  properties& props() noexcept { return props_; }
  const properties& props() const noexcept { return props_; }
  // Shorthands for the common properties.
  const std::optional<std::string>& content_type() const noexcept { return props_.content_type; }
  const std::optional<std::string>& content_encoding() const noexcept {
    return props_.content_encoding;
  }
  // The headers table (empty when absent).
  const codec::field_table& headers() const noexcept;
  // A quorum queue's redelivery count (the x-delivery-count header: 1 on the first redelivery,
  // then 2, ...); nullopt when absent (a first delivery, or a queue type that does not count).
  std::optional<std::uint64_t> delivery_count() const noexcept;
  // A stream delivery's offset (the x-stream-offset header); nullopt when absent.
  std::optional<std::uint64_t> stream_offset() const noexcept;

  const warren::delivery_info& delivery_info() const noexcept { return info_; }
  warren::delivery_info& delivery_info() noexcept { return info_; }
  std::uint64_t delivery_tag() const noexcept { return info_.delivery_tag; }
  // The channel this message was received on; nullptr for outgoing messages or once the
  // channel object is gone (channels live as long as their connection).
  warren::channel* channel() const noexcept;
  void set_channel(warren::channel* ch) noexcept;

  // py-amqp's Message.ack()/reject(): through the receiving channel. Throws
  // std::logic_error when the message was not received on a channel or its connection is gone.
  void ack() const;
  void reject(bool requeue = false) const;
  void nack(bool multiple = false, bool requeue = true) const;

 private:
  std::string owned_;
  std::string_view body_;
  rx_ref keep_[3];
  properties props_;
  warren::delivery_info info_;
  warren::channel* channel_ = nullptr;
  // Expires with the channel object, so that channel() never hands out a dangling pointer.
  std::weak_ptr<const void> channel_alive_;
};

}  // namespace warren
