#include "codec/field_table.h"

#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <memory>
#include <new>
#include <numeric>
#include <utility>

namespace warren::codec {

// Grants the decoder direct access to a table's entries, so that it can append without a
// lookup per entry and then drop repeated names in one pass.
struct detail_table_access {
  static std::vector<field_entry>& entries(field_table& t) noexcept { return t.entries_; }
};

// ---------------------------------------------------------------------------------------------
// Model.

field_table::field_table() = default;
field_table::~field_table() = default;
field_table::field_table(const field_table&) = default;
field_table::field_table(field_table&&) noexcept = default;
field_table& field_table::operator=(const field_table&) = default;
field_table& field_table::operator=(field_table&&) noexcept = default;

field_table::field_table(std::initializer_list<field_entry> entries) {
  for (const field_entry& e : entries) set(e.name, e.value);
}

void field_table::set(std::string name, field_value value) {
  for (field_entry& e : entries_) {
    if (e.name == name) {
      e.value = std::move(value);
      return;
    }
  }
  entries_.push_back(field_entry{std::move(name), std::move(value)});
}

const field_value* field_table::find(std::string_view name) const noexcept {
  for (const field_entry& e : entries_) {
    if (e.name == name) return &e.value;
  }
  return nullptr;
}

bool field_table::erase(std::string_view name) {
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const field_entry& e) { return e.name == name; });
  if (it == entries_.end()) return false;
  entries_.erase(it);
  return true;
}

bool field_table::operator==(const field_table& other) const {
  return entries_ == other.entries_;
}

std::optional<std::int64_t> field_value::as_integer() const noexcept {
  switch (v_.index()) {
    case idx_b:
      return *as_i8();
    case idx_B:
      return *as_u8();
    case idx_s:
      return *as_i16();
    case idx_u:
      return *as_u16();
    case idx_I:
      return *as_i32();
    case idx_i:
      return *as_u32();
    case idx_l:
      return *as_i64();
    case idx_L:
      return *as_i64_py();
    default:
      return std::nullopt;
  }
}

bool field_value::operator==(const field_value& other) const {
  if (v_.index() != other.v_.index()) return false;
  // Bit patterns, not IEEE equality: a value must equal its own round trip, NaN included.
  if (const float* f = as_f32()) {
    return std::bit_cast<std::uint32_t>(*f) == std::bit_cast<std::uint32_t>(*other.as_f32());
  }
  if (const double* d = as_f64()) {
    return std::bit_cast<std::uint64_t>(*d) == std::bit_cast<std::uint64_t>(*other.as_f64());
  }
  return v_ == other.v_;
}

// ---------------------------------------------------------------------------------------------
// Encoding.

