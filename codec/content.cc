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
  // Every member is reset, then only the present ones are read. The resets are separate stores:
  // clearing the whole struct at once becomes a slow `rep stos`.
  p.content_type = {};
  p.content_encoding = {};
  p.headers = {};
  p.delivery_mode = 0;
  p.priority = 0;
  p.correlation_id = {};
  p.reply_to = {};
  p.expiration = {};
  p.message_id = {};
  p.timestamp = 0;
  p.type = {};
  p.user_id = {};
  p.app_id = {};
  p.cluster_id = {};
  p.flags = flags & basic_properties::all_flags;
  const bool complete =
      detail::for_each_present(p, p.flags,
                               detail::overloaded{
                                   [&](std::string_view& v) { return r.read_shortstr(v); },
                                   [&](table_view& v) { return r.read_table(v); },
                                   [&](std::uint8_t& v) { return r.read_u8(v); },
                                   [&](std::uint64_t& v) { return r.read_u64(v); },
                               });
  if (!complete) return errc::truncated;
  if (!r.empty()) return errc::bad_content_header;
  return errc::ok;
}

}  // namespace warren::codec
