// The publish hot path: basic.publish method frame + content-header frame + body frames
// encoded straight into the caller's memory, and the matching fast decode of a delivery.
//
// Layout of one publish on the wire (all on `channel`):
//   method frame (basic.publish) · header frame (class 60, body size, properties) ·
//   body frames of max_body_chunk(frame_max) octets, the last one shorter; none for an empty body.
// Methods and content headers are never split (RabbitMQ ignores frame-max for them).
//
// Nothing here allocates, throws, or keeps state, except publish_template::assign() (which
// allocates the cached head; see publish_template); every function may be called from any
// thread on distinct outputs. Sizes are computed once per call and the frames written without
// further checks. For repeated publishes with the same channel, exchange, routing key and
// properties, publish_template skips re-encoding the method and header frames.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "codec/content.h"
#include "codec/error.h"
#include "codec/frame.h"
#include "codec/methods.h"

namespace warren::codec {

// Exact number of octets encode_publish() writes for these arguments (meaningless for
// arguments it rejects).
std::size_t publish_size(const basic_publish& m, const basic_properties& p, std::size_t body_size,
                         std::uint32_t frame_max) noexcept;

// Writes the whole publish at `out` (capacity `cap`) and sets `written` to publish_size().
// frame_max is the negotiated value (0 before tune: the pre-tune limit applies). On error
// nothing is written and `written` is 0. Returns:
//   string_too_long     exchange, routing key or a present shortstr property above 255 octets
//   value_out_of_range  frame_max non-zero and below frame_min_size; property flags with bit
//                       1 or 0 set; a headers table of 4 GiB or more
//   buffer_too_small    cap < publish_size()
errc encode_publish(char* out, std::size_t cap, std::size_t& written, std::uint16_t channel,
                    const basic_publish& m, const basic_properties& p, std::string_view body,
                    std::uint32_t frame_max) noexcept;

// The same octets as encode_publish(), as an iovec list for writev()/sendmsg() that leaves the
// body where it is. Frame headers, the method and header frames and the frame-end octets go
// into `scratch`; body chunks point into `body` (iov_base is non-const only because struct
// iovec is; the body is never written). Room needed: publish_scratch_size() octets of scratch
// and publish_iov_count() entries. The iovecs are valid while scratch and body are. Returns
// encode_publish()'s errors, with buffer_too_small also for iov_cap too small; on error
// iov_count is 0.
errc encode_publish_iov(char* scratch, std::size_t scratch_cap, iovec* iov, std::size_t iov_cap,
                        std::size_t& iov_count, std::uint16_t channel, const basic_publish& m,
                        const basic_properties& p, std::string_view body,
                        std::uint32_t frame_max) noexcept;

inline std::size_t publish_scratch_size(const basic_publish& m, const basic_properties& p,
                                        std::size_t body_size, std::uint32_t frame_max) noexcept {
  return publish_size(m, p, body_size, frame_max) - body_size;
}

// One scratch entry up front, then per body frame its chunk and the scratch entry after it
// (frame-end, and the next body frame's header if any).
inline std::size_t publish_iov_count(std::size_t body_size, std::uint32_t frame_max) noexcept {
  return 1 + 2 * static_cast<std::size_t>(body_frame_count(body_size, frame_max));
}

// A publish whose method frame and content-header frame are encoded once and then reused for
// every message with the same channel, exchange, routing key, flags and properties: each
// encode() copies that head, patches the 8-octet body size at a known offset and appends the
// body frames. The octets are exactly encode_publish()'s for the same arguments.
//
// Building (assign) allocates and may throw std::bad_alloc, nothing else; it copies everything
// it needs, so the views in `m` and `p` need not outlive it. The per-message calls (size,
// encode, encode_iov) never allocate or throw. A template is a value: one thread at a time may
// assign it; any number of threads may call the const members on distinct outputs while nobody
// assigns it.
class publish_template {
 public:
  publish_template() = default;

  // Encodes the head for these arguments, replacing any previous one. frame_max is the
  // negotiated value (0 before tune: the pre-tune limit applies); renegotiation needs a new
  // assign(). Returns encode_publish()'s argument errors (string_too_long, value_out_of_range);
  // on error the template is left empty (encode() then fails) and the previous head is gone.
  errc assign(std::uint16_t channel, const basic_publish& m, const basic_properties& p,
              std::uint32_t frame_max);

  // Whether the last assign() succeeded.
  bool valid() const noexcept { return !head_.empty(); }

  // Exact octets encode() writes for a body of body_size octets (meaningless when !valid()).
  std::size_t size(std::size_t body_size) const noexcept {
    return head_.size() + body_size + frame_overhead * body_frames(body_size);
  }

  // Writes the whole publish of `body` at `out` (capacity `cap`) and sets `written` to
  // size(body.size()). On error nothing is written and `written` is 0. Returns:
  //   value_out_of_range  the template is not valid()
  //   buffer_too_small    cap < size(body.size())
  // Always inlined: it is a few loads, two copies and the body frames, and a call costs about
  // 2 ns of its 10.
  errc encode(char* out, std::size_t cap, std::string_view body,
              std::size_t& written) const noexcept;