namespace {

constexpr std::size_t max_long = 0xFFFFFFFFu;

errc encode_value(const field_value& v, writer& w) noexcept;

// Writes a 4-octet length, then what `body` writes, then patches the length in.
template <class Body>
errc length_prefixed(writer& w, Body&& body) noexcept {
  const std::size_t at = w.reserve(4);
  const std::size_t start = w.size();
  if (errc ec = body(); ec != errc::ok) return ec;
  const std::size_t n = w.size() - start;
  if (n > max_long) return errc::value_out_of_range;
  w.patch_u32(at, static_cast<std::uint32_t>(n));
  return errc::ok;
}

errc encode_entries(const field_table& t, writer& w) noexcept {
  for (const field_entry& e : t) {
    if (e.name.size() > 255) return errc::string_too_long;
    w.shortstr(e.name);
    w.u8(static_cast<std::uint8_t>(e.value.type()));
    if (errc ec = encode_value(e.value, w); ec != errc::ok) return ec;
  }
  return errc::ok;
}

errc encode_string(const std::string& s, writer& w) noexcept {
  if (s.size() > max_long) return errc::value_out_of_range;
  w.longstr(s);
  return errc::ok;
}

errc encode_value(const field_value& v, writer& w) noexcept {
  switch (v.type()) {
    case field_type::boolean:
      w.u8(*v.as_boolean() ? 1 : 0);
      break;
    case field_type::i8:
      w.i8(*v.as_i8());
      break;
    case field_type::u8:
      w.u8(*v.as_u8());
      break;
    case field_type::i16:
      w.i16(*v.as_i16());
      break;
    case field_type::u16:
      w.u16(*v.as_u16());
      break;
    case field_type::i32:
      w.i32(*v.as_i32());
      break;
    case field_type::u32:
      w.u32(*v.as_u32());
      break;
    case field_type::i64:
      w.i64(*v.as_i64());
      break;
    case field_type::i64_py:
      w.i64(*v.as_i64_py());
      break;
    case field_type::f32:
      w.f32(*v.as_f32());
      break;
    case field_type::f64:
      w.f64(*v.as_f64());
      break;
    case field_type::decimal:
      w.u8(v.as_decimal()->scale);
      w.i32(v.as_decimal()->value);
      break;
    case field_type::long_string:
      return encode_string(*v.as_long_string(), w);
    case field_type::bytes:
      return encode_string(*v.as_bytes(), w);
    case field_type::timestamp:
      w.u64(*v.as_timestamp());
      break;
    case field_type::void_value:
      break;
    case field_type::table:
      return length_prefixed(w, [&] { return encode_entries(*v.as_table(), w); });
    case field_type::array:
      return length_prefixed(w, [&] {
        for (const field_value& e : *v.as_array()) {
          w.u8(static_cast<std::uint8_t>(e.type()));
          if (errc ec = encode_value(e, w); ec != errc::ok) return ec;
        }
        return errc::ok;
      });
  }
  return errc::ok;
}

errc finish_encoding(errc ec, const writer& w) noexcept {
  if (ec != errc::ok) return ec;
  return w.overflowed() ? errc::buffer_too_small : errc::ok;
}

}  // namespace

errc encode_table_entries(const field_table& t, writer& w) noexcept {
  return finish_encoding(encode_entries(t, w), w);
}

errc encode_table(const field_table& t, writer& w) noexcept {
  return finish_encoding(length_prefixed(w, [&] { return encode_entries(t, w); }), w);
}

