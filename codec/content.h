// Content headers (frame type 2) and the 14 basic-class properties, plus body splitting.
//
// Payload: class-id (short) · weight (short) · body-size (longlong) · property flags (short,
// bit 15 = first property, bit 0 = another flags short follows) · present properties in flag
// order. All strings and the headers table are views: after decode() they point into the
// payload and live as long as it does; for encode() they point at the caller's memory, which
// must stay valid until encoding returns. Nothing here allocates or throws; all functions may be
// called from any thread.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>
#include <utility>

#include "codec/error.h"
#include "codec/frame.h"
#include "codec/methods.h"
#include "codec/wire.h"

namespace warren::codec {

inline constexpr std::uint16_t basic_class_id = 60;

// Members are in flag order. A property is on the wire iff its bit is set in `flags`; the
// setters set value and bit together. Members whose bit is clear are ignored by encode() and
// left default by decode().
struct basic_properties {
  static constexpr std::uint16_t content_type_flag = 1u << 15;
  static constexpr std::uint16_t content_encoding_flag = 1u << 14;
  static constexpr std::uint16_t headers_flag = 1u << 13;
  static constexpr std::uint16_t delivery_mode_flag = 1u << 12;
  static constexpr std::uint16_t priority_flag = 1u << 11;
  static constexpr std::uint16_t correlation_id_flag = 1u << 10;
  static constexpr std::uint16_t reply_to_flag = 1u << 9;
  static constexpr std::uint16_t expiration_flag = 1u << 8;
  static constexpr std::uint16_t message_id_flag = 1u << 7;
  static constexpr std::uint16_t timestamp_flag = 1u << 6;
  static constexpr std::uint16_t type_flag = 1u << 5;
  static constexpr std::uint16_t user_id_flag = 1u << 4;
  static constexpr std::uint16_t app_id_flag = 1u << 3;
  static constexpr std::uint16_t cluster_id_flag = 1u << 2;
  // Bits 1 and 0 are not properties (bit 0 is the continuation flag).
  static constexpr std::uint16_t all_flags = 0xFFFC;

  // delivery_mode values.
  static constexpr std::uint8_t transient = 1;
  static constexpr std::uint8_t persistent = 2;

  std::uint16_t flags = 0;
  std::string_view content_type;
  std::string_view content_encoding;
  table_view headers;  // entries only (no length prefix); parse with codec/field_table.h
  std::uint8_t delivery_mode = 0;
  std::uint8_t priority = 0;
  std::string_view correlation_id;
  std::string_view reply_to;
  std::string_view expiration;
  std::string_view message_id;
  std::uint64_t timestamp = 0;  // seconds since the epoch
  std::string_view type;
  std::string_view user_id;
  std::string_view app_id;
  std::string_view cluster_id;

  void set_content_type(std::string_view v) noexcept { set(content_type, v, content_type_flag); }
  void set_content_encoding(std::string_view v) noexcept {
    set(content_encoding, v, content_encoding_flag);
  }
  void set_headers(table_view v) noexcept { set(headers, v, headers_flag); }
  void set_delivery_mode(std::uint8_t v) noexcept { set(delivery_mode, v, delivery_mode_flag); }
  void set_priority(std::uint8_t v) noexcept { set(priority, v, priority_flag); }
  void set_correlation_id(std::string_view v) noexcept {
    set(correlation_id, v, correlation_id_flag);
  }
  void set_reply_to(std::string_view v) noexcept { set(reply_to, v, reply_to_flag); }
  void set_expiration(std::string_view v) noexcept { set(expiration, v, expiration_flag); }
  void set_message_id(std::string_view v) noexcept { set(message_id, v, message_id_flag); }
  void set_timestamp(std::uint64_t v) noexcept { set(timestamp, v, timestamp_flag); }
  void set_type(std::string_view v) noexcept { set(type, v, type_flag); }
  void set_user_id(std::string_view v) noexcept { set(user_id, v, user_id_flag); }
  void set_app_id(std::string_view v) noexcept { set(app_id, v, app_id_flag); }
  void set_cluster_id(std::string_view v) noexcept { set(cluster_id, v, cluster_id_flag); }

