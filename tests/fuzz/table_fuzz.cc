// Fuzz target for codec/field_table: the input is a table's entries (no length prefix), as a
// content header's headers or a method's table argument would hand them over.
//
// Aborts when:
//   * validate_table and decode_table disagree (with the default and with tight limits);
//   * a decoded model does not re-encode, or its encoding does not decode to an equal model,
//     or re-encoding that model gives different bytes;
//   * the zero-copy path disagrees with the model: the cursor fails on a decodable table, or
//     find_in_table + decode_value give a value other than the model's for some name;
//   * decoded_table disagrees: another result than validate_table (default and tight limits),
//     not empty after an error, a copy other than decode_table's model, or a name or string
//     view outside the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec/field_table.h"

namespace {

using namespace warren::codec;

void require(bool ok) {
  if (!ok) std::abort();
}

void check_round_trip(const field_table& t) {
  errc ec = errc::ok;
  const std::string entries = encode_table(t, &ec);
  require(ec == errc::ok);
  field_table again;
  require(decode_table(table_view{entries}, again) == errc::ok);
  require(again == t);
  require(encode_table(again) == entries);

  // The length-prefixed form fits a buffer of exactly its size and no smaller.
  std::vector<char> buf(entries.size() + 4);
  writer exact(buf.data(), buf.size());
  require(encode_table(t, exact) == errc::ok && exact.size() == buf.size());
  writer short_by_one(buf.data(), buf.size() - 1);
  require(encode_table(t, short_by_one) == errc::buffer_too_small);
}

void check_zero_copy_path(std::string_view raw, const field_table& t) {
  table_cursor c(table_view{raw});
  std::size_t seen = 0;
  for (entry_view e; c.next(e);) ++seen;
  require(c.error() == errc::ok && seen >= t.size());
  for (const field_entry& e : t) {
    field_view v;
    errc ec = errc::ok;
    require(find_in_table(table_view{raw}, e.name, v, ec) && ec == errc::ok);
    field_value decoded;
    require(decode_value(v, decoded) == errc::ok);
    require(decoded == e.value);
  }
}

bool inside(std::string_view raw, std::string_view v) {
  return v.empty() || (v.data() >= raw.data() && v.data() + v.size() <= raw.data() + raw.size());
}

void check_views_inside(std::string_view raw, const decoded_table& t,
                        std::span<const decoded_entry> entries) {
  for (const decoded_entry& e : entries) {
    require(inside(raw, e.name));
    if (const std::string_view* s = e.value.as_long_string()) require(inside(raw, *s));
    if (const std::string_view* s = e.value.as_bytes()) require(inside(raw, *s));
    check_views_inside(raw, t, t.entries(e.value));
    check_views_inside(raw, t, t.elements(e.value));
  }
}

// One decoded_table for every input, as a receive loop would keep one: reuse must not leak
// anything from an earlier input into a later one.
decoded_table& reused() {
  static decoded_table t;
  return t;
}

void check_decoded_table(std::string_view raw, const table_limits& limits, errc expected,
                         const field_table* model) {
  decoded_table& t = reused();
  const errc ec = t.decode(table_view{raw}, limits);
  require(ec == expected);
  if (ec != errc::ok) {
    require(t.empty() && t.entries().empty());
    return;
  }
  check_views_inside(raw, t, t.entries());
  if (model != nullptr) require(t.to_field_table() == *model);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view raw(reinterpret_cast<const char*>(data), size);

  // Tight limits as well as the defaults, so that short inputs reach every limit.
  table_limits tight;
  tight.max_depth = 3;
  tight.max_entries = 32;
  tight.max_bytes = 512;
  field_table tight_model;
  const errc tight_ec = decode_table(table_view{raw}, tight_model, tight);
  require(validate_table(raw, tight) == tight_ec);
  check_decoded_table(raw, tight, tight_ec, tight_ec == errc::ok ? &tight_model : nullptr);

  field_table model;
  const errc ec = decode_table(table_view{raw}, model);
  require(validate_table(raw) == ec);
  check_decoded_table(raw, {}, ec, ec == errc::ok ? &model : nullptr);
  if (ec != errc::ok) return 0;

  check_round_trip(model);
  check_zero_copy_path(raw, model);
  return 0;
}
