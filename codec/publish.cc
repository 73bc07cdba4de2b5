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
                                                std::uint16_t flags, std::size_t body_size,
                                                std::uint32_t frame_max) noexcept {
  publish_plan pl;
  if (frame_max != 0 && frame_max < frame_min_size) {
    // Checked first: max_body_chunk() below must be positive.
    pl.status = errc::value_out_of_range;
    return pl;
  }
  const detail::properties_size props = detail::measure(p, flags);
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
                                               std::uint16_t flags, std::uint64_t body_size,
                                               const publish_plan& pl) noexcept {
  out =
      write_frame_header(out, frame_method, channel, static_cast<std::uint32_t>(pl.method_payload));
  // basic.publish's arguments written directly rather than through the generated encode(m, w),
  // whose writer and length checks plan() has already done (the golden-bytes tests and the
  // publish_template comparison hold this to the generated layout).
  out = detail::put_u32(out, basic_publish::id);
  out = detail::put_u16(out, m.ticket);
  out = detail::put_shortstr(out, m.exchange);
  out = detail::put_shortstr(out, m.routing_key);
  out = detail::put_u8(
      out, static_cast<std::uint8_t>((m.mandatory ? 0x01u : 0u) | (m.immediate ? 0x02u : 0u)));
  out = put_frame_end(out);
  out =
      write_frame_header(out, frame_header, channel, static_cast<std::uint32_t>(pl.header_payload));
  out = detail::put_u16(out, basic_class_id);
  out = detail::put_u16(out, 0);  // weight
  out = detail::put_u64(out, body_size);
  out = detail::write_properties(out, p, flags);
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
  return plan(m, p, p.flags, body_size, frame_max).framing() + body_size;
}

errc encode_publish(char* out, std::size_t cap, std::size_t& written, std::uint16_t channel,
                    const basic_publish& m, const basic_properties& p, std::string_view body,
                    std::uint32_t frame_max) noexcept {
  written = 0;
  const publish_plan pl = plan(m, p, p.flags, body.size(), frame_max);
  if (pl.status != errc::ok) return pl.status;
  const std::size_t total = pl.framing() + body.size();
  if (cap < total) return errc::buffer_too_small;

  out = write_head(out, channel, m, p, p.flags, body.size(), pl);
  detail::write_body_frames(out, channel, body, pl.chunk);
  written = total;
  return errc::ok;
}

errc encode_publish_iov(char* scratch, std::size_t scratch_cap, iovec* iov, std::size_t iov_cap,
                        std::size_t& iov_count, std::uint16_t channel, const basic_publish& m,
                        const basic_properties& p, std::string_view body,
                        std::uint32_t frame_max) noexcept {
  iov_count = 0;
  const publish_plan pl = plan(m, p, p.flags, body.size(), frame_max);
  if (pl.status != errc::ok) return pl.status;
  if (scratch_cap < pl.framing() || iov_cap < 1 + 2 * pl.body_frames) {
    return errc::buffer_too_small;
  }

  char* s = write_head(scratch, channel, m, p, p.flags, body.size(), pl);
  iov_count = gather_body_frames(scratch, s, iov, channel, body, pl.chunk);
  return errc::ok;
}

