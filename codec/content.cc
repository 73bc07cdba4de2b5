#include "codec/content.h"

namespace warren::codec {

std::size_t encoded_size(const content_header& h) noexcept {
  return content_header_fixed_size + detail::measure(h.properties).size;
}

errc encode(const content_header& h, writer& w) noexcept {
  const detail::properties_size props = detail::measure(h.properties);
  if (props.status != errc::ok) return props.status;
  const std::size_t n = content_header_fixed_size + props.size;
  w.reserve(n);
  if (w.overflowed()) return errc::buffer_too_small;
  char* p = w.position() - n;
  p = detail::put_u16(p, h.class_id);
  p = detail::put_u16(p, h.weight);
  p = detail::put_u64(p, h.body_size);
  detail::write_properties(p, h.properties);
  return errc::ok;
}

errc decode(std::string_view payload, content_header& out) noexcept {
  reader r(payload);
  if (!r.read_u16(out.class_id) || !r.read_u16(out.weight) || !r.read_u64(out.body_size)) {
    return errc::truncated;
  }
  if (out.class_id != basic_class_id) return errc::bad_content_header;
  std::uint16_t flags = 0;
  if (!r.read_u16(flags)) return errc::truncated;
  if ((flags & 0x2) != 0) return errc::bad_content_header;
  if ((flags & 0x1) != 0) {
    // A continuation word may only announce properties basic does not have, so any set bit
    // (including its own continuation bit) is malformed.
    std::uint16_t more = 0;
    if (!r.read_u16(more)) return errc::truncated;
    if (more != 0) return errc::bad_content_header;
  }
  basic_properties& p = out.properties;
  p.flags = flags & basic_properties::all_flags;
  const auto read = detail::overloaded{
      [&](std::string_view& s) { return r.read_shortstr(s); },
      [&](table_view& t) { return r.read_table(t); },
      [&](std::uint8_t& v) { return r.read_u8(v); },
      [&](std::uint64_t& v) { return r.read_u64(v); },
  };
  // Absent members are reset one by one rather than by clearing the whole struct first, which
  // compilers turn into a slow `rep stos`.
  const bool complete = detail::for_each_property(
      p, [&](auto& member, bool present) { return present ? read(member) : (member = {}, true); });
  if (!complete) return errc::truncated;
  if (!r.empty()) return errc::bad_content_header;
  return errc::ok;
}

}  // namespace warren::codec
