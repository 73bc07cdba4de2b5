#include "codec/field_table.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>

namespace warren::codec {
namespace {

std::string octets(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s.push_back(static_cast<char>(b));
  return s;
}

// A table holding every type letter once, worked out by hand from PROTOCOL-NOTES: each entry
// is name (shortstr), type letter, value; integers big-endian.
const std::string& golden_entries() {
  static const std::string bytes = octets({
      2,        't',  '1',  't',  0x01,              // t1: boolean true
      1,        'b',  'b',  0xFE,                    // b: int8 -2
      1,        'B',  'B',  0xFE,                    // B: uint8 254
      1,        's',  's',  0xFF, 0x38,              // s: int16 -200
      1,        'u',  'u',  0xFF, 0x38,              // u: uint16 65336
      1,        'I',  'I',  0xFF, 0xFF, 0xFE, 0x0C,  // I: int32 -500
      1,        'i',  'i',  0x80, 0x00, 0x00, 0x01,  // i: uint32 2^31 + 1
      1,        'l',  'l',  0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
      0xFE,                                          // l: int64 -2
      1,        'f',  'f',  0x3F, 0xC0, 0x00, 0x00,  // f: float 1.5
      1,        'd',  'd',  0xC0, 0x04, 0,    0,    0,    0,    0,
      0,                                                        // d: double -2.5
      1,        'D',  'D',  0x02, 0x00, 0x00, 0x01, 0x3A,       // D: decimal scale 2, 314
      1,        'S',  'S',  0x00, 0x00, 0x00, 0x02, 'h',  'i',  // S: long string "hi"
      1,        'T',  'T',  0x00, 0x00, 0x00, 0x00, 0x65, 0x53, 0xF1,
      0x00,                                                            // T: timestamp 1700000000
      1,        'V',  'V',                                             // V: void, no value octets
      1,        'x',  'x',  0x00, 0x00, 0x00, 0x03, 0x00, 0xFF, 0x7F,  // x: byte array 00 FF 7F
      1,        'F',  'F',  0x00, 0x00, 0x00, 0x08,                    // F: nested table, 8 octets:
      /**/ 1,   'k',  'S',  0x00, 0x00, 0x00, 0x01, 'v',               //    k: long string "v"
      1,        'A',  'A',  0x00, 0x00, 0x00, 0x1A,                    // A: array, 26 octets:
      /**/ 'I', 0x00, 0x00, 0x00, 0x07,                                //    int32 7
      /**/ 'S', 0x00, 0x00, 0x00, 0x01, 'a',                           //    long string "a"
      /**/ 'V',                                                        //    void
      /**/ 't', 0x00,                                                  //    boolean false
      /**/ 'F', 0x00, 0x00, 0x00, 0x00,                                //    empty table
      /**/ 'A', 0x00, 0x00, 0x00, 0x02, 'b',  0x01,                    //    array [int8 1]
  });
  return bytes;
}

field_table golden_model() {
  return field_table{
      {"t1", field_value::boolean(true)},
      {"b", field_value::i8(-2)},
      {"B", field_value::u8(254)},
      {"s", field_value::i16(-200)},
      {"u", field_value::u16(65336)},
      {"I", field_value::i32(-500)},
      {"i", field_value::u32(0x80000001u)},
      {"l", field_value::i64(-2)},
      {"f", field_value::f32(1.5f)},
      {"d", field_value::f64(-2.5)},
      {"D", field_value::decimal(2, 314)},
      {"S", field_value::long_string("hi")},
      {"T", field_value::timestamp(1700000000)},
      {"V", field_value::void_value()},
      {"x", field_value::bytes(std::string("\x00\xFF\x7F", 3))},
      {"F", field_value::table(field_table{{"k", field_value::long_string("v")}})},
      {"A", field_value::array({
                field_value::i32(7),
                field_value::long_string("a"),
                field_value::void_value(),
                field_value::boolean(false),
                field_value::table({}),
                field_value::array({field_value::i8(1)}),
            })},
  };
}

// Input in a heap block of exactly its size, so that ASan reports any read past the end.
struct exact_buffer {
  explicit exact_buffer(std::string_view s) : data(new char[s.size() + 1]), size(s.size()) {
    if (!s.empty()) std::memcpy(data.get(), s.data(), s.size());
  }
  std::string_view view() const { return {data.get(), size}; }
  std::unique_ptr<char[]> data;
  std::size_t size;
};

std::string be32(std::uint32_t v) {
  return octets({static_cast<int>(v >> 24), static_cast<int>((v >> 16) & 0xFF),
                 static_cast<int>((v >> 8) & 0xFF), static_cast<int>(v & 0xFF)});
}

// `depth` tables nested one in another, each the only entry ("a") of its parent.
std::string nested_tables(std::size_t depth) {
  std::string s;
  for (std::size_t i = 0; i < depth; ++i) {
    s += octets({1, 'a', 'F'});
    s += be32(static_cast<std::uint32_t>(7 * (depth - i - 1)));
  }
  return s;
}

// The entry "a" holding `depth` arrays nested one in another.
std::string nested_arrays(std::size_t depth) {
  std::string s = octets({1, 'a'});
  for (std::size_t i = 0; i < depth; ++i) {
    s += 'A';
    s += be32(static_cast<std::uint32_t>(5 * (depth - i - 1)));
  }
  return s;
}

TEST(field_table_encode, writes_hand_worked_bytes_for_every_type_letter) {
  errc ec = errc::bad_field_type;
  EXPECT_EQ(encode_table(golden_model(), &ec), golden_entries());
  EXPECT_EQ(ec, errc::ok);
}

TEST(field_table_encode, length_prefixed_form_is_length_then_the_same_entries) {
  std::string out = "xy";
  writer w(out);
  ASSERT_EQ(encode_table(golden_model(), w), errc::ok);
  w.finish();
  EXPECT_EQ(out,
            "xy" + be32(static_cast<std::uint32_t>(golden_entries().size())) + golden_entries());
}

TEST(field_table_decode, hand_worked_bytes_give_the_expected_model) {
  field_table t;
  ASSERT_EQ(decode_table(table_view{golden_entries()}, t), errc::ok);
  EXPECT_EQ(t, golden_model());
  EXPECT_EQ(validate_table(golden_entries()), errc::ok);
}

TEST(field_table_decode, every_type_letter_survives_a_round_trip) {
  field_table t;
  ASSERT_EQ(decode_table(table_view{encode_table(golden_model())}, t), errc::ok);
  std::string letters;
  for (const field_entry& e : t) letters += e.value.type();
  EXPECT_EQ(letters, "tbBsuIilfdDSTVxFA");
  std::string in_array;
  for (const field_value& v : *t.find("A")->as_array()) in_array += v.type();
  EXPECT_EQ(in_array, "ISVtFA");
  EXPECT_EQ(encode_table(t), golden_entries());
}

TEST(field_table_decode, every_truncation_is_truncated_or_a_shorter_valid_table) {
  // Cutting exactly between two entries leaves a valid table of the first k entries;
  // anywhere else the decoder must report truncated.
  const field_table full = golden_model();
  std::set<std::size_t> boundaries;
  field_table prefix;
  boundaries.insert(0);
  for (const field_entry& e : full) {
    prefix.set(e.name, e.value);
    boundaries.insert(encode_table(prefix).size());
  }
  const std::string& golden = golden_entries();
  for (std::size_t n = 0; n < golden.size(); ++n) {
    exact_buffer in(std::string_view(golden).substr(0, n));
    field_table t;
    const errc ec = decode_table(table_view{in.view()}, t);
    EXPECT_EQ(validate_table(in.view()), ec) << "length " << n;
    if (boundaries.count(n) != 0) {
      ASSERT_EQ(ec, errc::ok) << "length " << n;
      EXPECT_EQ(encode_table(t), golden.substr(0, n));
    } else {
      EXPECT_EQ(ec, errc::truncated) << "length " << n;
    }
  }
}

TEST(field_table_decode, nested_length_beyond_its_parent_is_truncated) {
  // The nested table claims 9 octets but its parent has only 8 left.
  const std::string in = octets({1, 'F', 'F', 0, 0, 0, 9, 1, 'k', 'S', 0, 0, 0, 1, 'v'});
  field_table t;
  EXPECT_EQ(decode_table(table_view{in}, t), errc::truncated);
  EXPECT_EQ(validate_table(in), errc::truncated);
}

TEST(field_table_decode, depth_bomb_of_ten_thousand_tables_is_too_deep) {
  const std::string bomb = nested_tables(10000);
  field_table t;
  EXPECT_EQ(decode_table(table_view{bomb}, t), errc::table_too_deep);
  EXPECT_EQ(validate_table(bomb), errc::table_too_deep);
  EXPECT_TRUE(t.empty());
}

TEST(field_table_decode, depth_bomb_of_ten_thousand_arrays_is_too_deep) {
  const std::string bomb = nested_arrays(10000);
  field_table t;
  EXPECT_EQ(decode_table(table_view{bomb}, t), errc::table_too_deep);
  EXPECT_EQ(validate_table(bomb), errc::table_too_deep);
}

TEST(field_table_decode, nesting_up_to_max_depth_is_accepted_and_one_more_is_not) {
  table_limits limits;
  limits.max_depth = 3;
  field_table t;
  // The top-level table is depth 0, so nested_tables(n) puts its innermost table at depth n.
  EXPECT_EQ(decode_table(table_view{nested_tables(3)}, t, limits), errc::ok);
  EXPECT_EQ(decode_table(table_view{nested_tables(4)}, t, limits), errc::table_too_deep);
  EXPECT_EQ(validate_table(nested_arrays(3), limits), errc::ok);
  EXPECT_EQ(validate_table(nested_arrays(4), limits), errc::table_too_deep);
}

TEST(field_table_decode, hostile_length_is_truncated_not_read) {
  for (char letter : {'S', 'x', 'F', 'A'}) {
    exact_buffer in(octets({1, 'h', letter, 0xFF, 0xFF, 0xFF, 0xFF, 'a', 'b', 'c'}));
    field_table t;
    EXPECT_EQ(decode_table(table_view{in.view()}, t), errc::truncated) << letter;
    EXPECT_EQ(validate_table(in.view()), errc::truncated) << letter;
  }
}

// py-amqp writes ints outside int32 as 'L' (signed, 8 octets); RabbitMQ forwards them as is.
TEST(field_table_decode, reads_py_amqp_L_as_signed_64_and_keeps_the_letter) {
  const std::string in = octets({1, 'n', 'L', 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00});
  field_table t;
  ASSERT_EQ(decode_table(table_view{in}, t), errc::ok);
  const field_value* v = t.find("n");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->type(), 'L');
  ASSERT_NE(v->as_i64_py(), nullptr);
  EXPECT_EQ(*v->as_i64_py(), -(std::int64_t{1} << 40));
  EXPECT_EQ(v->as_integer(), -(std::int64_t{1} << 40));
  EXPECT_EQ(v->as_i64(), nullptr);
  EXPECT_NE(*v, field_value::i64(-(std::int64_t{1} << 40)));
  EXPECT_EQ(encode_table(t), in);