  // The same octets as an iovec list that leaves the body where it is, like
  // encode_publish_iov(): the head (with its body size) and the body frames' headers and end
  // octets go into `scratch`, which needs scratch_size() octets; iov needs iov_count() entries
  // (publish_iov_count()). The iovecs are valid while scratch and body are, never pointing into
  // the template, so it may be reused or reassigned at once. Returns encode()'s errors, with
  // buffer_too_small also for iov_cap too small; on error iov_count is 0.
  errc encode_iov(char* scratch, std::size_t scratch_cap, iovec* iov, std::size_t iov_cap,
                  std::size_t& iov_count, std::string_view body) const noexcept;

  std::size_t scratch_size(std::size_t body_size) const noexcept {
    return size(body_size) - body_size;
  }

  // The encoded method and header frames, body size 0: for tests and inspection.
  std::string_view head() const noexcept { return head_; }
  std::uint16_t channel() const noexcept { return channel_; }

 private:
  std::size_t body_frames(std::size_t body_size) const noexcept {
    // Most bodies fit one frame: no division for them.
    if (body_size <= chunk_) return body_size != 0 ? 1 : 0;
    return body_size / chunk_ + (body_size % chunk_ != 0 ? 1 : 0);
  }

  std::string head_;
  std::size_t body_size_at_ = 0;  // offset of the 8-octet body size in head_
  std::size_t chunk_ = 1;         // max_body_chunk(frame_max)
  std::uint16_t channel_ = 0;
};

namespace detail {

inline char* put_frame_end(char* out) noexcept {
  return put_u8(out, frame_end);
}

// The body frames of `body`, cut into chunks of `chunk` octets, at `out`, which has room.
// Returns the end of what it wrote.
[[gnu::always_inline]] inline char* write_body_frames(char* out, std::uint16_t channel,
                                                      std::string_view body,
                                                      std::size_t chunk) noexcept {
  // Most bodies fit one frame: written without the loop's bookkeeping.
  if (body.size() <= chunk) {
    if (body.empty()) return out;
    out = write_frame_header(out, frame_body, channel, static_cast<std::uint32_t>(body.size()));
    return put_frame_end(put_bytes(out, body));
  }
  for (std::string_view rest = body; !rest.empty();) {
    const std::string_view piece = rest.substr(0, chunk);
    out = write_frame_header(out, frame_body, channel, static_cast<std::uint32_t>(piece.size()));
    out = put_frame_end(put_bytes(out, piece));
    rest.remove_prefix(piece.size());
  }
  return out;
}

}  // namespace detail

[[gnu::always_inline]] inline errc publish_template::encode(char* out, std::size_t cap,
                                                            std::string_view body,
                                                            std::size_t& written) const noexcept {
  written = 0;
  if (head_.empty()) return errc::value_out_of_range;
  const std::size_t total = size(body.size());
  if (cap < total) return errc::buffer_too_small;
  std::memcpy(out, head_.data(), head_.size());
  detail::put_u64(out + body_size_at_, body.size());
  detail::write_body_frames(out + head_.size(), channel_, body, chunk_);
  written = total;
  return errc::ok;
}

// A delivery decoded in one go: basic.deliver, its content header and its body, all views into
// the input.
struct delivery_view {
  std::uint16_t channel = 0;
  basic_deliver method;
  content_header header;
  // The body when it arrived in at most one body frame; empty otherwise (see body_frames).
  std::string_view body;
  // Every body frame of the delivery, frame headers and ends included; copy_body() gathers it.
  std::string_view body_frames;
  std::uint64_t body_frame_count = 0;
};

// Decodes, from the start of `in`, a basic.deliver method frame, its content-header frame and
// its body frames, when they are contiguous (no other frame in between). On ok, `consumed` is
// the octets they take; otherwise it is 0 and `out` is unspecified. Returns:
//   need_more           `in` ends before the delivery does
//   decode_frame()'s errors for any of its frames
//   unexpected_frame    the first frame is not a method frame carrying basic.deliver, or a
//                       later frame is not the next header/body frame of this delivery on the
//                       same channel, or the body frames exceed body_size. Frames of other
//                       channels may legally come between, so this is the caller's cue to
//                       assemble frame by frame; it decides whether it is a violation.
//   truncated, trailing_bytes, bad_content_header  from decoding the method or content header
errc decode_delivery(std::string_view in, std::uint32_t frame_max, delivery_view& out,
                     std::size_t& consumed) noexcept;

// Copies the body of a delivery decoded by decode_delivery() to `out`, which must have room for
// header.body_size octets. Works whether the body came in one frame or several.
void copy_body(const delivery_view& d, char* out) noexcept;

}  // namespace warren::codec