std::string encode_table(const field_table& t, errc* ec) {
  std::string out;
  writer w(out);
  const errc e = encode_table_entries(t, w);
  w.finish();
  if (e != errc::ok) out.clear();
  if (ec != nullptr) *ec = e;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Zero-copy access.

namespace {

constexpr int variable_width = -1;
constexpr int unknown_type = -2;

// Octets after the type letter for fixed-size letters; variable_width for those carrying a
// 4-octet length; unknown_type for letters RabbitMQ does not define.
constexpr int width_of(char type) noexcept {
  switch (type) {
    case field_type::void_value:
      return 0;
    case field_type::boolean:
    case field_type::i8:
    case field_type::u8:
      return 1;
    case field_type::i16:
    case field_type::u16:
      return 2;
    case field_type::i32:
    case field_type::u32:
    case field_type::f32:
      return 4;
    case field_type::decimal:
      return 5;
    case field_type::i64:
    case field_type::i64_py:
    case field_type::f64:
    case field_type::timestamp:
      return 8;
    case field_type::long_string:
    case field_type::bytes:
    case field_type::array:
    case field_type::table:
      return variable_width;
    default:
      return unknown_type;
  }
}

// width_of() for every octet: one load per value on the decode paths instead of a switch.
constexpr auto widths = [] {
  std::array<signed char, 256> w{};
  for (int c = 0; c < 256; ++c) w[c] = static_cast<signed char>(width_of(static_cast<char>(c)));
  return w;
}();

int value_width(char type) noexcept {
  return widths[static_cast<unsigned char>(type)];
}

[[gnu::always_inline]] inline errc read_value(reader& r, field_view& out) noexcept {
  std::uint8_t type;
  if (!r.read_u8(type)) return errc::truncated;
  out.type = static_cast<char>(type);
  const int width = widths[type];
  if (width >= 0) {
    return r.read_bytes(static_cast<std::size_t>(width), out.value) ? errc::ok : errc::truncated;
  }
  if (width == unknown_type) return errc::bad_field_type;
  return r.read_longstr(out.value) ? errc::ok : errc::truncated;
}

[[gnu::always_inline]] inline errc read_entry(reader& r, entry_view& out) noexcept {
  if (!r.read_shortstr(out.name)) return errc::truncated;
  return read_value(r, out.value);
}

}  // namespace

std::optional<std::int64_t> field_view::as_integer() const noexcept {
  // A reader rather than raw loads: a caller may build a view by hand with the wrong size.
  reader r(value);
  switch (type) {
    case field_type::i8:
      if (std::int8_t v; r.read_i8(v)) return v;
      break;
    case field_type::u8:
      if (std::uint8_t v; r.read_u8(v)) return v;
      break;
    case field_type::i16:
      if (std::int16_t v; r.read_i16(v)) return v;
      break;
    case field_type::u16:
      if (std::uint16_t v; r.read_u16(v)) return v;
      break;
    case field_type::i32:
      if (std::int32_t v; r.read_i32(v)) return v;
      break;
    case field_type::u32:
      if (std::uint32_t v; r.read_u32(v)) return v;
      break;
    case field_type::i64:
    case field_type::i64_py:
      if (std::int64_t v; r.read_i64(v)) return v;
      break;
  }
  return std::nullopt;
}

std::optional<bool> field_view::as_boolean() const noexcept {
  if (type != field_type::boolean || value.size() != 1) return std::nullopt;
  return value[0] != 0;
}

std::optional<std::string_view> field_view::as_string() const noexcept {
  if (type != field_type::long_string && type != field_type::bytes) return std::nullopt;
  return value;
}

// The entry is read into a local and copied out only on success (`out` is unchanged on false).
// Now that read_entry is inlined the local lives in registers; before, it went through the
// stack and the copy stalled on a failed store forward.
bool table_cursor::next(entry_view& out) noexcept {
  if (ec_ != errc::ok || r_.empty()) return false;
  entry_view e;
  ec_ = read_entry(r_, e);
  if (ec_ != errc::ok) return false;
  out = e;
  return true;
}

bool array_cursor::next(field_view& out) noexcept {
  if (ec_ != errc::ok || r_.empty()) return false;
  field_view v;
  ec_ = read_value(r_, v);
  if (ec_ != errc::ok) return false;
  out = v;
  return true;
}

bool find_in_table(table_view t, std::string_view name, field_view& out, errc& ec) noexcept {
  table_cursor c(t);
  for (entry_view e; c.next(e);) {
    if (e.name == name) {
      out = e.value;
      ec = errc::ok;
      return true;
    }
  }
  ec = c.error();
  return false;
}

// ---------------------------------------------------------------------------------------------
// Validating and decoding: check_values only checks and allocates nothing; build_* walk the same
// way in the same order (read the entry, count it, check the depth, descend), so that both
// report the same first error. tests/fuzz/table_fuzz.cc holds them to that.

namespace {

struct walk_budget {
  const table_limits& limits;
  std::size_t entries = 0;

  errc count() noexcept {
    return ++entries > limits.max_entries ? errc::table_too_large : errc::ok;
  }
};

bool is_container(char type) noexcept {
  return type == field_type::table || type == field_type::array;
}

// Validation only: allocates nothing. `depth` is the depth of the container `raw` belongs to.
// The values of a table (Named: each after its name) or of an array.
template <bool Named>
errc check_values(std::string_view raw, std::size_t depth, walk_budget& b) noexcept;

// widths, with the two container letters (A, F) told apart from the strings (S, x), for the
// validating walk: it descends into the former and only steps over the latter.
constexpr int container_width = -3;
constexpr auto walk_widths = [] {
  std::array<signed char, 256> w = widths;
  w[static_cast<unsigned char>(field_type::array)] = container_width;
  w[static_cast<unsigned char>(field_type::table)] = container_width;
  return w;
}();

// The values of one container (Named: a table, each value after its name; else an array), with
// the same checks as read_entry()/read_value() and walk_budget::count() in the same order, on
// raw pointers with the count in a register. Each value goes to the visitor once it has been
// checked and counted:
//   visit.leaf(name, letter, octets)      a fixed-size value, its width_of(letter) octets;
//   visit.string(name, letter, value)     S or x, the octets after the length;
//   visit.container(name, letter, raw, depth) -> errc
//                                         F or A at `depth` (already checked against
//                                         max_depth), raw its entries or elements; an error
//                                         stops the walk.
// `name` is empty for an array's elements. validate_table() walks with a visitor that only
// descends; decoded_table::decode() with one that records every value. Inline into each
// caller; recursion goes through the callers.
template <bool Named, class Visitor>
[[gnu::always_inline]] inline errc walk_values(std::string_view raw, std::size_t depth,
                                               walk_budget& b, Visitor& visit) {
  const char* p = raw.data();
  const char* const end = p + raw.size();
  std::size_t entries = b.entries;
  const std::size_t max_entries = b.limits.max_entries;
  while (p != end) {
    std::string_view name;
    if constexpr (Named) {
      // The name: its length octet is there (p != end); the name must be too.
      const std::size_t n = static_cast<std::uint8_t>(*p);
      if (static_cast<std::size_t>(end - p) - 1 < n) return errc::truncated;
      name = std::string_view(p + 1, n);
      p += 1 + n;
      if (p == end) return errc::truncated;  // no type letter
    }
    const auto type = static_cast<std::uint8_t>(*p++);
    const int width = walk_widths[type];
    const auto avail = static_cast<std::size_t>(end - p);
    if (width >= 0) {
      if (avail < static_cast<std::size_t>(width)) return errc::truncated;
      const char* const octets = p;
      p += width;
      if (++entries > max_entries) return errc::table_too_large;
      visit.leaf(name, static_cast<char>(type), octets);
      continue;
    }
    if (width == unknown_type) return errc::bad_field_type;
    if (avail < 4) return errc::truncated;
    const std::uint32_t n = reader::load_u32(p);
    if (avail - 4 < n) return errc::truncated;
    if (++entries > max_entries) return errc::table_too_large;
    const std::string_view value(p + 4, n);
    p += 4 + std::size_t{n};
    if (width == container_width) {
      // Checked before descending, so recursion never goes deeper than max_depth.
      if (depth + 1 > b.limits.max_depth) return errc::table_too_deep;
      b.entries = entries;
      if (errc ec = visit.container(name, static_cast<char>(type), value, depth + 1);
          ec != errc::ok) {
        return ec;
      }
      entries = b.entries;
    } else {
      visit.string(name, static_cast<char>(type), value);
    }
  }
  b.entries = entries;
  return errc::ok;
}

// The visitor of validate_table(): checks nested containers, records nothing.
struct check_only {
  walk_budget& b;

  void leaf(std::string_view, char, const char*) noexcept {}
  void string(std::string_view, char, std::string_view) noexcept {}
  errc container(std::string_view, char type, std::string_view raw, std::size_t depth) noexcept {
    return type == field_type::table ? check_values<true>(raw, depth, b)
                                     : check_values<false>(raw, depth, b);
  }
};

template <bool Named>
errc check_values(std::string_view raw, std::size_t depth, walk_budget& b) noexcept {
  check_only visit{b};
  return walk_values<Named>(raw, depth, b, visit);
}

// A value of a container at depth `depth - 1`; descends when it is a container itself.
// Checked before descending, so recursion never goes deeper than max_depth.
[[gnu::always_inline]] inline errc check_value(const field_view& v, std::size_t depth,
                                               walk_budget& b) noexcept {
  if (!is_container(v.type)) return errc::ok;
  if (depth > b.limits.max_depth) return errc::table_too_deep;
  return check_only{b}.container({}, v.type, v.value, depth);
}

// Building the model: the same walk, in the same order, so that it reports exactly
// check_values' errors.
errc build_value(const field_view& v, std::size_t depth, walk_budget& b, field_value& out);

// A value whose size read_value has already checked.
field_value leaf_value(const field_view& v) {
  reader r(v.value);
  switch (v.type) {
    case field_type::boolean:
      return field_value::boolean(v.value[0] != 0);
    case field_type::decimal: {
      std::uint8_t scale = 0;
      std::int32_t n = 0;
      r.read_u8(scale);
      r.read_i32(n);
      return field_value::decimal(scale, n);
    }
    case field_type::f32: {
      float f = 0;
      r.read_f32(f);
      return field_value::f32(f);
    }
    case field_type::f64: {
      double d = 0;
      r.read_f64(d);
      return field_value::f64(d);
    }
    case field_type::timestamp: {
      std::uint64_t t = 0;
      r.read_u64(t);
      return field_value::timestamp(t);
    }
    case field_type::long_string:
      return field_value::long_string(std::string(v.value));
    case field_type::bytes:
      return field_value::bytes(std::string(v.value));
    case field_type::void_value:
      return field_value::void_value();
  }
  // The integer letters; every other letter was handled above or rejected by read_value.
  const std::int64_t n = *v.as_integer();
  switch (v.type) {
    case field_type::i8:
      return field_value::i8(static_cast<std::int8_t>(n));
    case field_type::u8:
      return field_value::u8(static_cast<std::uint8_t>(n));
    case field_type::i16:
      return field_value::i16(static_cast<std::int16_t>(n));
    case field_type::u16:
      return field_value::u16(static_cast<std::uint16_t>(n));
    case field_type::i32:
      return field_value::i32(static_cast<std::int32_t>(n));
    case field_type::u32:
      return field_value::u32(static_cast<std::uint32_t>(n));
    case field_type::i64_py:
      return field_value::i64_py(n);
    default:
      return field_value::i64(n);
  }
}

// A first reservation for a container of `size` octets whose values take at least
// `min_value` octets each: one allocation for the usual small table or array, never more than
// 16 slots whatever the input claims (larger ones grow as usual). Counting the values exactly
// would take a second walk as slow as the decode itself (each value's position depends on
// the one before it).
std::size_t first_reservation(std::size_t size, std::size_t min_value) noexcept {
  return std::min<std::size_t>(size / min_value, 16);
}

// While a table has fewer kept entries than this, a repeated name is found by comparing with
// the entries so far, which allocates nothing; past it, by sorting once at the end, which
// keeps hostile input with many entries at O(n log n).
constexpr std::size_t linear_duplicate_check_max = 16;

bool has_name(const std::vector<field_entry>& entries, std::string_view name) noexcept {
  for (const field_entry& e : entries) {
    // Length and first octet before memcmp: names of a table rarely share both.
    if (e.name.size() == name.size() && (name.empty() || e.name[0] == name[0]) &&
        std::string_view(e.name) == name) {
      return true;
    }
  }
  return false;
}

// Keeps the first entry of each name, in order: sorts indices, for tables above
// linear_duplicate_check_max entries.
void drop_repeated_names(std::vector<field_entry>& entries) {
  if (entries.size() < 2) return;
  std::vector<std::size_t> order(entries.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return entries[a].name < entries[b].name; });
  std::vector<bool> drop(entries.size(), false);
  bool any = false;
  for (std::size_t i = 1; i < order.size(); ++i) {
    if (entries[order[i]].name == entries[order[i - 1]].name) drop[order[i]] = any = true;
  }
  if (!any) return;
  std::size_t kept = 0;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (drop[i]) continue;
    if (kept != i) entries[kept] = std::move(entries[i]);  // never self-move: it empties a string
    ++kept;
  }
  entries.erase(entries.begin() + static_cast<std::ptrdiff_t>(kept), entries.end());
}

