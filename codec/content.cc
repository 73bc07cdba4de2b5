#include "codec/content.h"

namespace warren::codec {
namespace {

template <class... F>
struct overloaded : F... {
  using F::operator()...;
};

// The one place that lists the properties with their flags: calls v(member) for each property
// present in p.flags, in wire order, and stops at the first call that returns false. Members are
// told apart by type (shortstr string_view, table_view, octet, timestamp).
template <class Props, class Visitor>
bool for_each_present(Props& p, Visitor&& v) {
  using bp = basic_properties;
  const std::uint16_t f = p.flags;
  auto at = [&](std::uint16_t flag, auto& member) { return (f & flag) == 0 || v(member); };
  return at(bp::content_type_flag, p.content_type) &&
         at(bp::content_encoding_flag, p.content_encoding) && at(bp::headers_flag, p.headers) &&
         at(bp::delivery_mode_flag, p.delivery_mode) && at(bp::priority_flag, p.priority) &&
         at(bp::correlation_id_flag, p.correlation_id) && at(bp::reply_to_flag, p.reply_to) &&
         at(bp::expiration_flag, p.expiration) && at(bp::message_id_flag, p.message_id) &&
         at(bp::timestamp_flag, p.timestamp) && at(bp::type_flag, p.type) &&
         at(bp::user_id_flag, p.user_id) && at(bp::app_id_flag, p.app_id) &&
         at(bp::cluster_id_flag, p.cluster_id);
}

}  // namespace

namespace detail {

properties_size measure(const basic_properties& p) noexcept {
  std::size_t n = 2;
  // OR of the present shortstr lengths: above 255 iff one of them is.
  std::size_t str_bits = 0;
  bool table_fits = true;
  for_each_present(p, overloaded{
                          [&](std::string_view s) {
                            n += 1 + s.size();
                            str_bits |= s.size();
                            return true;
                          },
                          [&](table_view t) {
                            n += 4 + t.raw.size();
                            table_fits = t.raw.size() <= 0xFFFFFFFFu;
                            return true;
                          },
                          [&](std::uint8_t) { return (n += 1, true); },
                          [&](std::uint64_t) { return (n += 8, true); },
                      });
  errc status = errc::ok;
  if (str_bits > 255) {
    status = errc::string_too_long;
  } else if (!table_fits || (p.flags & ~basic_properties::all_flags) != 0) {
    status = errc::value_out_of_range;
  }
  return {n, status};
}

char* write_properties(char* out, const basic_properties& p) noexcept {
  out = put_u16(out, p.flags);
  for_each_present(p, overloaded{
                          [&](std::string_view s) { return (out = put_shortstr(out, s), true); },
                          [&](table_view t) { return (out = put_table(out, t), true); },
                          [&](std::uint8_t v) { return (out = put_u8(out, v), true); },
                          [&](std::uint64_t v) { return (out = put_u64(out, v), true); },
                      });
  return out;
}

}  // namespace detail

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
  out = content_header{};
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
  const bool complete =
      for_each_present(p, overloaded{
                              [&](std::string_view& s) { return r.read_shortstr(s); },
                              [&](table_view& t) { return r.read_table(t); },
                              [&](std::uint8_t& v) { return r.read_u8(v); },
                              [&](std::uint64_t& v) { return r.read_u64(v); },
                          });
  if (!complete) return errc::truncated;
  if (!r.empty()) return errc::bad_content_header;
  return errc::ok;
}

}  // namespace warren::codec