  field_view view;
  errc ec = errc::bad_field_type;
  ASSERT_TRUE(find_in_table(table_view{in}, "n", view, ec));
  EXPECT_EQ(view.as_integer(), -(std::int64_t{1} << 40));
}

TEST(field_table_decode, truncated_L_value_is_truncated) {
  const std::string in = octets({1, 'n', 'L', 0, 0, 0, 0, 0, 0, 1});
  field_table t;
  EXPECT_EQ(decode_table(table_view{in}, t), errc::truncated);
}

TEST(field_table_decode, unknown_type_letter_is_bad_field_type) {
  const std::string in_table = octets({1, 'k', 'Z', 0, 0});
  const std::string in_array = octets({1, 'k', 'A', 0, 0, 0, 2, 'V', 'Z'});
  field_table t;
  EXPECT_EQ(decode_table(table_view{in_table}, t), errc::bad_field_type);
  EXPECT_EQ(validate_table(in_table), errc::bad_field_type);
  EXPECT_EQ(decode_table(table_view{in_array}, t), errc::bad_field_type);
  EXPECT_EQ(validate_table(in_array), errc::bad_field_type);
}

TEST(field_table_decode, too_many_entries_in_total_is_too_large) {
  table_limits limits;
  limits.max_entries = 4;
  // Two entries at the top, one of them an array of two: four values in all.
  const std::string four = octets({1, 'a', 'V', 1, 'b', 'A', 0, 0, 0, 2, 'V', 'V'});
  const std::string five = octets({1, 'a', 'V', 1, 'b', 'A', 0, 0, 0, 3, 'V', 'V', 'V'});
  field_table t;
  EXPECT_EQ(decode_table(table_view{four}, t, limits), errc::ok);
  EXPECT_EQ(decode_table(table_view{five}, t, limits), errc::table_too_large);
  EXPECT_EQ(validate_table(five, limits), errc::table_too_large);
}

TEST(field_table_decode, input_above_max_bytes_is_too_large) {
  table_limits limits;
  limits.max_bytes = golden_entries().size() - 1;
  field_table t;
  EXPECT_EQ(decode_table(table_view{golden_entries()}, t, limits), errc::table_too_large);
  EXPECT_EQ(validate_table(golden_entries(), limits), errc::table_too_large);
}

TEST(field_table_decode, error_leaves_the_output_unchanged) {
  field_table t{{"keep", field_value::i32(1)}};
  EXPECT_EQ(decode_table(table_view{octets({1, 'k', 'Z'})}, t), errc::bad_field_type);
  EXPECT_EQ(t, (field_table{{"keep", field_value::i32(1)}}));
}

TEST(field_table_decode, repeated_name_keeps_its_first_value) {
  const std::string in =
      octets({1, 'a', 'b', 1, 1, 'z', 'V', 1, 'a', 'b', 2, 1, 'c', 'V', 1, 'a', 'V'});
  field_table t;
  ASSERT_EQ(decode_table(table_view{in}, t), errc::ok);
  EXPECT_EQ(t, (field_table{{"a", field_value::i8(1)},
                            {"z", field_value::void_value()},
                            {"c", field_value::void_value()}}));
}

TEST(field_table_decode, repeated_names_in_a_large_table_keep_first_values_in_order) {
  std::string in;
  for (int i = 0; i < 300; ++i) in += octets({1, 'a' + i % 26, 'i', 0, 0, 0, i});
  field_table t;
  ASSERT_EQ(decode_table(table_view{in}, t), errc::ok);
  ASSERT_EQ(t.size(), 26u);
  int i = 0;
  for (const field_entry& e : t) {
    EXPECT_EQ(e.name, std::string(1, static_cast<char>('a' + i)));
    EXPECT_EQ(*e.value.as_u32(), static_cast<std::uint32_t>(i));
    ++i;
  }
}

TEST(field_table_decode, repeated_names_are_dropped_alike_on_both_sides_of_sixteen_entries) {
  // Small tables find repeats by a linear scan, larger ones by sorting: same result.
  for (int n : {15, 16, 17, 18, 21, 40}) {
    std::string in;
    for (int i = 0; i < n; ++i) in += octets({1, 'a' + i % 20, 'B', i});
    field_table t;
    ASSERT_EQ(decode_table(table_view{in}, t), errc::ok) << n;
    ASSERT_EQ(t.size(), static_cast<std::size_t>(std::min(n, 20))) << n;
    int i = 0;
    for (const field_entry& e : t) {
      EXPECT_EQ(e.name, std::string(1, static_cast<char>('a' + i))) << n;
      EXPECT_EQ(*e.value.as_u8(), i) << n;
      ++i;
    }
  }
}

TEST(field_table_decode, dropped_repeats_are_still_checked_and_counted) {
  // The repeat of "a" holds a nested table with an unknown type letter.
  const std::string bad_nested = octets({1, 'a', 'V', 1, 'a', 'F', 0, 0, 0, 3, 1, 'x', 'Z'});
  field_table t;
  EXPECT_EQ(decode_table(table_view{bad_nested}, t), errc::bad_field_type);
  EXPECT_EQ(validate_table(bad_nested), errc::bad_field_type);

  // Three entries, two of them dropped, against a budget of two.
  const std::string three = octets({1, 'a', 'V', 1, 'a', 'V', 1, 'a', 'V'});
  table_limits limits;
  limits.max_entries = 2;
  EXPECT_EQ(decode_table(table_view{three}, t, limits), errc::table_too_large);
  EXPECT_EQ(validate_table(three, limits), errc::table_too_large);
}

TEST(field_table_decode, nan_and_negative_zero_survive_bit_exactly) {
  const float nan_f = std::bit_cast<float>(0x7FC00123u);
  const double nan_d = std::bit_cast<double>(0xFFF8000000000ABCull);
  const field_table model{{"nf", field_value::f32(nan_f)},
                          {"nd", field_value::f64(nan_d)},
                          {"zf", field_value::f32(-0.0f)},
                          {"zd", field_value::f64(-0.0)}};
  field_table t;
  ASSERT_EQ(decode_table(table_view{encode_table(model)}, t), errc::ok);
  EXPECT_EQ(std::bit_cast<std::uint32_t>(*t.find("nf")->as_f32()), 0x7FC00123u);
  EXPECT_EQ(std::bit_cast<std::uint64_t>(*t.find("nd")->as_f64()), 0xFFF8000000000ABCull);
  EXPECT_EQ(std::bit_cast<std::uint32_t>(*t.find("zf")->as_f32()), 0x80000000u);
  EXPECT_EQ(std::bit_cast<std::uint64_t>(*t.find("zd")->as_f64()), 0x8000000000000000ull);
  EXPECT_EQ(t, model);
}

TEST(field_value, floats_compare_by_bit_pattern) {
  EXPECT_NE(field_value::f64(0.0), field_value::f64(-0.0));
  EXPECT_NE(field_value::f32(0.0f), field_value::f32(-0.0f));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(field_value::f64(nan), field_value::f64(nan));
}

TEST(field_table_encode, empty_table_is_no_entries_and_a_zero_length) {
  EXPECT_EQ(encode_table(field_table{}), "");
  std::string out;
  writer w(out);
  ASSERT_EQ(encode_table(field_table{}, w), errc::ok);
  w.finish();
  EXPECT_EQ(out, octets({0, 0, 0, 0}));
  field_table t{{"old", field_value::void_value()}};
  EXPECT_EQ(decode_table(table_view{""}, t), errc::ok);
  EXPECT_TRUE(t.empty());
}

TEST(field_table_encode, name_of_255_octets_round_trips) {
  const std::string name(255, 'n');
  const field_table model{{name, field_value::boolean(true)}};
  errc ec = errc::bad_field_type;
  const std::string bytes = encode_table(model, &ec);
  ASSERT_EQ(ec, errc::ok);
  EXPECT_EQ(bytes, octets({255}) + name + octets({'t', 1}));
  field_table t;
  ASSERT_EQ(decode_table(table_view{bytes}, t), errc::ok);
  EXPECT_EQ(t, model);
}

TEST(field_table_encode, name_of_256_octets_is_string_too_long) {
  const field_table model{{std::string(256, 'n'), field_value::boolean(true)}};
  errc ec = errc::ok;
  EXPECT_EQ(encode_table(model, &ec), "");
  EXPECT_EQ(ec, errc::string_too_long);
  std::string out;
  writer w(out);
  EXPECT_EQ(encode_table(model, w), errc::string_too_long);
  const field_table nested{{"n", field_value::array({field_value::table(model)})}};
  EXPECT_EQ(encode_table_entries(nested, w), errc::string_too_long);
}

TEST(field_table_encode, fixed_buffer_too_small_is_buffer_too_small) {
  char buf[16];
  writer w(buf, sizeof buf);
  EXPECT_EQ(encode_table(golden_model(), w), errc::buffer_too_small);
  writer fits(buf, sizeof buf);
  EXPECT_EQ(encode_table(field_table{{"S", field_value::long_string("hi")}}, fits), errc::ok);
  EXPECT_EQ(std::string(buf, fits.size()), octets({0, 0, 0, 9, 1, 'S', 'S', 0, 0, 0, 2, 'h', 'i'}));
}

TEST(field_table, set_replaces_in_place_and_find_erase_work) {
  field_table t;
  t.set("a", field_value::i32(1));
  t.set("b", field_value::i32(2));
  t.set("a", field_value::long_string("x"));
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t.begin()->name, "a");
  EXPECT_EQ(*t.find("a")->as_long_string(), "x");
  EXPECT_EQ(t.find("c"), nullptr);
  EXPECT_TRUE(t.erase("a"));
  EXPECT_FALSE(t.erase("a"));
  EXPECT_EQ(t, (field_table{{"b", field_value::i32(2)}}));
}