errc build_table(std::string_view raw, std::size_t depth, walk_budget& b,
                 std::vector<field_entry>& out) {
  // An entry takes at least 3 octets: name length, a 1-octet name, type letter (V).
  out.reserve(first_reservation(raw.size(), 3));
  bool linear = true;
  reader r(raw);
  entry_view e;
  while (!r.empty()) {
    if (errc ec = read_entry(r, e); ec != errc::ok) return ec;
    if (errc ec = b.count(); ec != errc::ok) return ec;
    if (linear && out.size() == linear_duplicate_check_max) linear = false;
    if (linear && has_name(out, e.name)) {
      // A repeated name: checked and counted like the rest, then dropped.
      if (errc ec = check_value(e.value, depth + 1, b); ec != errc::ok) return ec;
      continue;
    }
    field_entry& slot = out.emplace_back();
    slot.name.assign(e.name);
    if (errc ec = build_value(e.value, depth + 1, b, slot.value); ec != errc::ok) return ec;
  }
  if (!linear) drop_repeated_names(out);
  return errc::ok;
}

errc build_array(std::string_view raw, std::size_t depth, walk_budget& b, field_array& out) {
  // An element takes at least 1 octet (V); most take 2 to 9.
  out.reserve(first_reservation(raw.size(), 2));
  reader r(raw);
  field_view v;
  while (!r.empty()) {
    if (errc ec = read_value(r, v); ec != errc::ok) return ec;
    if (errc ec = b.count(); ec != errc::ok) return ec;
    if (errc ec = build_value(v, depth + 1, b, out.emplace_back()); ec != errc::ok) return ec;
  }
  return errc::ok;
}

