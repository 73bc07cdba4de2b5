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
  return detail::decode_content_header(payload, out);
}

}  // namespace warren::codec
