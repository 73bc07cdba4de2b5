// Error codes of the wire codec. Every decoder returns one of these through std::error_code;
// nothing in codec/ throws. `reply_code()` maps each error to the AMQP connection-close reply
// code that a peer receiving such bytes must send (501 frame-error, 502 syntax-error,
// 505 unexpected-frame, 540 not-implemented).
#pragma once

#include <cstdint>
#include <system_error>

namespace warren::codec {

enum class errc : int {
  ok = 0,
  // Not an error: the input ends before the item does. Feed more bytes and call again.
  need_more = 1,
  // Frame layer (501 frame-error unless noted).
  bad_frame_end,       // frame-end octet is not 0xCE
  frame_too_large,     // frame size above the negotiated frame-max
  unknown_frame_type,  // type octet not 1, 2, 3 or 8 (505 unexpected-frame)
  bad_heartbeat,       // heartbeat frame on a channel other than 0 or with a payload (501)
  // Payload syntax (502 syntax-error).
  truncated,           // a field runs past the end of its frame payload
  trailing_bytes,      // a method payload has bytes after its last argument
  bad_field_type,      // unknown field-value type letter in a table or array
  table_too_deep,      // nesting above the decoder's depth limit
  table_too_large,     // table or array above the decoder's size or entry limit
  bad_content_header,  // content header malformed (class mismatch, flags, sizes)
  // Semantics.
  unknown_method,    // class-id/method-id not in the spec (540 not-implemented)
  unexpected_frame,  // frame out of place (505)
  // Encoding side.
  buffer_too_small,    // the caller-provided output buffer cannot hold the encoding
  string_too_long,     // a shortstr above 255 octets
  value_out_of_range,  // an argument that cannot be represented on the wire
};

const std::error_category& codec_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), codec_category()};
}

// The AMQP reply code a receiver must close the connection with for this error, or 0 for
// errc::ok and errc::need_more (which are not protocol violations).
std::uint16_t reply_code(errc e) noexcept;

}  // namespace warren::codec

template <>
struct std::is_error_code_enum<warren::codec::errc> : std::true_type {};