errc build_value(const field_view& v, std::size_t depth, walk_budget& b, field_value& out) {
  if (!is_container(v.type)) {
    out = leaf_value(v);
    return errc::ok;
  }
  if (depth > b.limits.max_depth) return errc::table_too_deep;
  if (v.type == field_type::table) {
    field_table t;
    const errc ec = build_table(v.value, depth, b, detail_table_access::entries(t));
    if (ec == errc::ok) out = field_value::table(std::move(t));
    return ec;
  }
  field_array a;
  const errc ec = build_array(v.value, depth, b, a);
  if (ec == errc::ok) out = field_value::array(std::move(a));
  return ec;
}

}  // namespace

errc validate_table(std::string_view raw, const table_limits& limits) noexcept {
  if (raw.size() > limits.max_bytes) return errc::table_too_large;
  walk_budget b{limits};
  check_only visit{b};
  return walk_values<true>(raw, 0, b, visit);
}

errc decode_table(table_view t, field_table& out, const table_limits& limits) {
  if (t.raw.size() > limits.max_bytes) return errc::table_too_large;
  walk_budget b{limits};
  field_table result;
  const errc ec = build_table(t.raw, 0, b, detail_table_access::entries(result));
  if (ec == errc::ok) out = std::move(result);
  return ec;
}