TEST(field_table, equality_depends_on_order) {
  const field_table ab{{"a", field_value::void_value()}, {"b", field_value::void_value()}};
  const field_table ba{{"b", field_value::void_value()}, {"a", field_value::void_value()}};
  EXPECT_NE(ab, ba);
}

TEST(field_value, letters_that_share_a_cpp_type_stay_distinct) {
  EXPECT_NE(field_value::long_string("a"), field_value::bytes("a"));
  EXPECT_EQ(field_value::long_string("a").type(), 'S');
  EXPECT_EQ(field_value::bytes("a").type(), 'x');
  EXPECT_NE(field_value::i64(5), field_value::timestamp(5));
  EXPECT_EQ(field_value::timestamp(5).type(), 'T');
  EXPECT_EQ(field_value::bytes("a").as_long_string(), nullptr);
  EXPECT_EQ(field_value::timestamp(5).as_i64(), nullptr);
  EXPECT_EQ(field_value().type(), 'V');
  EXPECT_TRUE(field_value().is_void());
}

TEST(field_value, as_integer_widens_integer_letters_only) {
  EXPECT_EQ(field_value::i8(-3).as_integer(), -3);
  EXPECT_EQ(field_value::u8(200).as_integer(), 200);
  EXPECT_EQ(field_value::u16(65535).as_integer(), 65535);
  EXPECT_EQ(field_value::u32(0xFFFFFFFFu).as_integer(), 0xFFFFFFFFll);
  EXPECT_EQ(field_value::i64(std::numeric_limits<std::int64_t>::min()).as_integer(),
            std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(field_value::timestamp(1).as_integer(), std::nullopt);
  EXPECT_EQ(field_value::boolean(true).as_integer(), std::nullopt);
}

TEST(table_cursor, yields_entries_in_wire_order_with_value_views) {
  table_cursor c(table_view{golden_entries()});
  std::string names;
  std::string letters;
  entry_view s;
  entry_view nested;
  for (entry_view e; c.next(e);) {
    names += std::string(e.name) + ",";
    letters += e.value.type;
    if (e.name == "S") s = e;
    if (e.name == "F") nested = e;
  }
  EXPECT_EQ(c.error(), errc::ok);
  EXPECT_EQ(names, "t1,b,B,s,u,I,i,l,f,d,D,S,T,V,x,F,A,");
  EXPECT_EQ(letters, "tbBsuIilfdDSTVxFA");
  EXPECT_EQ(s.value.value, "hi");
  EXPECT_EQ(s.value.as_string(), "hi");
  // A nested table's view is its entries, ready for another cursor.
  table_cursor inner(table_view{nested.value.value});
  entry_view k;
  ASSERT_TRUE(inner.next(k));
  EXPECT_EQ(k.name, "k");
  EXPECT_EQ(k.value.as_string(), "v");
  EXPECT_FALSE(inner.next(k));
}

TEST(table_cursor, stops_with_error_on_malformed_entry_and_stays_stopped) {
  const std::string in = octets({1, 'a', 'V', 1, 'b', 'Q', 1, 'c', 'V'});
  table_cursor c(table_view{in});
  entry_view e;
  ASSERT_TRUE(c.next(e));
  EXPECT_FALSE(c.next(e));
  EXPECT_EQ(c.error(), errc::bad_field_type);
  EXPECT_FALSE(c.next(e));
  EXPECT_EQ(e.name, "a");
}

TEST(array_cursor, yields_elements_of_an_array_value) {
  field_view a;
  errc ec = errc::ok;
  ASSERT_TRUE(find_in_table(table_view{golden_entries()}, "A", a, ec));
  array_cursor c(a.value);
  std::string letters;
  for (field_view v; c.next(v);) letters += v.type;
  EXPECT_EQ(c.error(), errc::ok);
  EXPECT_EQ(letters, "ISVtFA");
}

TEST(find_in_table, finds_one_header_without_building_a_table) {
  field_view v;
  errc ec = errc::truncated;
  ASSERT_TRUE(find_in_table(table_view{golden_entries()}, "I", v, ec));
  EXPECT_EQ(ec, errc::ok);
  EXPECT_EQ(v.type, 'I');
  EXPECT_EQ(v.as_integer(), -500);
  ASSERT_TRUE(find_in_table(table_view{golden_entries()}, "t1", v, ec));
  EXPECT_EQ(v.as_boolean(), true);
  EXPECT_EQ(v.as_integer(), std::nullopt);
  EXPECT_FALSE(find_in_table(table_view{golden_entries()}, "missing", v, ec));
  EXPECT_EQ(ec, errc::ok);
}

TEST(find_in_table, reports_malformed_entry_before_the_name) {
  const std::string in = octets({1, 'a', 'I', 0, 0});
  field_view v;
  errc ec = errc::ok;
  EXPECT_FALSE(find_in_table(table_view{in}, "b", v, ec));
  EXPECT_EQ(ec, errc::truncated);
}

TEST(field_view, integer_letters_widen_from_the_wire) {
  EXPECT_EQ((field_view{'b', octets({0xFF})}.as_integer()), -1);
  EXPECT_EQ((field_view{'B', octets({0xFF})}.as_integer()), 255);
  EXPECT_EQ((field_view{'u', octets({0xFF, 0xFF})}.as_integer()), 65535);
  EXPECT_EQ((field_view{'i', octets({0xFF, 0xFF, 0xFF, 0xFF})}.as_integer()), 0xFFFFFFFFll);
  // A hand-made view shorter than its letter is not read past its end.
  EXPECT_EQ((field_view{'l', octets({0, 1})}.as_integer()), std::nullopt);
  EXPECT_EQ((field_view{'S', "abc"}.as_integer()), std::nullopt);
}

TEST(decode_value, decodes_a_found_value_with_limits) {
  field_view v;
  errc ec = errc::ok;
  ASSERT_TRUE(find_in_table(table_view{golden_entries()}, "A", v, ec));
  field_value out;
  ASSERT_EQ(decode_value(v, out), errc::ok);
  EXPECT_EQ(out, *golden_model().find("A"));
  table_limits shallow;
  shallow.max_depth = 0;
  EXPECT_EQ(decode_value(v, out, shallow), errc::table_too_deep);
}

TEST(decode_value, rejects_hand_made_view_of_wrong_size_or_letter) {
  field_value out = field_value::i32(9);
  EXPECT_EQ(decode_value(field_view{'t', ""}, out), errc::truncated);
  EXPECT_EQ(decode_value(field_view{'I', octets({0, 0, 0, 1, 2})}, out), errc::truncated);
  EXPECT_EQ(decode_value(field_view{'?', ""}, out), errc::bad_field_type);
  EXPECT_EQ(out, field_value::i32(9));
  ASSERT_EQ(decode_value(field_view{'I', octets({0, 0, 0, 1})}, out), errc::ok);
  EXPECT_EQ(out, field_value::i32(1));
}

// ---------------------------------------------------------------------------------------------
// decoded_table: every value decoded, nothing copied.

TEST(decoded_table, decodes_every_type_letter_to_what_decode_table_gives) {
  decoded_table t;
  ASSERT_EQ(t.decode(table_view{golden_entries()}), errc::ok);
  EXPECT_EQ(t.to_field_table(), golden_model());
  ASSERT_EQ(t.entries().size(), golden_model().size());
  std::string letters;
  for (const decoded_entry& e : t.entries()) letters += e.value.type();
  EXPECT_EQ(letters, "tbBsuIilfdDSTVxFA");
}

TEST(decoded_table, numbers_are_decoded_and_strings_view_the_input) {
  const std::string& in = golden_entries();
  decoded_table t;
  ASSERT_EQ(t.decode(table_view{in}), errc::ok);
  EXPECT_EQ(*t.find("t1")->as_boolean(), true);
  EXPECT_EQ(*t.find("b")->as_i8(), -2);
  EXPECT_EQ(*t.find("B")->as_u8(), 254);
  EXPECT_EQ(*t.find("s")->as_i16(), -200);
  EXPECT_EQ(*t.find("u")->as_u16(), 65336);
  EXPECT_EQ(*t.find("I")->as_i32(), -500);
  EXPECT_EQ(*t.find("i")->as_u32(), 0x80000001u);
  EXPECT_EQ(*t.find("l")->as_i64(), -2);
  EXPECT_EQ(*t.find("f")->as_f32(), 1.5f);
  EXPECT_EQ(*t.find("d")->as_f64(), -2.5);
  EXPECT_EQ(*t.find("D")->as_decimal(), (decimal{2, 314}));
  EXPECT_EQ(*t.find("T")->as_timestamp(), 1700000000u);
  EXPECT_TRUE(t.find("V")->is_void());
  EXPECT_EQ(t.find("I")->as_integer(), -500);
  EXPECT_EQ(t.find("S")->as_integer(), std::nullopt);
  // The wrong letter gives nullptr, as field_value's accessors do.
  EXPECT_EQ(t.find("I")->as_u32(), nullptr);
  EXPECT_EQ(t.find("S")->as_bytes(), nullptr);

  const std::string_view* hi = t.find("S")->as_long_string();
  ASSERT_NE(hi, nullptr);
  EXPECT_EQ(*hi, "hi");
  EXPECT_GE(hi->data(), in.data());
  EXPECT_LE(hi->data() + hi->size(), in.data() + in.size());
  EXPECT_EQ(*t.find("x")->as_bytes(), std::string_view("\x00\xFF\x7F", 3));
  const std::string_view name = t.entries().front().name;
  EXPECT_EQ(name, "t1");
  EXPECT_EQ(name.data(), in.data() + 1);
  EXPECT_EQ(t.find("missing"), nullptr);
}

TEST(decoded_table, nested_tables_and_arrays_are_read_through_the_object) {
  decoded_table t;
  ASSERT_EQ(t.decode(table_view{golden_entries()}), errc::ok);
  const decoded_value* f = t.find("F");
  ASSERT_NE(f, nullptr);
  ASSERT_TRUE(f->is_table());
  ASSERT_EQ(t.entries(*f).size(), 1u);
  EXPECT_EQ(t.entries(*f)[0].name, "k");
  EXPECT_EQ(*t.entries(*f)[0].value.as_long_string(), "v");
  EXPECT_TRUE(t.elements(*f).empty());

  const decoded_value* a = t.find("A");
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->is_array());
  EXPECT_TRUE(t.entries(*a).empty());
  const auto elements = t.elements(*a);
  ASSERT_EQ(elements.size(), 6u);
  std::string letters;
  for (const decoded_entry& e : elements) {
    EXPECT_TRUE(e.name.empty());
    letters += e.value.type();
  }
  EXPECT_EQ(letters, "ISVtFA");
  EXPECT_EQ(*elements[0].value.as_i32(), 7);
  EXPECT_TRUE(t.entries(elements[4].value).empty());
  ASSERT_EQ(t.elements(elements[5].value).size(), 1u);
  EXPECT_EQ(*t.elements(elements[5].value)[0].value.as_i8(), 1);

  // A leaf has no entries or elements.
  EXPECT_TRUE(t.entries(*t.find("I")).empty());
  EXPECT_TRUE(t.elements(*t.find("I")).empty());
}

