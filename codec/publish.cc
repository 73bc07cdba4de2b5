#include "codec/publish.h"

#include <algorithm>
#include <cstring>

namespace warren::codec {
namespace {

// What a publish takes, computed once before anything is written. plan() and write_head() are
// always_inline because each has two callers and GCC would otherwise keep them out of line.
struct publish_plan {
  std::size_t method_payload = 0;
  std::size_t header_payload = 0;
  std::size_t chunk = 0;
  std::size_t body_frames = 0;
  errc status = errc::ok;

  // Every octet except the body itself: the method and header frames and each body frame's
  // header and end octet.
  std::size_t framing() const noexcept {
    return (2 + body_frames) * frame_overhead + method_payload + header_payload;
  }
};

[[gnu::always_inline]] inline publish_plan plan(const basic_publish& m, const basic_properties& p,
                                                std::size_t body_size,
                                                std::uint32_t frame_max) noexcept {
  publish_plan pl;
  if (frame_max != 0 && frame_max < frame_min_size) {
    // Checked first: max_body_chunk() below must be positive.
    pl.status = errc::value_out_of_range;
    return pl;
  }
  const detail::properties_size props = detail::measure(p);
  pl.method_payload = encoded_size(m);
  pl.header_payload = content_header_fixed_size + props.size;
  pl.status = props.status;
  if ((m.exchange.size() | m.routing_key.size()) > 255) pl.status = errc::string_too_long;
  pl.chunk = max_body_chunk(frame_max);
  pl.body_frames = static_cast<std::size_t>(body_frame_count(body_size, frame_max));
  return pl;
}

using detail::put_frame_end;

// The method frame and the content-header frame, for a plan whose status is ok.
[[gnu::always_inline]] inline char* write_head(char* out, std::uint16_t channel,
                                               const basic_publish& m, const basic_properties& p,
                                               std::uint64_t body_size,
                                               const publish_plan& pl) noexcept {
  out =
      write_frame_header(out, frame_method, channel, static_cast<std::uint32_t>(pl.method_payload));
  writer w(out, pl.method_payload);
  // Cannot fail: the strings were checked and the room is exact.
  (void)encode(m, w);
  out = put_frame_end(out + pl.method_payload);
  out =
      write_frame_header(out, frame_header, channel, static_cast<std::uint32_t>(pl.header_payload));
  out = detail::put_u16(out, basic_class_id);
  out = detail::put_u16(out, 0);  // weight
  out = detail::put_u64(out, body_size);
  out = detail::write_properties(out, p);
  return put_frame_end(out);
}

// The iovec form of write_body_frames: the scratch octets [scratch, head_end) are already
// written; frame headers and end octets follow them in scratch, body chunks point into `body`.
// Returns the number of iovecs, which the caller has room for.
std::size_t gather_body_frames(char* scratch, char* head_end, iovec* iov, std::uint16_t channel,
                               std::string_view body, std::size_t chunk) noexcept {
  char* s = head_end;
  char* segment = scratch;  // start of the scratch octets not yet in an iovec
  iovec* v = iov;
  for (std::string_view rest = body; !rest.empty();) {
    const std::string_view piece = rest.substr(0, chunk);
    s = write_frame_header(s, frame_body, channel, static_cast<std::uint32_t>(piece.size()));
    *v++ = {segment, static_cast<std::size_t>(s - segment)};
    *v++ = {const_cast<char*>(piece.data()), piece.size()};
    segment = s;
    s = put_frame_end(s);
    rest.remove_prefix(piece.size());
  }
  *v++ = {segment, static_cast<std::size_t>(s - segment)};
  return static_cast<std::size_t>(v - iov);
}

// Takes the frame at `pos` into f and moves past it; returns unexpected_frame for a valid
// frame of another type. The common case, a whole frame of the expected type, is checked in
// one go; anything else goes through decode_frame() so that the errors are exactly its own.
// always_inline: GCC keeps it out of line otherwise (three callers), which costs about 5 ns of
// a 30 ns delivery.
[[gnu::always_inline]] inline errc take_frame(std::string_view in, std::size_t& pos,
                                              std::uint8_t type, std::uint64_t limit,
                                              std::uint32_t frame_max, frame_view& f) noexcept {
  const char* p = in.data() + pos;
  const std::size_t avail = in.size() - pos;
  if (avail >= frame_overhead) {
    const std::uint32_t size = reader::load_u32(p + 3);
    if (static_cast<std::uint8_t>(p[0]) == type && size + frame_overhead <= limit &&
        avail - frame_overhead >= size &&
        static_cast<std::uint8_t>(p[frame_header_size + size]) == frame_end) {
      f.type = type;
      f.channel = reader::load_u16(p + 1);
      f.payload = std::string_view(p + frame_header_size, size);
      pos += frame_overhead + size;
      return errc::ok;
    }
  }
  std::size_t n = 0;
  const errc e = decode_frame(in.substr(pos), frame_max, f, n);
  pos += n;
  if (e != errc::ok) return e;
  return f.type == type ? errc::ok : errc::unexpected_frame;
}

}  // namespace

std::size_t publish_size(const basic_publish& m, const basic_properties& p, std::size_t body_size,
                         std::uint32_t frame_max) noexcept {
  return plan(m, p, body_size, frame_max).framing() + body_size;
}

errc encode_publish(char* out, std::size_t cap, std::size_t& written, std::uint16_t channel,
                    const basic_publish& m, const basic_properties& p, std::string_view body,
                    std::uint32_t frame_max) noexcept {
  written = 0;
  const publish_plan pl = plan(m, p, body.size(), frame_max);
  if (pl.status != errc::ok) return pl.status;
  const std::size_t total = pl.framing() + body.size();
  if (cap < total) return errc::buffer_too_small;

  out = write_head(out, channel, m, p, body.size(), pl);
  detail::write_body_frames(out, channel, body, pl.chunk);
  written = total;
  return errc::ok;
}

errc encode_publish_iov(char* scratch, std::size_t scratch_cap, iovec* iov, std::size_t iov_cap,
                        std::size_t& iov_count, std::uint16_t channel, const basic_publish& m,
                        const basic_properties& p, std::string_view body,
                        std::uint32_t frame_max) noexcept {
  iov_count = 0;
  const publish_plan pl = plan(m, p, body.size(), frame_max);
  if (pl.status != errc::ok) return pl.status;
  if (scratch_cap < pl.framing() || iov_cap < 1 + 2 * pl.body_frames) {
    return errc::buffer_too_small;
  }

  char* s = write_head(scratch, channel, m, p, body.size(), pl);
  iov_count = gather_body_frames(scratch, s, iov, channel, body, pl.chunk);
  return errc::ok;
}

errc publish_template::assign(std::uint16_t channel, const basic_publish& m,
                              const basic_properties& p, std::uint32_t frame_max) {
  head_.clear();
  const publish_plan pl = plan(m, p, 0, frame_max);
  if (pl.status != errc::ok) return pl.status;
  head_.resize(pl.framing());
  write_head(head_.data(), channel, m, p, 0, pl);
  body_size_at_ = frame_overhead + pl.method_payload + frame_header_size + 4;
  chunk_ = pl.chunk;
  channel_ = channel;
  return errc::ok;
}

errc publish_template::encode_iov(char* scratch, std::size_t scratch_cap, iovec* iov,
                                  std::size_t iov_cap, std::size_t& iov_count,
                                  std::string_view body) const noexcept {
  iov_count = 0;
  if (head_.empty()) return errc::value_out_of_range;
  if (scratch_cap < scratch_size(body.size()) || iov_cap < 1 + 2 * body_frames(body.size())) {
    return errc::buffer_too_small;
  }
  std::memcpy(scratch, head_.data(), head_.size());
  detail::put_u64(scratch + body_size_at_, body.size());
  iov_count = gather_body_frames(scratch, scratch + head_.size(), iov, channel_, body, chunk_);
  return errc::ok;
}

errc decode_delivery(std::string_view in, std::uint32_t frame_max, delivery_view& out,
                     std::size_t& consumed) noexcept {
  consumed = 0;
  frame_view f;
  std::size_t pos = 0;
  const std::uint64_t limit = effective_frame_max(frame_max);
  if (const errc e = take_frame(in, pos, frame_method, limit, frame_max, f); e != errc::ok)
    return e;
  if (f.payload.size() < 4 || reader::load_u32(f.payload.data()) != basic_deliver::id) {
    return errc::unexpected_frame;
  }
  if (const errc e = decode(f.payload.substr(4), out.method); e != errc::ok) return e;
  out.channel = f.channel;

  if (const errc e = take_frame(in, pos, frame_header, limit, frame_max, f); e != errc::ok)
    return e;
  if (f.channel != out.channel) return errc::unexpected_frame;
  if (const errc e = decode(f.payload, out.header); e != errc::ok) return e;

  const std::size_t body_begin = pos;
  out.body = {};
  out.body_frame_count = 0;
  for (std::uint64_t left = out.header.body_size; left != 0;) {
    if (const errc e = take_frame(in, pos, frame_body, limit, frame_max, f); e != errc::ok)
      return e;
    if (f.channel != out.channel || f.payload.size() > left) {
      return errc::unexpected_frame;
    }
    out.body = out.body_frame_count++ == 0 ? f.payload : std::string_view{};
    left -= f.payload.size();
  }
  out.body_frames = in.substr(body_begin, pos - body_begin);
  consumed = pos;
  return errc::ok;
}

void copy_body(const delivery_view& d, char* out) noexcept {
  if (d.body_frame_count <= 1) {
    detail::put_bytes(out, d.body);
    return;
  }
  // The frames were validated by decode_delivery(): walk them without re-checking.
  const char* p = d.body_frames.data();
  const char* const end = p + d.body_frames.size();
  while (p != end) {
    const std::uint32_t size = reader::load_u32(p + 3);
    out = detail::put_bytes(out, std::string_view(p + frame_header_size, size));
    p += frame_overhead + size;
  }
}

}  // namespace warren::codec