errc decode_value(field_view v, field_value& out, const table_limits& limits) {
  // The view may be hand-made rather than from a cursor: hold it to its letter's size.
  const int width = value_width(v.type);
  if (width == unknown_type) return errc::bad_field_type;
  if (width != variable_width && v.value.size() != static_cast<std::size_t>(width)) {
    return errc::truncated;
  }
  if (v.value.size() > limits.max_bytes) return errc::table_too_large;
  walk_budget b{limits};
  field_value result;
  const errc ec = build_value(v, 0, b, result);
  if (ec == errc::ok) out = std::move(result);
  return ec;
}

// ---------------------------------------------------------------------------------------------
// Decoding without copying.

// walk_values()'s visitor that only counts the values it is shown (and does not descend).
struct count_only {
  std::size_t n = 0;

  void leaf(std::string_view, char, const char*) noexcept { ++n; }
  void string(std::string_view, char, std::string_view) noexcept { ++n; }
  errc container(std::string_view, char, std::string_view, std::size_t) noexcept {
    ++n;
    return errc::ok;
  }
};

// decoded_table::decode: each container is walked twice by walk_values(), first to count its
// values (stopping where it finds the first error), then, once a block of that many entries is
// reserved in the storage, to fill them, descending into nested containers (whose blocks come
// after). The second walk makes the same checks in the same order, so it can only stop earlier
// (in a nested container) and never fills more than the first counted. Friend of
// decoded_value and decoded_table.
struct detail_decoded_access {
  decoded_table& t;
  walk_budget& b;

  // Fills the block [at, end) of t's storage in wire order. `base` is the storage's address,
  // read again after each nested container (whose block may have moved the storage).
  struct fill {
    detail_decoded_access& d;
    decoded_entry* base;
    std::uint32_t at;
    std::uint32_t end;