  bool has_content_type() const noexcept { return has(content_type_flag); }
  bool has_content_encoding() const noexcept { return has(content_encoding_flag); }
  bool has_headers() const noexcept { return has(headers_flag); }
  bool has_delivery_mode() const noexcept { return has(delivery_mode_flag); }
  bool has_priority() const noexcept { return has(priority_flag); }
  bool has_correlation_id() const noexcept { return has(correlation_id_flag); }
  bool has_reply_to() const noexcept { return has(reply_to_flag); }
  bool has_expiration() const noexcept { return has(expiration_flag); }
  bool has_message_id() const noexcept { return has(message_id_flag); }
  bool has_timestamp() const noexcept { return has(timestamp_flag); }
  bool has_type() const noexcept { return has(type_flag); }
  bool has_user_id() const noexcept { return has(user_id_flag); }
  bool has_app_id() const noexcept { return has(app_id_flag); }
  bool has_cluster_id() const noexcept { return has(cluster_id_flag); }

  bool operator==(const basic_properties&) const = default;

 private:
  template <class T, class V>
  void set(T& member, V v, std::uint16_t flag) noexcept {
    member = v;
    flags |= flag;
  }
  bool has(std::uint16_t flag) const noexcept { return (flags & flag) != 0; }
};

struct content_header {
  std::uint16_t class_id = basic_class_id;
  std::uint16_t weight = 0;
  std::uint64_t body_size = 0;
  basic_properties properties;

