// A scripted broker for unit tests of the sans-I/O protocol machines: builds, with the codec,
// the exact bytes a broker would send (one call per frame or per command), and decodes what the
// client wrote back into frames that tests can assert on.
//
// Nothing here touches sockets, threads or clocks; a test feeds peer.take() into the machine
// and reads the machine's output through parse_client_output(). Not thread-safe (one test
// thread).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "codec/content.h"
#include "codec/error.h"
#include "codec/field_table.h"
#include "codec/frame.h"
#include "codec/methods.h"
#include "codec/wire.h"

namespace warren::protocol::test {

inline constexpr std::string_view amqp_0_9_1_header{"AMQP\x00\x00\x09\x01", 8};

// The broker side of a conversation, as bytes. Every builder appends one or more whole frames
// (raw() appends anything) and returns *this, so scripts read top to bottom.
class scripted_peer {
 public:
  // Any frame, payload given as is (the size field is computed; the end octet is 0xCE).
  scripted_peer& frame(std::uint8_t type, std::uint16_t channel, std::string_view payload) {
    char header[codec::frame_header_size];
    codec::write_frame_header(header, type, channel, static_cast<std::uint32_t>(payload.size()));
    out_.append(header, sizeof header);
    out_.append(payload);
    out_ += static_cast<char>(codec::frame_end);
    return *this;
  }

  // Any method struct of codec/methods.h as one method frame.
  template <class M>
  scripted_peer& method(std::uint16_t channel, const M& m) {
    codec::writer w(out_);
    encode_status_ = codec::encode_method_frame(channel, m, w);
    w.finish();
    return *this;
  }

  // connection.start offering `mechanisms` (space separated, as RabbitMQ writes them), with
  // server-properties {product, capabilities} where capabilities holds `capabilities`.
  scripted_peer& start(std::string_view mechanisms = "PLAIN AMQPLAIN",
                       const codec::field_table& capabilities = {},
                       std::string_view locales = "en_US") {
    codec::field_table props;
    props.set("product", codec::field_value::long_string("RabbitMQ"));
    props.set("version", codec::field_value::long_string("3.10.8"));
    props.set("capabilities", codec::field_value::table(capabilities));
    const std::string raw = codec::encode_table(props);
    codec::connection_start m;
    m.version_major = 0;
    m.version_minor = 9;
    m.server_properties = codec::table_view{raw};
    m.mechanisms = mechanisms;
    m.locales = locales;
    return method(0, m);
  }

  // Capabilities as RabbitMQ lists them: each name a boolean (true unless listed in `off`).
  static codec::field_table capabilities(const std::vector<std::string>& on,
                                         const std::vector<std::string>& off = {}) {
    codec::field_table t;
    for (const auto& c : on) t.set(c, codec::field_value::boolean(true));
    for (const auto& c : off) t.set(c, codec::field_value::boolean(false));
    return t;
  }

  scripted_peer& secure(std::string_view challenge) {
    codec::connection_secure m;
    m.challenge = challenge;
    return method(0, m);
  }

  scripted_peer& tune(std::uint16_t channel_max, std::uint32_t frame_max, std::uint16_t heartbeat) {
    return method(0, codec::connection_tune{channel_max, frame_max, heartbeat});
  }

  scripted_peer& open_ok() { return method(0, codec::connection_open_ok{}); }

  scripted_peer& connection_close(std::uint16_t code, std::string_view text,
                                  std::uint16_t class_id = 0, std::uint16_t method_id = 0) {
    return method(0, codec::connection_close{code, text, class_id, method_id});
  }
  scripted_peer& connection_close_ok() { return method(0, codec::connection_close_ok{}); }

  scripted_peer& channel_open_ok(std::uint16_t channel) {
    return method(channel, codec::channel_open_ok{});
  }
  scripted_peer& channel_close(std::uint16_t channel, std::uint16_t code, std::string_view text,
                               std::uint16_t class_id = 0, std::uint16_t method_id = 0) {
    return method(channel, codec::channel_close{code, text, class_id, method_id});
  }
  scripted_peer& channel_close_ok(std::uint16_t channel) {
    return method(channel, codec::channel_close_ok{});
  }

  // A content-header frame; class_id other than 60 makes a malformed header on purpose.
  scripted_peer& header(std::uint16_t channel, std::uint64_t body_size,
                        const codec::basic_properties& props = {},
                        std::uint16_t class_id = codec::basic_class_id) {
    codec::content_header h;
    h.class_id = class_id;
    h.body_size = body_size;
    h.properties = props;
    std::string payload;
    codec::writer w(payload);
    encode_status_ = codec::encode(h, w);
    w.finish();
    return frame(codec::frame_header, channel, payload);
  }

