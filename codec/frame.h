// AMQP 0-9-1 frames: type (octet) · channel (short) · size (long) · payload · 0xCE.
//
// Decoding never copies: a frame_view's payload points into the caller's input and is valid
// exactly as long as those bytes are. Encoding writes into caller-provided memory. Nothing here
// allocates, throws, or keeps state between calls except frame_decoder's position. Every
// function may be called from any thread; a frame_decoder belongs to one thread at a time.
//
// frame-max counts the whole frame (7 header octets + payload + frame-end), so a payload may be
// at most frame_max - 8 octets. frame_max 0 means "not negotiated yet" (before connection.tune);
// the decoder then applies a pre-tune limit, default_pre_tune_frame_max (131072, RabbitMQ's
// default frame-max), which callers may override.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "codec/error.h"
#include "codec/methods.h"
#include "codec/wire.h"

namespace warren::codec {

inline constexpr std::uint8_t frame_method = 1;
inline constexpr std::uint8_t frame_header = 2;
inline constexpr std::uint8_t frame_body = 3;
inline constexpr std::uint8_t frame_heartbeat = 8;

inline constexpr std::uint8_t frame_end = 0xCE;
inline constexpr std::size_t frame_header_size = 7;
inline constexpr std::size_t frame_overhead = frame_header_size + 1;
// FRAME-MIN-SIZE: the smallest frame-max a peer may negotiate.
inline constexpr std::uint32_t frame_min_size = 4096;
inline constexpr std::uint32_t default_pre_tune_frame_max = 131072;

// The only valid heartbeat frame: type 8, channel 0, empty payload.
inline constexpr std::string_view heartbeat_frame{"\x08\x00\x00\x00\x00\x00\x00\xCE", 8};

struct frame_view {
  std::uint8_t type = 0;
  std::uint16_t channel = 0;
  std::string_view payload;  // into the decoder's input
};

// The frame-max in force: frame_max itself, or pre_tune_frame_max while frame_max is 0.
constexpr std::uint32_t effective_frame_max(
    std::uint32_t frame_max,
    std::uint32_t pre_tune_frame_max = default_pre_tune_frame_max) noexcept {
  return frame_max != 0 ? frame_max : pre_tune_frame_max;
}

// Decodes the frame at the start of `in`. On errc::ok, `out` views the frame and `consumed` is
// its full length (header + payload + end octet). On any other result `consumed` is 0 and `out`
// is unspecified. Checks are made as soon as the 7 header octets are present, so a hostile
// header is rejected without buffering its claimed payload. Returns:
//   need_more           `in` holds less than one whole frame (and its header, if complete, is
//                       valid)
//   unknown_frame_type  type octet not 1, 2, 3 or 8 (reply 505)
//   frame_too_large     size above effective_frame_max(frame_max, pre_tune) - 8 (reply 501)
//   bad_heartbeat       heartbeat on a channel other than 0 or with a payload (reply 501)
//   bad_frame_end       the octet after the payload is not 0xCE (reply 501)
// Inline because it runs once per received frame, and an out-of-line call would pass the view
// through memory.
inline errc decode_frame(std::string_view in, std::uint32_t frame_max, frame_view& out,
                         std::size_t& consumed,
                         std::uint32_t pre_tune_frame_max = default_pre_tune_frame_max) noexcept {
  consumed = 0;
  if (in.size() < frame_header_size) return errc::need_more;
  const char* p = in.data();
  const auto type = static_cast<std::uint8_t>(p[0]);
  const std::uint16_t channel = reader::load_u16(p + 1);
  const std::uint32_t size = reader::load_u32(p + 3);

  switch (type) {
    case frame_method:
    case frame_header:
    case frame_body:
      break;
    case frame_heartbeat:
      if (channel != 0 || size != 0) return errc::bad_heartbeat;
      break;
    default:
      return errc::unknown_frame_type;
  }
  // 64-bit arithmetic: a frame_max below 8 must reject every payload rather than wrap.
  const std::uint64_t limit = effective_frame_max(frame_max, pre_tune_frame_max);
  if (std::uint64_t{size} + frame_overhead > limit) return errc::frame_too_large;
  // Compared against what remains rather than added to a pointer, so no overflow.
  if (in.size() - frame_header_size <= size) return errc::need_more;
  if (static_cast<std::uint8_t>(p[frame_header_size + size]) != frame_end) {
    return errc::bad_frame_end;
  }
  out.type = type;
  out.channel = channel;
  out.payload = std::string_view(p + frame_header_size, size);
  consumed = frame_header_size + size + 1;
  return errc::ok;
}

// Walks the frames of one receive buffer. Typical use: point it at the unread bytes, call
// next() until it stops returning ok, then drop consumed() octets from the front of the buffer
// (views handed out by next() die with those bytes) and point it at the buffer again after the
// next read. An error result does not advance the position, so calling next() again returns the
// same error; anything but need_more means the connection must be closed with
// reply_code(error).
class frame_decoder {
 public:
  explicit frame_decoder(std::uint32_t frame_max = 0,
                         std::uint32_t pre_tune_frame_max = default_pre_tune_frame_max) noexcept
      : frame_max_(frame_max), pre_tune_frame_max_(pre_tune_frame_max) {}