  bool operator==(const content_header&) const = default;
};

// Class, weight and body size before the flags word.
inline constexpr std::size_t content_header_fixed_size = 12;

namespace detail {
// Encoded size of the flags word plus the present properties, and whether they can be encoded:
// errc::string_too_long for a present shortstr above 255 octets, errc::value_out_of_range for a
// headers table of 4 GiB or more, or flags with bit 1 or 0 set. Encoders compute it once and
// then write without further checks.
struct properties_size {
  std::size_t size = 0;
  errc status = errc::ok;
};
[[gnu::always_inline]] inline properties_size measure(const basic_properties& p) noexcept;

// Writes the flags word and the present properties at `out`, which must have measure(p).size
// octets of room, for properties whose measure(p).status is ok. Returns the end position.
[[gnu::always_inline]] inline char* write_properties(char* out, const basic_properties& p) noexcept;
}  // namespace detail

// Encoded payload size of `h` (whether or not it can be encoded; see encode()).
std::size_t encoded_size(const content_header& h) noexcept;

// Appends the content-header payload (no frame header or end octet). Returns ok, or
// string_too_long / value_out_of_range as measure() reports, or buffer_too_small when a
// fixed-capacity writer has no room (the writer is then overflowed).
errc encode(const content_header& h, writer& w) noexcept;

// Decodes a content-header frame payload. On ok, `out` holds views into `payload`; on error
// `out` is unspecified. Returns:
//   truncated           the payload ends inside a field
//   bad_content_header  class-id not 60 (basic), flag bit 1 set, a continuation flags word
//                       that is not all zero (basic defines no 15th property), or octets left
//                       after the last present property
// The headers table is kept as a view after its length prefix has been bounds-checked; its
// entries are not parsed here.
errc decode(std::string_view payload, content_header& out) noexcept;

// Largest body chunk one body frame can carry under `frame_max` (0 = not negotiated yet, the
// pre-tune limit applies). frame_max must be 0 or at least frame_min_size.
constexpr std::uint32_t max_body_chunk(std::uint32_t frame_max) noexcept {
  return effective_frame_max(frame_max) - static_cast<std::uint32_t>(frame_overhead);
}

// Number of body frames for a body of `body_size` octets: the body is cut into chunks of
// max_body_chunk(frame_max), the last one shorter; an empty body has no body frame.
constexpr std::uint64_t body_frame_count(std::uint64_t body_size,
                                         std::uint32_t frame_max) noexcept {
  const std::uint64_t chunk = max_body_chunk(frame_max);
  // Most bodies fit one frame: skip the 64-bit division (tens of cycles) for them.
  if (body_size <= chunk) return body_size != 0 ? 1 : 0;
  return body_size / chunk + (body_size % chunk != 0 ? 1 : 0);
}

// always_inline so that the publish path compiles into one function with the property walk
// in it: GCC 12 keeps measure() and write_properties() out of line otherwise (about 8 ns of 44).
namespace detail {

template <class... F>
struct overloaded : F... {
  using F::operator()...;
};
// Clang 14 (the fuzz build) does not deduce aggregate template arguments without a guide.
template <class... F>
overloaded(F...) -> overloaded<F...>;

// The one place that maps flag bits to members: returns v(member) for the property of flag bit
// `bit`, 15 (content_type) down to 2 (cluster_id); members are told apart by type (shortstr
// string_view, table_view, octet, timestamp).
template <class Props, class Visitor>
[[gnu::always_inline]] inline bool visit_property(Props& p, int bit, Visitor& v) {
  switch (bit) {
    case 15:
      return v(p.content_type);
    case 14:
      return v(p.content_encoding);
    case 13:
      return v(p.headers);
    case 12:
      return v(p.delivery_mode);
    case 11:
      return v(p.priority);
    case 10:
      return v(p.correlation_id);
    case 9:
      return v(p.reply_to);
    case 8:
      return v(p.expiration);
    case 7:
      return v(p.message_id);
    case 6:
      return v(p.timestamp);
    case 5:
      return v(p.type);
    case 4:
      return v(p.user_id);
    case 3:
      return v(p.app_id);
    default:  // 2: for_each_present passes no other bit
      return v(p.cluster_id);
  }
}

// The properties of bits First down to First - sizeof...(I) + 1. A set bit is marked likely, so
// that GCC lays each property's code out in line after its test: otherwise it moves that code
// out of line, and every present property costs two taken jumps (there and back) instead of
// none, while an absent one costs one either way. With the groups below, a group that is
// walked at all has a property present. This layout took encode_publish of a 16-octet body with
// three properties from 20.6 to 16.8 ns.
template <int First, int... I, class Props, class Visitor>
[[gnu::always_inline]] inline bool for_each_present_in(std::integer_sequence<int, I...>, Props& p,
                                                       std::uint16_t flags, Visitor& v) {
  return (
      (__builtin_expect(((flags >> (First - I)) & 1) == 0, 0) || visit_property(p, First - I, v)) &&
      ...);
}

// v(member) for each property whose bit is set in `flags`, in wire order (bit 15 first),
// stopping at the first call that returns false; returns whether none did. Unrolled at compile
// time into bit tests, each followed by its member's code (the switch folds away): faster than
// a loop over the set bits with a jump table, which cost an indirect jump per property. The
// bits come in three groups, each skipped with one test when none of its bits is set: most
// messages carry a few properties from the first group (content type, encoding, headers,
// delivery mode) and nothing from the last (message id to cluster id).
template <class Props, class Visitor>
[[gnu::always_inline]] inline bool for_each_present(Props& p, std::uint16_t flags, Visitor&& v) {
  if ((flags & 0xF000) != 0 &&
      !for_each_present_in<15>(std::make_integer_sequence<int, 4>{}, p, flags, v)) {
    return false;
  }
  if ((flags & 0x0F00) != 0 &&
      !for_each_present_in<11>(std::make_integer_sequence<int, 4>{}, p, flags, v)) {
    return false;
  }
  return (flags & 0x00FC) == 0 ||
         for_each_present_in<7>(std::make_integer_sequence<int, 6>{}, p, flags, v);
}

[[gnu::always_inline]] inline properties_size measure(const basic_properties& p,
                                                      std::uint16_t flags) noexcept {
  std::size_t n = 2;
  // OR of the present shortstr lengths: above 255 iff one of them is; and of the headers size
  // shifted down 32 bits: non-zero iff it is 4 GiB or more. One test of each at the end.
  std::size_t str_bits = 0;
  std::size_t table_high = 0;
  for_each_present(p, flags,
                   overloaded{
                       [&](std::string_view s) WARREN_INLINE_LAMBDA {
                         n += 1 + s.size();
                         str_bits |= s.size();
                         return true;
                       },
                       [&](table_view t) WARREN_INLINE_LAMBDA {
                         n += 4 + t.raw.size();
                         table_high = t.raw.size() >> 32;
                         return true;
                       },
                       [&](std::uint8_t) WARREN_INLINE_LAMBDA { return (n += 1, true); },
                       [&](std::uint64_t) WARREN_INLINE_LAMBDA { return (n += 8, true); },
                   });
  errc status = errc::ok;
  if (str_bits > 255) {
    status = errc::string_too_long;
  } else if ((table_high | (flags & ~basic_properties::all_flags)) != 0) {
    status = errc::value_out_of_range;
  }
  return {n, status};
}

[[gnu::always_inline]] inline properties_size measure(const basic_properties& p) noexcept {
  return measure(p, p.flags);
}

// `flags` is p.flags, passed by the caller that has it in a register: every store through
// `out` may alias `p`, so reading p.flags here would load it again after the flags word.
[[gnu::always_inline]] inline char* write_properties(char* out, const basic_properties& p,
                                                     std::uint16_t flags) noexcept {
  out = put_u16(out, flags);
  for_each_present(
      p, flags,
      overloaded{
          [&](std::string_view s)
              WARREN_INLINE_LAMBDA { return (out = put_shortstr(out, s), true); },
          [&](table_view t) WARREN_INLINE_LAMBDA { return (out = put_table(out, t), true); },
          [&](std::uint8_t v) WARREN_INLINE_LAMBDA { return (out = put_u8(out, v), true); },
          [&](std::uint64_t v) WARREN_INLINE_LAMBDA { return (out = put_u64(out, v), true); },
      });
  return out;
}

[[gnu::always_inline]] inline char* write_properties(char* out,
                                                     const basic_properties& p) noexcept {
  return write_properties(out, p, p.flags);
}

// Sets the 16 octets of a string_view or table_view member to zero (an empty view) with one
// vector store where the target has them: resetting the 12 view members of basic_properties
// member by member took two 8-octet stores each, and a memset of the whole range becomes a slow
// `rep stos`.
template <class View>
[[gnu::always_inline]] inline void clear_view(View& v) noexcept {
  static_assert(sizeof(View) == 16 && std::is_trivially_copyable_v<View>);
  using octets16 = char __attribute__((vector_size(16)));
  const octets16 zero{};
  std::memcpy(static_cast<void*>(&v), &zero, 16);
}

// decode(payload, content_header&), inline so that decode_delivery() has it in its own body;
// see decode() for the contract.
[[gnu::always_inline]] inline errc decode_content_header(std::string_view payload,
                                                         content_header& out) noexcept {
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
  // Every member is reset, then only the present ones are read.
  clear_view(p.content_type);
  clear_view(p.content_encoding);
  clear_view(p.headers);
  p.delivery_mode = 0;
  p.priority = 0;
  clear_view(p.correlation_id);
  clear_view(p.reply_to);
  clear_view(p.expiration);
  clear_view(p.message_id);
  p.timestamp = 0;
  clear_view(p.type);
  clear_view(p.user_id);
  clear_view(p.app_id);
  clear_view(p.cluster_id);
  flags &= basic_properties::all_flags;
  p.flags = flags;
  const bool complete = for_each_present(
      p, flags,
      overloaded{
          [&](std::string_view& v) WARREN_INLINE_LAMBDA { return r.read_shortstr(v); },
          [&](table_view& v) WARREN_INLINE_LAMBDA { return r.read_table(v); },
          [&](std::uint8_t& v) WARREN_INLINE_LAMBDA { return r.read_u8(v); },
          [&](std::uint64_t& v) WARREN_INLINE_LAMBDA { return r.read_u64(v); },
      });
  if (!complete) return errc::truncated;
  if (!r.empty()) return errc::bad_content_header;
  return errc::ok;
}

}  // namespace detail

}  // namespace warren::codec
