// AMQP field tables and arrays as RabbitMQ speaks them (type letters t b B s u I i l f d D S A T
// F V x; see PROTOCOL-NOTES), in three forms:
//
//   * an owning model (`field_value`, `field_table`, `field_array`) for building headers,
//     arguments and client properties, and for inspecting them at leisure;
//   * encoders writing that model to a `writer`;
//   * decoders reading untrusted bytes, bounded by `table_limits`: `decode_table` builds the
//     model, `decoded_table` decodes every value without copying (names and strings stay views
//     into the input, numbers are decoded, nested tables and arrays are entries of the same
//     object, whose storage is reused from one decode to the next), `validate_table` only
//     checks the structure, and `table_cursor`/`array_cursor`/`find_in_table` walk the bytes
//     without allocating, for hot paths that need one header.
//
// Thread rules: none of these types or functions share state; distinct objects may be used
// from distinct threads, one object from one thread at a time (like std::vector).
//
// Views: every std::string_view and table_view produced by a cursor, by `find_in_table`, by
// `field_view` or by `decoded_table` points into the bytes that were decoded and is valid
// exactly as long as they are. The owning model copies what it keeps and never refers to its
// input.
//
// Encoders and the non-allocating decoders are noexcept. `decode_table`, `decode_value` and
// `decoded_table::decode` allocate and can throw std::bad_alloc, nothing else; `table_limits`
// bounds what they allocate: at most max_entries values, plus (for the first two) copies of the
// names and strings in the input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "codec/error.h"
#include "codec/wire.h"

namespace warren::codec {

// RabbitMQ's field-value type letters. The 0-9-1 document's own table differs; it is not used.
namespace field_type {
inline constexpr char boolean = 't';
inline constexpr char i8 = 'b';
inline constexpr char u8 = 'B';
inline constexpr char i16 = 's';
inline constexpr char u16 = 'u';
inline constexpr char i32 = 'I';
inline constexpr char u32 = 'i';
inline constexpr char i64 = 'l';
// Not RabbitMQ's: py-amqp sends every int outside int32 as 'L', packed signed. RabbitMQ passes
// it through untouched, so a consumer must read it or lose the message. Decoded as signed 64.
inline constexpr char i64_py = 'L';
inline constexpr char f32 = 'f';
inline constexpr char f64 = 'd';
inline constexpr char decimal = 'D';
inline constexpr char long_string = 'S';
inline constexpr char array = 'A';
inline constexpr char timestamp = 'T';
inline constexpr char table = 'F';
inline constexpr char void_value = 'V';
inline constexpr char bytes = 'x';
}  // namespace field_type

// AMQP decimal: value / 10^scale.
struct decimal {
  std::uint8_t scale = 0;
  std::int32_t value = 0;
  bool operator==(const decimal&) const = default;
};

class field_value;
struct field_entry;

using field_array = std::vector<field_value>;

// A field table: (name, value) entries in insertion order, which is also wire order.
// Names are unique: set() replaces the value of an existing name in place. Lookups are linear
// (tables are small: headers, arguments, client properties).
class field_table {
 public:
  using value_type = field_entry;
  using const_iterator = std::vector<field_entry>::const_iterator;

  // Declared here and defaulted in the .cc: field_entry is incomplete at this point, and
  // implicit members would need it complete wherever field_value is used inline.
  field_table();
  ~field_table();
  field_table(const field_table&);
  field_table(field_table&&) noexcept;
  field_table& operator=(const field_table&);
  field_table& operator=(field_table&&) noexcept;
  // Entries are set() in order, so a repeated name keeps its first position and last value.
  field_table(std::initializer_list<field_entry> entries);

  // Adds `name` at the end, or replaces its value where it already is. Any name is accepted
  // here; encoding rejects names above 255 octets with errc::string_too_long.
  void set(std::string name, field_value value);
  // The value under `name`, or nullptr. The pointer is valid until the table is modified.
  const field_value* find(std::string_view name) const noexcept;
  // Removes `name`; returns whether it was present.
  bool erase(std::string_view name);

  std::size_t size() const noexcept;
  bool empty() const noexcept;
  const_iterator begin() const noexcept;
  const_iterator end() const noexcept;

  // Equal when both hold equal entries in the same order, i.e. when they encode identically.
  bool operator==(const field_table& other) const;