TEST(decoded_table, a_container_of_another_object_out_of_range_gives_nothing) {
  decoded_table big;
  ASSERT_EQ(big.decode(table_view{golden_entries()}), errc::ok);
  decoded_table small;
  ASSERT_EQ(small.decode(table_view{octets({1, 'a', 'V'})}), errc::ok);
  // The array's range lies past the end of the small object's storage.
  EXPECT_TRUE(small.elements(*big.find("A")).empty());
}

TEST(decoded_table, a_second_decode_replaces_the_first) {
  decoded_table t;
  ASSERT_EQ(t.decode(table_view{golden_entries()}), errc::ok);
  const std::string small = octets({1, 'n', 'b', 5});
  ASSERT_EQ(t.decode(table_view{small}), errc::ok);
  ASSERT_EQ(t.entries().size(), 1u);
  EXPECT_EQ(*t.find("n")->as_i8(), 5);
  EXPECT_EQ(t.find("F"), nullptr);
  ASSERT_EQ(t.decode(table_view{""}), errc::ok);
  EXPECT_TRUE(t.empty());
}

TEST(decoded_table, every_truncation_gives_validate_tables_result_and_an_error_empties_it) {
  const std::string& golden = golden_entries();
  for (std::size_t n = 0; n < golden.size(); ++n) {
    exact_buffer in(std::string_view(golden).substr(0, n));
    decoded_table t;
    ASSERT_EQ(t.decode(table_view{golden}), errc::ok);
    const errc ec = t.decode(table_view{in.view()});
    EXPECT_EQ(ec, validate_table(in.view())) << "length " << n;
    if (ec != errc::ok) {
      EXPECT_TRUE(t.empty()) << "length " << n;
      continue;
    }
    field_table model;
    ASSERT_EQ(decode_table(table_view{in.view()}, model), errc::ok);
    EXPECT_EQ(t.to_field_table(), model) << "length " << n;
  }
}