errc publish_template::assign(std::uint16_t channel, const basic_publish& m,
                              const basic_properties& p, std::uint32_t frame_max) {
  head_.clear();
  const publish_plan pl = plan(m, p, p.flags, 0, frame_max);
  if (pl.status != errc::ok) return pl.status;
  head_.resize(pl.framing());
  write_head(head_.data(), channel, m, p, p.flags, 0, pl);
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

namespace {

// decode_delivery() frame by frame through take_frame() and the generic decoders: the reference
// for every result other than ok. The fast path below hands anything it does not accept to this
// function, from the start, so that the errors (and their order) are exactly these.
[[gnu::noinline, gnu::cold]] errc decode_delivery_checked(std::string_view in,
                                                          std::uint32_t frame_max,
                                                          delivery_view& out,
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

// The frame at `p` (with `avail` octets from p to the end of the input) when it is whole, of type
// `type`, within `limit` (the effective frame-max) and ends with the frame-end octet; its
// payload size goes to `size`. Anything else is left to decode_delivery_checked().
[[gnu::always_inline]] inline bool whole_frame(const char* p, std::size_t avail, char type,
                                               std::uint64_t limit, std::uint32_t& size) noexcept {
  if (avail < frame_overhead || p[0] != type) return false;
  size = reader::load_u32(p + 3);
  return std::uint64_t{size} + frame_overhead <= limit && avail - frame_overhead >= size &&
         static_cast<std::uint8_t>(p[frame_header_size + size]) == frame_end;
}

// basic.deliver's arguments (after the method id) into `m`, for a payload whose bounds have been
// checked: consumer tag, delivery tag, redelivered, exchange, routing key, and nothing after.
// Two length checks cover the fixed fields; false for anything malformed.
[[gnu::always_inline]] inline bool read_deliver_args(const char* a, const char* e,
                                                     basic_deliver& m) noexcept {
  // Consumer tag, then at least the delivery tag, the bits octet and two length octets.
  std::size_t n = static_cast<std::uint8_t>(a[0]);
  if (static_cast<std::size_t>(e - a) < n + 12) return false;
  m.consumer_tag = std::string_view(a + 1, n);
  a += 1 + n;
  m.delivery_tag = reader::load_u64(a);
  m.redelivered = (static_cast<std::uint8_t>(a[8]) & 0x01u) != 0;
  a += 9;
  // Exchange, then at least the routing key's length octet.
  n = static_cast<std::uint8_t>(a[0]);
  if (static_cast<std::size_t>(e - a) < n + 2) return false;
  m.exchange = std::string_view(a + 1, n);
  a += 1 + n;
  // Routing key, ending the payload exactly.
  n = static_cast<std::uint8_t>(a[0]);
  if (static_cast<std::size_t>(e - a) != n + 1) return false;
  m.routing_key = std::string_view(a + 1, n);
  return true;
}

}  // namespace

// The common case in one pass: three (or more) whole frames of the right types on one channel, a
// well-formed basic.deliver, a well-formed content header and body frames that add up. Pointers
// and the frame checks are inline here rather than through take_frame() and the generic method
// decoder (which decodes into a local and copies it out): about a third of the time of a small
// delivery. Anything else, including need_more, goes to decode_delivery_checked().
errc decode_delivery(std::string_view in, std::uint32_t frame_max, delivery_view& out,
                     std::size_t& consumed) noexcept {
  consumed = 0;
  const std::uint64_t limit = effective_frame_max(frame_max);
  const char* const begin = in.data();
  const char* const end = begin + in.size();
  const char* p = begin;
  std::uint32_t size = 0;

  if (!whole_frame(p, in.size(), frame_method, limit, size) || size < 4 ||
      reader::load_u32(p + frame_header_size) != basic_deliver::id ||
      !read_deliver_args(p + frame_header_size + 4, p + frame_header_size + size, out.method)) {
    return decode_delivery_checked(in, frame_max, out, consumed);
  }
  const std::uint16_t channel = reader::load_u16(p + 1);
  out.channel = channel;
  p += frame_overhead + size;

  if (!whole_frame(p, static_cast<std::size_t>(end - p), frame_header, limit, size) ||
      reader::load_u16(p + 1) != channel ||
      detail::decode_content_header(std::string_view(p + frame_header_size, size), out.header) !=
          errc::ok) {
    return decode_delivery_checked(in, frame_max, out, consumed);
  }
  p += frame_overhead + size;

  const char* const body_begin = p;
  std::uint64_t left = out.header.body_size;
  std::uint64_t frames = 0;
  out.body = {};
  while (left != 0) {
    if (!whole_frame(p, static_cast<std::size_t>(end - p), frame_body, limit, size) ||
        reader::load_u16(p + 1) != channel || size > left) {
      return decode_delivery_checked(in, frame_max, out, consumed);
    }
    out.body = frames++ == 0 ? std::string_view(p + frame_header_size, size) : std::string_view{};
    left -= size;
    p += frame_overhead + size;
  }
  out.body_frame_count = frames;
  out.body_frames = std::string_view(body_begin, static_cast<std::size_t>(p - body_begin));
  consumed = static_cast<std::size_t>(p - begin);
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