 private:
  friend struct detail_table_access;
  std::vector<field_entry> entries_;
};

// Exactly one value of one type letter. The letter is part of the value and survives a round
// trip unchanged: a long string (S) and a byte array (x) are distinct, as are a signed 64 (l)
// and a timestamp (T). A default-constructed value is void (V).
//
// Accessors return a pointer to the value when the letter matches and nullptr otherwise; the
// pointer is valid until this value is modified or destroyed.
class field_value {
 public:
  field_value() = default;

  static field_value boolean(bool v) { return field_value(std::in_place_index<idx_t>, v); }
  static field_value i8(std::int8_t v) { return field_value(std::in_place_index<idx_b>, v); }
  static field_value u8(std::uint8_t v) { return field_value(std::in_place_index<idx_B>, v); }
  static field_value i16(std::int16_t v) { return field_value(std::in_place_index<idx_s>, v); }
  static field_value u16(std::uint16_t v) { return field_value(std::in_place_index<idx_u>, v); }
  static field_value i32(std::int32_t v) { return field_value(std::in_place_index<idx_I>, v); }
  static field_value u32(std::uint32_t v) { return field_value(std::in_place_index<idx_i>, v); }
  static field_value i64(std::int64_t v) { return field_value(std::in_place_index<idx_l>, v); }
  static field_value i64_py(std::int64_t v) { return field_value(std::in_place_index<idx_L>, v); }
  static field_value f32(float v) { return field_value(std::in_place_index<idx_f>, v); }
  static field_value f64(double v) { return field_value(std::in_place_index<idx_d>, v); }
  static field_value decimal(codec::decimal v) {
    return field_value(std::in_place_index<idx_D>, v);
  }
  static field_value decimal(std::uint8_t scale, std::int32_t value) {
    return field_value(std::in_place_index<idx_D>, codec::decimal{scale, value});
  }
  // Raw octets, not necessarily UTF-8.
  static field_value long_string(std::string v) {
    return field_value(std::in_place_index<idx_S>, std::move(v));
  }
  static field_value array(field_array v) {
    return field_value(std::in_place_index<idx_A>, std::move(v));
  }
  // Seconds since the Unix epoch.
  static field_value timestamp(std::uint64_t seconds) {
    return field_value(std::in_place_index<idx_T>, seconds);
  }
  static field_value table(field_table v) {
    return field_value(std::in_place_index<idx_F>, std::move(v));
  }
  static field_value void_value() { return field_value(); }
  static field_value bytes(std::string v) {
    return field_value(std::in_place_index<idx_x>, std::move(v));
  }

  // The type letter, one of field_type::*.
  char type() const noexcept { return letters[v_.index()]; }

  const bool* as_boolean() const noexcept { return std::get_if<idx_t>(&v_); }
  const std::int8_t* as_i8() const noexcept { return std::get_if<idx_b>(&v_); }
  const std::uint8_t* as_u8() const noexcept { return std::get_if<idx_B>(&v_); }
  const std::int16_t* as_i16() const noexcept { return std::get_if<idx_s>(&v_); }
  const std::uint16_t* as_u16() const noexcept { return std::get_if<idx_u>(&v_); }
  const std::int32_t* as_i32() const noexcept { return std::get_if<idx_I>(&v_); }
  const std::uint32_t* as_u32() const noexcept { return std::get_if<idx_i>(&v_); }
  const std::int64_t* as_i64() const noexcept { return std::get_if<idx_l>(&v_); }
  const std::int64_t* as_i64_py() const noexcept { return std::get_if<idx_L>(&v_); }
  const float* as_f32() const noexcept { return std::get_if<idx_f>(&v_); }
  const double* as_f64() const noexcept { return std::get_if<idx_d>(&v_); }
  const codec::decimal* as_decimal() const noexcept { return std::get_if<idx_D>(&v_); }
  const std::string* as_long_string() const noexcept { return std::get_if<idx_S>(&v_); }
  const field_array* as_array() const noexcept { return std::get_if<idx_A>(&v_); }
  const std::uint64_t* as_timestamp() const noexcept { return std::get_if<idx_T>(&v_); }
  const field_table* as_table() const noexcept { return std::get_if<idx_F>(&v_); }
  const std::string* as_bytes() const noexcept { return std::get_if<idx_x>(&v_); }
  bool is_void() const noexcept { return v_.index() == idx_V; }

  // Any of the integer letters b B s u I i l L widened to int64, else nullopt. Peers disagree on
  // which integer letter to send (py-amqp reads b/B the other way round, and sends l for
  // unsigned 64), so readers of counts and flags should prefer this to the exact accessors.
  std::optional<std::int64_t> as_integer() const noexcept;