    // The next entry of the block; nullptr past its end, which the counting walk rules out.
    decoded_entry* next(std::string_view name, char type) noexcept {
      if (at == end) return nullptr;
      decoded_entry* e = base + at++;
      e->name = name;
      e->value.type_ = type;
      return e;
    }
    void leaf(std::string_view name, char type, const char* q) noexcept {
      if (decoded_entry* e = next(name, type)) set_leaf(e->value.u_, type, q);
    }
    void string(std::string_view name, char type, std::string_view value) noexcept {
      if (decoded_entry* e = next(name, type)) e->value.u_.str = value;
    }
    errc container(std::string_view name, char type, std::string_view raw, std::size_t depth) {
      const std::uint32_t slot = at;
      if (next(name, type) == nullptr) return errc::ok;
      decoded_value::range r{};
      const errc ec = type == field_type::table ? d.values<true>(raw, depth, r)
                                                : d.values<false>(raw, depth, r);
      base = d.t.storage_.get();
      base[slot].value.u_.container = r;
      return ec;
    }
  };

  // A value whose width_of(type) octets at q have been checked.
  static void set_leaf(decoded_value::storage& u, char type, const char* q) noexcept {
    switch (type) {
      case field_type::boolean:
        u.boolean = q[0] != 0;
        break;
      case field_type::i8:
        u.i8 = static_cast<std::int8_t>(q[0]);
        break;
      case field_type::u8:
        u.u8 = static_cast<std::uint8_t>(q[0]);
        break;
      case field_type::i16:
        u.i16 = static_cast<std::int16_t>(reader::load_u16(q));
        break;
      case field_type::u16:
        u.u16 = reader::load_u16(q);
        break;
      case field_type::i32:
        u.i32 = static_cast<std::int32_t>(reader::load_u32(q));
        break;
      case field_type::u32:
        u.u32 = reader::load_u32(q);
        break;
      case field_type::i64:
      case field_type::i64_py:
        u.i64 = static_cast<std::int64_t>(reader::load_u64(q));
        break;
      case field_type::f32:
        u.f32 = std::bit_cast<float>(reader::load_u32(q));
        break;
      case field_type::f64:
        u.f64 = std::bit_cast<double>(reader::load_u64(q));
        break;
      case field_type::decimal:
        u.dec = {static_cast<std::uint8_t>(q[0]),
                 static_cast<std::int32_t>(reader::load_u32(q + 1))};
        break;
      case field_type::timestamp:
        u.u64 = reader::load_u64(q);
        break;
      default:  // V: no octets
        u.u64 = 0;
        break;
    }
  }

  // `count` more entries at the end of the storage; returns the first one's index.
  std::uint32_t reserve(std::size_t count) {
    // Indices are 32 bits: more entries than that cannot pass max_entries' default, but a
    // caller may raise it.
    if (count > std::numeric_limits<std::uint32_t>::max() - t.size_) throw std::bad_alloc();
    const std::uint32_t first = t.size_;
    const std::uint32_t need = first + static_cast<std::uint32_t>(count);
    if (need > t.capacity_) {
      // Geometric growth; the entries of earlier decodes' larger tables are kept for the next.
      const std::uint32_t cap = std::max<std::uint32_t>({need, t.capacity_ + t.capacity_ / 2, 16});
      std::unique_ptr<decoded_entry[]> grown(new decoded_entry[cap]);
      std::copy(t.storage_.get(), t.storage_.get() + first, grown.get());
      t.storage_ = std::move(grown);
      t.capacity_ = cap;
    }
    t.size_ = need;
    return first;
  }

  // Counts, reserves and fills one container.
  template <bool Named>
  errc values(std::string_view raw, std::size_t depth, decoded_value::range& r) {
    walk_budget counting = b;
    count_only c;
    (void)walk_values<Named>(raw, depth, counting, c);
    r.first = reserve(c.n);
    r.count = static_cast<std::uint32_t>(c.n);
    fill f{*this, t.storage_.get(), r.first, r.first + r.count};
    return walk_values<Named>(raw, depth, b, f);
  }