TEST(decoded_table, limits_give_the_errors_of_validate_table) {
  decoded_table t;
  EXPECT_EQ(t.decode(table_view{nested_tables(10000)}), errc::table_too_deep);
  EXPECT_EQ(t.decode(table_view{nested_arrays(10000)}), errc::table_too_deep);
  table_limits depth;
  depth.max_depth = 3;
  EXPECT_EQ(t.decode(table_view{nested_tables(3)}, depth), errc::ok);
  EXPECT_EQ(t.decode(table_view{nested_tables(4)}, depth), errc::table_too_deep);

  table_limits entries;
  entries.max_entries = 4;
  EXPECT_EQ(t.decode(table_view{octets({1, 'a', 'V', 1, 'b', 'A', 0, 0, 0, 2, 'V', 'V'})}, entries),
            errc::ok);
  EXPECT_EQ(
      t.decode(table_view{octets({1, 'a', 'V', 1, 'b', 'A', 0, 0, 0, 3, 'V', 'V', 'V'})}, entries),
      errc::table_too_large);

  table_limits bytes;
  bytes.max_bytes = golden_entries().size() - 1;
  EXPECT_EQ(t.decode(table_view{golden_entries()}, bytes), errc::table_too_large);
  EXPECT_EQ(t.decode(table_view{octets({1, 'k', 'Z', 0, 0})}), errc::bad_field_type);
  for (char letter : {'S', 'x', 'F', 'A'}) {
    exact_buffer in(octets({1, 'h', letter, 0xFF, 0xFF, 0xFF, 0xFF, 'a', 'b', 'c'}));
    EXPECT_EQ(t.decode(table_view{in.view()}), errc::truncated) << letter;
  }
}