  // Same letter and same value. Floats compare by bit pattern, as the wire does: NaN equals an
  // identical NaN, and -0.0 differs from 0.0.
  bool operator==(const field_value& other) const;

 private:
  // Variant index order; `letters` maps each index to its type letter.
  enum : std::size_t {
    idx_V,
    idx_t,
    idx_b,
    idx_B,
    idx_s,
    idx_u,
    idx_I,
    idx_i,
    idx_l,
    idx_f,
    idx_d,
    idx_D,
    idx_S,
    idx_A,
    idx_T,
    idx_F,
    idx_x,
    idx_L,
  };
  static constexpr char letters[] = "VtbBsuIilfdDSATFxL";

  template <std::size_t I, class T>
  field_value(std::in_place_index_t<I> i, T&& v) : v_(i, std::forward<T>(v)) {}

  // S and x both hold std::string, l and L both std::int64_t; told apart by index only.
  std::variant<std::monostate, bool, std::int8_t, std::uint8_t, std::int16_t, std::uint16_t,
               std::int32_t, std::uint32_t, std::int64_t, float, double, codec::decimal,
               std::string, field_array, std::uint64_t, field_table, std::string, std::int64_t>
      v_;
};

struct field_entry {
  std::string name;
  field_value value;
  bool operator==(const field_entry&) const = default;
};

// ---------------------------------------------------------------------------------------------
// Encoding.

// Writes the table's entries (name shortstr, type letter, value) without the 4-octet length
// prefix: exactly the octets a table_view holds, and the body of an AMQPLAIN response.
// Returns errc::ok, or:
//   errc::string_too_long     a name (at any depth) above 255 octets; stops at once;
//   errc::value_out_of_range  a string, array or nested table of 2^32 octets or more;
//   errc::buffer_too_small    a fixed-buffer writer overflowed (its contents are then garbage).
// Recursion depth equals the model's nesting depth.
errc encode_table_entries(const field_table& t, writer& w) noexcept;

// Writes the table as a table-typed argument: 4-octet length, then the entries. Errors as for
// encode_table_entries, and errc::value_out_of_range when the entries reach 2^32 octets.
errc encode_table(const field_table& t, writer& w) noexcept;

// Convenience for tables built in code: the entries WITHOUT the length prefix, i.e. the bytes
// for `table_view{result}`. On an encoding error (see encode_table_entries) the result is
// empty and *ec, when given, says why; *ec is errc::ok otherwise. Throws std::bad_alloc only.
std::string encode_table(const field_table& t, errc* ec = nullptr);

// ---------------------------------------------------------------------------------------------
// Decoding untrusted bytes.

// Bounds on hostile input, checked before the input can make the decoder recurse or allocate.
struct table_limits {
  // The top-level table is depth 0; a table or array nested in a value at depth d is at
  // depth d + 1. A container deeper than max_depth gives errc::table_too_deep. Decoding
  // recurses once per level, so this also bounds stack use.
  std::size_t max_depth = 16;
  // Table entries plus array elements, summed over every level, including the containers.
  std::size_t max_entries = 65536;
  // Size of the top-level entries (the table_view); nested ones are inside it.
  std::size_t max_bytes = std::size_t{16} << 20;
};

// Checks that `raw` (table entries without the length prefix) is a well-formed table within
// `limits`, without allocating. Returns errc::ok, or the first of, in wire order:
//   errc::truncated        a name, value or length runs past the end of its container;
//   errc::bad_field_type   a type letter not in field_type;
//   errc::table_too_deep   nesting above limits.max_depth;
//   errc::table_too_large  raw.size() above limits.max_bytes (checked first), or more than
//                          limits.max_entries entries and elements in total.
// It returns exactly what decode_table returns for the same input and limits.
errc validate_table(std::string_view raw, const table_limits& limits = {}) noexcept;

// Decodes the entries in `t` into `out`, with the errors of validate_table. On success `out`
// is replaced; on error it is left unchanged. A name repeated within one table keeps its first
// value (as RabbitMQ's own lookup does); later ones are checked, counted and dropped.
errc decode_table(table_view t, field_table& out, const table_limits& limits = {});

// ---------------------------------------------------------------------------------------------
// Zero-copy access.

// One value as found on the wire. `value` holds the octets after the type letter, except that
// S, x, A and F leave out their 4-octet length: a string's bytes, an array's elements, a
// table's entries (use `table_view{value}`). Fixed-size values are their big-endian octets;
// V is empty. A view from a cursor has the right size for its letter, but a nested table or
// array has not been checked yet.
struct field_view {
  char type = field_type::void_value;
  std::string_view value;