  // Starts walking `buffer` from its first octet; consumed() restarts at 0.
  void set_input(std::string_view buffer) noexcept {
    input_ = buffer;
    consumed_ = 0;
  }
  // Applies the frame-max agreed in connection.tune to every later frame.
  void set_frame_max(std::uint32_t frame_max) noexcept { frame_max_ = frame_max; }
  std::uint32_t frame_max() const noexcept { return frame_max_; }

  // Decodes the next frame; the results are those of decode_frame().
  errc next(frame_view& out) noexcept {
    std::size_t n = 0;
    errc e = decode_frame(input_.substr(consumed_), frame_max_, out, n, pre_tune_frame_max_);
    consumed_ += n;
    return e;
  }
  // Octets of the input taken by complete frames so far.
  std::size_t consumed() const noexcept { return consumed_; }
  std::string_view unread() const noexcept { return input_.substr(consumed_); }

 private:
  std::string_view input_;
  std::size_t consumed_ = 0;
  std::uint32_t frame_max_;
  std::uint32_t pre_tune_frame_max_;
};

// Writes the 7-octet frame header at `out` (which must have room) and returns out + 7.
inline char* write_frame_header(char* out, std::uint8_t type, std::uint16_t channel,
                                std::uint32_t size) noexcept {
  out[0] = static_cast<char>(type);
  return detail::put_u32(detail::put_u16(out + 1, channel), size);
}

// Appends a whole method frame for `m`, any method struct of codec/methods.h (found through
// its generated encoded_size() and encode()). Returns ok, or encode()'s errors
// (string_too_long, value_out_of_range, buffer_too_small). On error the writer may hold a
// partial frame after its previous size(): the caller discards the frame (a fixed writer is
// then overflowed() or rewound by the caller; a growable one is resized back).
template <class Method>
errc encode_method_frame(std::uint16_t channel, const Method& m, writer& w) noexcept {
  const std::size_t size = encoded_size(m);
  if (size > 0xFFFFFFFFu - frame_overhead) return errc::value_out_of_range;
  if (w.reserve(frame_header_size) == static_cast<std::size_t>(-1)) {
    return errc::buffer_too_small;
  }
  if (const errc e = encode(m, w); e != errc::ok) return e;
  // The header is written last: growth of a string-backed writer may have moved the buffer.
  write_frame_header(w.position() - size - frame_header_size, frame_method, channel,
                     static_cast<std::uint32_t>(size));
  w.u8(frame_end);
  return w.overflowed() ? errc::buffer_too_small : errc::ok;
}

}  // namespace warren::codec