  scripted_peer& body(std::uint16_t channel, std::string_view chunk) {
    return frame(codec::frame_body, channel, chunk);
  }

  // basic.deliver alone (the content frames are up to the script).
  scripted_peer& deliver_method(std::uint16_t channel, std::uint64_t delivery_tag,
                                std::string_view routing_key = "rk") {
    codec::basic_deliver m;
    m.consumer_tag = "ctag";
    m.delivery_tag = delivery_tag;
    m.exchange = "ex";
    m.routing_key = routing_key;
    return method(channel, m);
  }

  // A whole delivery: basic.deliver, the content header, and `body` cut into `body_frames`
  // body frames of near-equal size (none for an empty body).
  scripted_peer& deliver(std::uint16_t channel, std::uint64_t delivery_tag, std::string_view body,
                         std::size_t body_frames = 1, const codec::basic_properties& props = {}) {
    deliver_method(channel, delivery_tag);
    header(channel, body.size(), props);
    for (std::string_view part : split(body, body_frames)) this->body(channel, part);
    return *this;
  }

  scripted_peer& heartbeat() {
    out_.append(codec::heartbeat_frame);
    return *this;
  }

  // Anything at all: another protocol header, garbage, a truncated frame.
  scripted_peer& raw(std::string_view bytes) {
    out_.append(bytes);
    return *this;
  }

  const std::string& bytes() const noexcept { return out_; }
  std::string take() { return std::exchange(out_, {}); }
  // The result of the last encode: a script that could not be encoded is a test bug.
  codec::errc encode_status() const noexcept { return encode_status_; }

  // `s` cut into `n` consecutive parts whose sizes differ by at most one (no empty part
  // unless s is shorter than n; none at all for an empty s).
  static std::vector<std::string_view> split(std::string_view s, std::size_t n) {
    std::vector<std::string_view> parts;
    if (s.empty()) return parts;
    n = std::clamp<std::size_t>(n, 1, s.size());
    std::size_t at = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t len = s.size() / n + (i < s.size() % n ? 1 : 0);
      parts.push_back(s.substr(at, len));
      at += len;
    }
    return parts;
  }

 private:
  std::string out_;
  codec::errc encode_status_ = codec::errc::ok;
};

// One frame the client wrote. Decoded methods view `payload`, so they live as long as this.
struct client_frame {
  std::uint8_t type = 0;
  std::uint16_t channel = 0;
  std::string payload;

  // (class-id << 16) | method-id for a method frame, 0 otherwise.
  std::uint32_t method_id() const noexcept {
    codec::reader r(payload);
    std::uint16_t c = 0, m = 0;
    if (type != codec::frame_method || !r.read_u16(c) || !r.read_u16(m)) return 0;
    return (std::uint32_t{c} << 16) | m;
  }
  template <class M>
  bool is() const noexcept {
    return method_id() == M::id;
  }
  // The method, when this frame is exactly an M that decodes; nullopt otherwise.
  template <class M>
  std::optional<M> as() const noexcept {
    M m;
    if (!is<M>() || codec::decode(std::string_view(payload).substr(4), m) != codec::errc::ok) {
      return std::nullopt;
    }
    return m;
  }
};

struct client_output {
  bool protocol_header = false;  // the stream began with AMQP 0-9-1's header
  std::vector<client_frame> frames;
  // ok, or why the stream is not a sequence of whole frames (trailing partial frame included).
  codec::errc error = codec::errc::ok;
};

// Splits what the client wrote into an optional protocol header and whole frames.
inline client_output parse_client_output(std::string_view bytes) {
  client_output out;
  if (bytes.starts_with(amqp_0_9_1_header)) {
    out.protocol_header = true;
    bytes.remove_prefix(amqp_0_9_1_header.size());
  }
  while (!bytes.empty()) {
    codec::frame_view f;
    std::size_t consumed = 0;
    // The client's own frames are checked against no frame-max: that is not what is tested.
    out.error = codec::decode_frame(bytes, 0xFFFFFFFFu, f, consumed);
    if (out.error != codec::errc::ok) break;
    out.frames.push_back({f.type, f.channel, std::string(f.payload)});
    bytes.remove_prefix(consumed);
  }
  return out;
}

}  // namespace warren::protocol::test