  // b B s u I i l L widened to int64; nullopt for any other letter.
  std::optional<std::int64_t> as_integer() const noexcept;
  // t as bool; nullopt for any other letter.
  std::optional<bool> as_boolean() const noexcept;
  // S or x bytes; nullopt for any other letter.
  std::optional<std::string_view> as_string() const noexcept;
};

// Decodes one value (with everything nested in it) into the model. The value counts as
// depth 0 for `limits`. Errors as for decode_table; `out` is unchanged on error.
errc decode_value(field_view v, field_value& out, const table_limits& limits = {});

struct entry_view {
  std::string_view name;
  field_view value;
};

// Walks the top level of a table's entries, one at a time, without allocating. Only the entry
// being read is checked, so a caller that stops early never pays for the rest. Usage:
//   table_cursor c(t);
//   for (entry_view e; c.next(e);) { ... }
//   if (c.error() != errc::ok) { ... }
class table_cursor {
 public:
  explicit table_cursor(table_view t) noexcept : r_(t.raw) {}
  // Reads the next entry into `out` and returns true; returns false at the end of the table
  // or on malformed input, after which it keeps returning false. `out` changes only on true.
  bool next(entry_view& out) noexcept;
  // errc::ok, errc::truncated or errc::bad_field_type.
  errc error() const noexcept { return ec_; }

 private:
  reader r_;
  errc ec_ = errc::ok;
};

// As table_cursor, for an array's elements (`field_view::value` of an A value).
class array_cursor {
 public:
  explicit array_cursor(std::string_view elements) noexcept : r_(elements) {}
  // As table_cursor::next.
  bool next(field_view& out) noexcept;
  errc error() const noexcept { return ec_; }

 private:
  reader r_;
  errc ec_ = errc::ok;
};

// Finds the first entry named `name` at the top level of `t`. Returns true and sets `out` when
// found; otherwise returns false, with `ec` errc::ok when the name is absent or the error of
// the malformed entry that stopped the search (errc::truncated, errc::bad_field_type).
bool find_in_table(table_view t, std::string_view name, field_view& out, errc& ec) noexcept;

// ---------------------------------------------------------------------------------------------
// Decoding without copying.

// One value as decoded by a decoded_table: numbers decoded, S and x viewing the input, and a
// nested table (F) or array (A) referring to entries held by the decoded_table that decoded it
// (read them with its entries(v) and elements(v)). A default-constructed value is void (V).
// Accessors are field_value's: a pointer to the value when the letter matches and nullptr
// otherwise, valid as long as this value is.
class decoded_value {
 public:
  decoded_value() noexcept = default;

  // The type letter, one of field_type::*.
  char type() const noexcept { return type_; }

  const bool* as_boolean() const noexcept { return get(field_type::boolean, u_.boolean); }
  const std::int8_t* as_i8() const noexcept { return get(field_type::i8, u_.i8); }
  const std::uint8_t* as_u8() const noexcept { return get(field_type::u8, u_.u8); }
  const std::int16_t* as_i16() const noexcept { return get(field_type::i16, u_.i16); }
  const std::uint16_t* as_u16() const noexcept { return get(field_type::u16, u_.u16); }
  const std::int32_t* as_i32() const noexcept { return get(field_type::i32, u_.i32); }
  const std::uint32_t* as_u32() const noexcept { return get(field_type::u32, u_.u32); }
  const std::int64_t* as_i64() const noexcept { return get(field_type::i64, u_.i64); }
  const std::int64_t* as_i64_py() const noexcept { return get(field_type::i64_py, u_.i64); }
  const float* as_f32() const noexcept { return get(field_type::f32, u_.f32); }
  const double* as_f64() const noexcept { return get(field_type::f64, u_.f64); }
  const codec::decimal* as_decimal() const noexcept { return get(field_type::decimal, u_.dec); }
  // Raw octets, viewing the decoded input.
  const std::string_view* as_long_string() const noexcept {
    return get(field_type::long_string, u_.str);
  }
  const std::uint64_t* as_timestamp() const noexcept { return get(field_type::timestamp, u_.u64); }
  const std::string_view* as_bytes() const noexcept { return get(field_type::bytes, u_.str); }
  bool is_table() const noexcept { return type_ == field_type::table; }
  bool is_array() const noexcept { return type_ == field_type::array; }
  bool is_void() const noexcept { return type_ == field_type::void_value; }