  static field_value owning(const decoded_table& t, const decoded_value& v);
  static void owning_entries(const decoded_table& t, std::span<const decoded_entry> in,
                             std::vector<field_entry>& out);
};

std::optional<std::int64_t> decoded_value::as_integer() const noexcept {
  switch (type_) {
    case field_type::i8:
      return u_.i8;
    case field_type::u8:
      return u_.u8;
    case field_type::i16:
      return u_.i16;
    case field_type::u16:
      return u_.u16;
    case field_type::i32:
      return u_.i32;
    case field_type::u32:
      return u_.u32;
    case field_type::i64:
    case field_type::i64_py:
      return u_.i64;
    default:
      return std::nullopt;
  }
}

errc decoded_table::decode(table_view t, const table_limits& limits) {
  size_ = top_first_ = top_count_ = 0;
  if (t.raw.size() > limits.max_bytes) return errc::table_too_large;
  walk_budget b{limits};
  detail_decoded_access d{*this, b};
  decoded_value::range top{};
  if (const errc ec = d.values<true>(t.raw, 0, top); ec != errc::ok) {
    size_ = 0;
    return ec;
  }
  top_first_ = top.first;
  top_count_ = top.count;
  return errc::ok;
}

const decoded_value* decoded_table::find(std::string_view name) const noexcept {
  for (const decoded_entry& e : entries()) {
    if (e.name == name) return &e.value;
  }
  return nullptr;
}

field_value detail_decoded_access::owning(const decoded_table& t, const decoded_value& v) {
  switch (v.type()) {
    case field_type::boolean:
      return field_value::boolean(v.u_.boolean);
    case field_type::i8:
      return field_value::i8(v.u_.i8);
    case field_type::u8:
      return field_value::u8(v.u_.u8);
    case field_type::i16:
      return field_value::i16(v.u_.i16);
    case field_type::u16:
      return field_value::u16(v.u_.u16);
    case field_type::i32:
      return field_value::i32(v.u_.i32);
    case field_type::u32:
      return field_value::u32(v.u_.u32);
    case field_type::i64:
      return field_value::i64(v.u_.i64);
    case field_type::i64_py:
      return field_value::i64_py(v.u_.i64);
    case field_type::f32:
      return field_value::f32(v.u_.f32);
    case field_type::f64:
      return field_value::f64(v.u_.f64);
    case field_type::decimal:
      return field_value::decimal(v.u_.dec);
    case field_type::timestamp:
      return field_value::timestamp(v.u_.u64);
    case field_type::long_string:
      return field_value::long_string(std::string(v.u_.str));
    case field_type::bytes:
      return field_value::bytes(std::string(v.u_.str));
    case field_type::table: {
      field_table nested;
      owning_entries(t, t.entries(v), detail_table_access::entries(nested));
      return field_value::table(std::move(nested));
    }
    case field_type::array: {
      field_array elements;
      elements.reserve(t.elements(v).size());
      for (const decoded_entry& e : t.elements(v)) elements.push_back(owning(t, e.value));
      return field_value::array(std::move(elements));
    }
    default:
      return field_value::void_value();
  }
}

// A table's entries into the model, keeping the first value of a repeated name as decode_table
// does (compared linearly while there are few, sorted once past linear_duplicate_check_max).
void detail_decoded_access::owning_entries(const decoded_table& t,
                                           std::span<const decoded_entry> in,
                                           std::vector<field_entry>& out) {
  out.reserve(in.size());
  bool linear = true;
  for (const decoded_entry& e : in) {
    if (linear && out.size() == linear_duplicate_check_max) linear = false;
    if (linear && has_name(out, e.name)) continue;
    out.push_back(field_entry{std::string(e.name), owning(t, e.value)});
  }
  if (!linear) drop_repeated_names(out);
}

field_table decoded_table::to_field_table() const {
  field_table result;
  detail_decoded_access::owning_entries(*this, entries(), detail_table_access::entries(result));
  return result;
}

}  // namespace warren::codec