TEST(decoded_table, repeated_names_are_kept_and_find_and_the_copy_take_the_first) {
  const std::string in =
      octets({1, 'a', 'b', 1, 1, 'z', 'V', 1, 'a', 'b', 2, 1, 'c', 'V', 1, 'a', 'V'});
  decoded_table t;
  ASSERT_EQ(t.decode(table_view{in}), errc::ok);
  EXPECT_EQ(t.entries().size(), 5u);
  EXPECT_EQ(*t.find("a")->as_i8(), 1);
  field_table model;
  ASSERT_EQ(decode_table(table_view{in}, model), errc::ok);
  EXPECT_EQ(t.to_field_table(), model);

  // Past sixteen kept entries the copy finds repeats by sorting, as decode_table does.
  for (int n : {15, 16, 17, 18, 21, 40}) {
    std::string many;
    for (int i = 0; i < n; ++i) many += octets({1, 'a' + i % 20, 'B', i});
    ASSERT_EQ(t.decode(table_view{many}), errc::ok) << n;
    EXPECT_EQ(t.entries().size(), static_cast<std::size_t>(n));
    ASSERT_EQ(decode_table(table_view{many}, model), errc::ok) << n;
    EXPECT_EQ(t.to_field_table(), model) << n;
  }
}

}  // namespace
}  // namespace warren::codec