  // As field_value::as_integer: b B s u I i l L widened to int64, else nullopt.
  std::optional<std::int64_t> as_integer() const noexcept;

 private:
  friend class decoded_table;
  friend struct detail_decoded_access;

  template <class T>
  const T* get(char letter, const T& member) const noexcept {
    return type_ == letter ? &member : nullptr;
  }

  // The members of a union: the letter says which one was written. A container's entries are
  // [first, first + count) of its decoded_table's storage.
  struct range {
    std::uint32_t first;
    std::uint32_t count;
  };
  union storage {
    storage() noexcept : u64(0) {}
    bool boolean;
    std::int8_t i8;
    std::uint8_t u8;
    std::int16_t i16;
    std::uint16_t u16;
    std::int32_t i32;
    std::uint32_t u32;
    std::int64_t i64;   // l and L
    std::uint64_t u64;  // T
    float f32;
    double f64;
    codec::decimal dec;
    std::string_view str;  // S and x
    range container;       // F and A
  };

  char type_ = field_type::void_value;
  storage u_;
};

struct decoded_entry {
  std::string_view name;  // empty for an array's elements
  decoded_value value;
};

// A field table decoded without copying anything out of its input, in the manner of
// rabbitmq-c's amqp_decode_table into a recycled pool: names and S/x values are views into the
// decoded bytes (valid exactly as long as they are), numbers are decoded, and the entries of
// nested tables and arrays are held by this object too. Entries keep wire order, and a repeated
// name is kept as it came (find() returns the first, as decode_table keeps the first).
//
// Reuse one object for many decodes: its storage keeps its capacity, so a decode allocates
// only when a table is larger than any before it (bounded by table_limits::max_entries). A
// decoded_table is used by one thread at a time (like std::vector); it can be moved, not
// copied (copy what you keep with to_field_table()).
class decoded_table {
 public:
  decoded_table() = default;
  decoded_table(decoded_table&&) noexcept = default;
  decoded_table& operator=(decoded_table&&) noexcept = default;

  // Decodes the entries in `t`, replacing what the object held. Returns exactly what
  // decode_table() and validate_table() return for the same input and limits; on error the
  // object is empty. May throw std::bad_alloc, nothing else.
  errc decode(table_view t, const table_limits& limits = {});

  // The top-level entries, in wire order.
  std::span<const decoded_entry> entries() const noexcept {
    return span_of(top_first_, top_count_);
  }
  // The entries of a nested table `v` (F) held by this object; empty for any other value.
  std::span<const decoded_entry> entries(const decoded_value& v) const noexcept {
    return v.is_table() ? span_of(v.u_.container.first, v.u_.container.count)
                        : std::span<const decoded_entry>{};
  }
  // The elements of an array `v` (A) held by this object, names empty; empty for any other
  // value.
  std::span<const decoded_entry> elements(const decoded_value& v) const noexcept {
    return v.is_array() ? span_of(v.u_.container.first, v.u_.container.count)
                        : std::span<const decoded_entry>{};
  }

  // The value of the first top-level entry named `name`, or nullptr. Valid until the next
  // decode() (or the object's end).
  const decoded_value* find(std::string_view name) const noexcept;

  bool empty() const noexcept { return top_count_ == 0; }

  // An owning copy, exactly what decode_table() gives for the same input (a repeated name
  // keeps its first value). Throws std::bad_alloc only.
  field_table to_field_table() const;

 private:
  // [first, first + count) of the storage, or nothing when that is not inside what the last
  // decode filled (a value decoded by another object).
  std::span<const decoded_entry> span_of(std::uint32_t first, std::uint32_t count) const noexcept {
    if (first > size_ || count > size_ - first) return {};
    return {storage_.get() + first, count};
  }

  friend struct detail_decoded_access;
  // Every container's entries, each container's contiguous block reserved before it is filled
  // (a nested container's block after its parent's): [0, size_) of capacity_ entries, kept
  // from one decode to the next.
  std::unique_ptr<decoded_entry[]> storage_;
  std::uint32_t size_ = 0;
  std::uint32_t capacity_ = 0;
  std::uint32_t top_first_ = 0;
  std::uint32_t top_count_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Inline definitions that need field_entry complete.

inline std::size_t field_table::size() const noexcept {
  return entries_.size();
}
inline bool field_table::empty() const noexcept {
  return entries_.empty();
}
inline field_table::const_iterator field_table::begin() const noexcept {
  return entries_.begin();
}
inline field_table::const_iterator field_table::end() const noexcept {
  return entries_.end();
}

}  // namespace warren::codec
