#include "tools/cli/message_json.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace warren::cli {
namespace {

using codec::field_array;
using codec::field_table;
using codec::field_value;

// value -> JSON text -> value, through the serialized form the tool actually prints.
field_value round_trip(const field_value& v) {
  const std::string text = value_to_json(v).dump();
  return value_from_json(json::parse(text), "h");
}

json typed(const char* letter, json value) {
  json j = json::object();
  j["type"] = letter;
  j["value"] = std::move(value);
  return j;
}

std::string error_of(const json& j) {
  try {
    value_from_json(j, "h");
  } catch (const json_error& e) {
    return e.what();
  }
  return "no error";
}

TEST(message_json, boolean_is_a_json_boolean_both_ways) {
  EXPECT_EQ(value_to_json(field_value::boolean(true)).dump(), R"({"type":"t","value":true})");
  EXPECT_EQ(round_trip(field_value::boolean(false)), field_value::boolean(false));
  EXPECT_NE(error_of(typed("t", 1)), "no error");
}

TEST(message_json, every_integer_letter_round_trips_its_extremes) {
  const field_value values[] = {
      field_value::i8(INT8_MIN),    field_value::i8(INT8_MAX),          field_value::u8(0),
      field_value::u8(UINT8_MAX),   field_value::i16(INT16_MIN),        field_value::i16(INT16_MAX),
      field_value::u16(UINT16_MAX), field_value::i32(INT32_MIN),        field_value::i32(INT32_MAX),
      field_value::u32(UINT32_MAX), field_value::i64(INT64_MIN),        field_value::i64(INT64_MAX),
      field_value::timestamp(0),    field_value::timestamp(UINT64_MAX),
  };
  for (const field_value& v : values) EXPECT_EQ(round_trip(v), v) << value_to_json(v).dump();
}

TEST(message_json, integers_keep_their_letter_and_exact_value_in_json) {
  EXPECT_EQ(value_to_json(field_value::i64(INT64_MIN)).dump(),
            R"({"type":"l","value":-9223372036854775808})");
  EXPECT_EQ(value_to_json(field_value::u32(UINT32_MAX)).dump(),
            R"({"type":"i","value":4294967295})");
  EXPECT_EQ(value_to_json(field_value::timestamp(UINT64_MAX)).dump(),
            R"({"type":"T","value":18446744073709551615})");
  EXPECT_EQ(round_trip(field_value::u8(7)).type(), 'B');
  EXPECT_EQ(round_trip(field_value::i8(7)).type(), 'b');
}

TEST(message_json, rejects_integers_outside_their_letter_and_names_the_header) {
  EXPECT_EQ(error_of(typed("B", 256)), "header 'h': 256 out of range for type B (0..255)");
  EXPECT_EQ(error_of(typed("B", -1)), "header 'h': -1 out of range for type B (0..255)");
  EXPECT_EQ(error_of(typed("b", 128)), "header 'h': 128 out of range for type b (-128..127)");
  EXPECT_EQ(error_of(typed("s", -32769)),
            "header 'h': -32769 out of range for type s (-32768..32767)");
  EXPECT_NE(error_of(typed("u", 65536)), "no error");
  EXPECT_NE(error_of(typed("I", 2147483648)), "no error");
  EXPECT_NE(error_of(typed("i", 4294967296)), "no error");
  EXPECT_NE(error_of(typed("i", -1)), "no error");
  EXPECT_NE(error_of(typed("l", std::uint64_t{1} << 63)), "no error");
  EXPECT_NE(error_of(typed("T", -1)), "no error");
  EXPECT_NE(error_of(typed("I", 1.5)), "no error");
  EXPECT_NE(error_of(typed("I", "42")), "no error");
}

TEST(message_json, floats_round_trip_bit_exactly_including_signed_zero_and_extremes) {
  const field_value values[] = {
      field_value::f32(0.1f),
      field_value::f32(-0.0f),
      field_value::f32(std::numeric_limits<float>::max()),
      field_value::f32(std::numeric_limits<float>::denorm_min()),
      field_value::f64(0.1),
      field_value::f64(-0.0),
      field_value::f64(std::numeric_limits<double>::max()),
      field_value::f64(std::numeric_limits<double>::denorm_min()),
  };
  for (const field_value& v : values) EXPECT_EQ(round_trip(v), v) << value_to_json(v).dump();
}

TEST(message_json, nan_and_infinities_are_strings) {
  const float nan_f = std::numeric_limits<float>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(value_to_json(field_value::f32(nan_f)).dump(), R"({"type":"f","value":"NaN"})");
  EXPECT_EQ(value_to_json(field_value::f64(inf)).dump(), R"({"type":"d","value":"Infinity"})");
  EXPECT_EQ(value_to_json(field_value::f64(-inf)).dump(), R"({"type":"d","value":"-Infinity"})");
  EXPECT_EQ(round_trip(field_value::f32(nan_f)), field_value::f32(nan_f));
  EXPECT_EQ(round_trip(field_value::f64(std::numeric_limits<double>::quiet_NaN())),
            field_value::f64(std::numeric_limits<double>::quiet_NaN()));
  EXPECT_EQ(round_trip(field_value::f32(-std::numeric_limits<float>::infinity())),
            field_value::f32(-std::numeric_limits<float>::infinity()));
  EXPECT_NE(error_of(typed("d", "nan")), "no error");
}

TEST(message_json, rejects_a_float_beyond_32_bits_for_f) {
  EXPECT_NE(error_of(typed("f", 1e39)), "no error");
  EXPECT_EQ(value_from_json(typed("d", 1e39), "h"), field_value::f64(1e39));
}

TEST(message_json, decimal_is_a_string_with_scale_digits_after_the_point) {
  EXPECT_EQ(value_to_json(field_value::decimal(2, 314)).dump(), R"({"type":"D","value":"3.14"})");
  EXPECT_EQ(value_to_json(field_value::decimal(3, -50)).dump(), R"({"type":"D","value":"-0.050"})");
  EXPECT_EQ(value_to_json(field_value::decimal(0, 7)).dump(), R"({"type":"D","value":"7"})");
  EXPECT_EQ(value_from_json(typed("D", "3.14"), "h"), field_value::decimal(2, 314));
  EXPECT_EQ(value_from_json(typed("D", "-0.050"), "h"), field_value::decimal(3, -50));
  const field_value extremes[] = {field_value::decimal(0, INT32_MIN),
                                  field_value::decimal(255, INT32_MAX),
                                  field_value::decimal(255, 0), field_value::decimal(9, INT32_MIN)};
  for (const field_value& v : extremes) EXPECT_EQ(round_trip(v), v) << value_to_json(v).dump();
}

TEST(message_json, rejects_malformed_or_oversized_decimals) {
  for (const char* bad :
       {"", "-", "1.", ".5", "1.2.3", "1e3", "+1", "2147483648", "-2147483649", " 1"}) {
    EXPECT_NE(error_of(typed("D", bad)), "no error") << bad;
  }
  EXPECT_NE(error_of(typed("D", 3.14)), "no error");
  EXPECT_NE(error_of(typed("D", "0." + std::string(256, '0'))), "no error");
}

TEST(message_json, long_string_is_text_or_base64_when_not_utf8) {
  EXPECT_EQ(value_to_json(field_value::long_string("héllo")).dump(),
            R"({"type":"S","value":"héllo"})");
  const std::string binary("\xff\x00\x80", 3);
  EXPECT_EQ(value_to_json(field_value::long_string(binary)).dump(),
            R"({"type":"S","value_base64":"/wCA"})");
  EXPECT_EQ(round_trip(field_value::long_string(binary)), field_value::long_string(binary));
  EXPECT_EQ(round_trip(field_value::long_string("")), field_value::long_string(""));
}

TEST(message_json, byte_array_is_base64_and_stays_distinct_from_long_string) {
  const std::string bytes("\x00\x01\xfe\xff", 4);
  EXPECT_EQ(value_to_json(field_value::bytes(bytes)).dump(), R"({"type":"x","value":"AAH+/w=="})");
  EXPECT_EQ(round_trip(field_value::bytes(bytes)), field_value::bytes(bytes));
  EXPECT_EQ(round_trip(field_value::bytes("text")).type(), 'x');
  EXPECT_NE(error_of(typed("x", "not base64!")), "no error");
}

TEST(message_json, void_is_null) {
  EXPECT_EQ(value_to_json(field_value::void_value()).dump(), R"({"type":"V","value":null})");
  EXPECT_EQ(round_trip(field_value::void_value()), field_value::void_value());
  EXPECT_EQ(value_from_json(json::parse(R"({"type":"V"})"), "h"), field_value::void_value());
  EXPECT_NE(error_of(typed("V", 0)), "no error");
}

TEST(message_json, nested_arrays_and_tables_round_trip_in_order) {
  field_table inner{{"z", field_value::i8(-1)}, {"a", field_value::bytes("\x01")}};
  field_array list{field_value::i32(1), field_value::array({field_value::long_string("deep")}),
                   field_value::table(inner), field_value::void_value()};
  const field_value v = field_value::table({{"list", field_value::array(list)},
                                            {"empty", field_value::array({})},
                                            {"t", field_value::table({})}});
  EXPECT_EQ(round_trip(v), v);
  const json j = value_to_json(v);
  EXPECT_EQ(j["value"].begin().key(), "list");  // order kept, not sorted
  EXPECT_EQ(j["value"]["list"]["value"][2]["value"].begin().key(), "z");
}

TEST(message_json, errors_inside_containers_name_the_path) {
  const json j = json::parse(
      R"({"type":"F","value":{"outer":{"type":"A","value":[{"type":"I","value":1},
          {"type":"B","value":300}]}}})");
  EXPECT_EQ(error_of(j), "header 'h.outer[1]': 300 out of range for type B (0..255)");
  EXPECT_EQ(error_of(typed("Q", 1)), "header 'h': unknown type letter 'Q'");
  EXPECT_NE(error_of(json::parse(R"({"type":"I"})")), "no error");
  EXPECT_NE(error_of(json::parse(R"({"type":"I","value":1,"extra":2})")), "no error");
  EXPECT_NE(error_of(42), "no error");
}

TEST(message_json, table_from_json_infers_plain_scalars_only_when_asked) {
  const json args = json::parse(R"({"x-max-length": 10, "x-queue-type": "classic",
      "flag": true, "ratio": 0.5, "typed": {"type": "i", "value": 7}})");
  const field_table t = table_from_json(args, "--arguments", true);
  EXPECT_EQ(*t.find("x-max-length"), field_value::i64(10));
  EXPECT_EQ(*t.find("x-queue-type"), field_value::long_string("classic"));
  EXPECT_EQ(*t.find("flag"), field_value::boolean(true));
  EXPECT_EQ(*t.find("ratio"), field_value::f64(0.5));
  EXPECT_EQ(*t.find("typed"), field_value::u32(7));
  EXPECT_THROW(table_from_json(args), json_error);
  EXPECT_THROW(table_from_json(json::array()), json_error);
}

TEST(message_json, utf8_validation_is_strict) {
  EXPECT_TRUE(is_valid_utf8("plain ascii"));
  EXPECT_TRUE(is_valid_utf8("\xf0\x9f\x90\x87"));   // U+1F407
  EXPECT_TRUE(is_valid_utf8("\xf4\x8f\xbf\xbf"));   // U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xe0\x80\xaf"));      // overlong, 3 octets
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate U+D800
  EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xe2\x82"));          // truncated
  EXPECT_FALSE(is_valid_utf8("\x80"));              // lone continuation
}

TEST(message_json, base64_round_trips_every_length_and_rejects_non_canonical_text) {
  std::string bytes;
  for (int n = 0; n < 10; ++n) {
    EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes);
    bytes += static_cast<char>(0xF0 + n);
  }
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_decode("Zm8="), "fo");
  for (const char* bad : {"Zm8", "Zm9=", "Z===", "Zm=8", "Zm8=Zm8=", "Zm 8", "Zm8*"}) {
    EXPECT_FALSE(base64_decode(bad)) << bad;
  }
}

properties every_property() {
  properties p;
  p.content_type = "application/json";
  p.content_encoding = "utf-8";
  p.delivery_mode = 2;
  p.priority = 255;
  p.correlation_id = "corr";
  p.reply_to = "amq.rabbitmq.reply-to";
  p.expiration = "60000";
  p.message_id = "id-1";
  p.timestamp = UINT64_MAX;
  p.type = "kind";
  p.user_id = "guest";
  p.app_id = "warren";
  p.cluster_id = "c";
  return p;
}

TEST(message_json, properties_use_py_amqp_names_in_wire_order) {
  EXPECT_EQ(properties_to_json(every_property()).dump(),
            R"({"content_type":"application/json","content_encoding":"utf-8","delivery_mode":2,)"
            R"("priority":255,"correlation_id":"corr","reply_to":"amq.rabbitmq.reply-to",)"
            R"("expiration":"60000","message_id":"id-1","timestamp":18446744073709551615,)"
            R"("type":"kind","user_id":"guest","app_id":"warren","cluster_id":"c"})");
  properties back;
  properties_from_json(properties_to_json(every_property()), back);
  EXPECT_EQ(back, every_property());
}

TEST(message_json, rejects_unknown_or_mistyped_properties) {
  properties p;
  EXPECT_THROW(properties_from_json(json::parse(R"({"content-type":"x"})"), p), json_error);
  EXPECT_THROW(properties_from_json(json::parse(R"({"priority":256})"), p), json_error);
  EXPECT_THROW(properties_from_json(json::parse(R"({"delivery_mode":-1})"), p), json_error);
  EXPECT_THROW(properties_from_json(json::parse(R"({"app_id":5})"), p), json_error);
  EXPECT_THROW(properties_from_json(json::parse(R"({"headers":{}})"), p), json_error);
  EXPECT_THROW(properties_from_json(json::parse(R"({"type":")" + std::string(256, 'a') + "\"}"), p),
               json_error);
}

TEST(message_json, message_round_trips_body_properties_and_headers) {
  properties p = every_property();
  p.headers = field_table{{"n", field_value::i32(-5)}, {"s", field_value::long_string("v")}};
  const message m("body text", p);
  const json j = message_to_json(m, false);
  EXPECT_FALSE(j.contains("delivery"));
  const message back = message_from_json(json::parse(j.dump()));
  EXPECT_EQ(back.body(), "body text");
  EXPECT_EQ(back.props(), p);
}

TEST(message_json, invalid_utf8_body_travels_as_base64) {
  const std::string body("\xff\xfe\x00 binary", 10);
  const json j = message_to_json(message(body), false);
  EXPECT_FALSE(j.contains("body"));
  EXPECT_EQ(j["body_base64"], base64_encode(body));
  EXPECT_EQ(message_from_json(json::parse(j.dump())).body(), body);
}

TEST(message_json, empty_headers_and_absent_headers_stay_apart) {
  properties with_empty;
  with_empty.headers = field_table{};
  EXPECT_TRUE(message_to_json(message("", with_empty), false).contains("headers"));
  EXPECT_FALSE(message_to_json(message(""), false).contains("headers"));
  EXPECT_EQ(message_from_json(json::parse(R"({"headers":{}})")).props().headers, field_table{});
  EXPECT_EQ(message_from_json(json::parse(R"({"body":""})")).props().headers, std::nullopt);
}

TEST(message_json, delivery_is_written_and_ignored_on_input) {
  message m("x");
  m.delivery_info().exchange = "ex";
  m.delivery_info().routing_key = "rk";
  m.delivery_info().delivery_tag = 9;
  m.delivery_info().redelivered = true;
  m.delivery_info().consumer_tag = "ctag";
  m.delivery_info().message_count = 3;
  const json j = message_to_json(m);
  EXPECT_EQ(j["delivery"].dump(),
            R"({"exchange":"ex","routing_key":"rk","delivery_tag":9,"redelivered":true,)"
            R"("consumer_tag":"ctag","message_count":3})");
  const message back = message_from_json(j);
  EXPECT_EQ(back.delivery_info().delivery_tag, 0u);
  EXPECT_EQ(back.body(), "x");
}

TEST(message_json, rejects_malformed_messages) {
  EXPECT_THROW(message_from_json(json::parse(R"({"body":"a","body_base64":"YQ=="})")), json_error);
  EXPECT_THROW(message_from_json(json::parse(R"({"bdy":"a"})")), json_error);
  EXPECT_THROW(message_from_json(json::parse(R"({"body":5})")), json_error);
  EXPECT_THROW(message_from_json(json::parse(R"({"body_base64":"YQ="})")), json_error);
  EXPECT_THROW(message_from_json(json::parse(R"(["body"])")), json_error);
}

TEST(message_json, refuses_to_write_what_json_cannot_carry) {
  properties p;
  p.app_id = std::string("\xff", 1);
  EXPECT_THROW(message_to_json(message("", p)), json_error);
  properties h;
  h.headers = field_table{{std::string("\xff", 1), field_value::i8(1)}};
  EXPECT_THROW(message_to_json(message("", h)), json_error);
}

TEST(message_json, value_from_text_covers_every_letter) {
  EXPECT_EQ(value_from_text("h", "t:true"), field_value::boolean(true));
  EXPECT_EQ(value_from_text("h", "b:-128"), field_value::i8(-128));
  EXPECT_EQ(value_from_text("h", "B:255"), field_value::u8(255));
  EXPECT_EQ(value_from_text("h", "s:-2"), field_value::i16(-2));
  EXPECT_EQ(value_from_text("h", "u:65535"), field_value::u16(65535));
  EXPECT_EQ(value_from_text("h", "I:42"), field_value::i32(42));
  EXPECT_EQ(value_from_text("h", "i:4294967295"), field_value::u32(UINT32_MAX));
  EXPECT_EQ(value_from_text("h", "l:-9223372036854775808"), field_value::i64(INT64_MIN));
  EXPECT_EQ(value_from_text("h", "T:18446744073709551615"), field_value::timestamp(UINT64_MAX));
  EXPECT_EQ(value_from_text("h", "f:1.5"), field_value::f32(1.5f));
  EXPECT_EQ(value_from_text("h", "d:-Infinity"),
            field_value::f64(-std::numeric_limits<double>::infinity()));
  EXPECT_EQ(value_from_text("h", "d:NaN"),
            field_value::f64(std::numeric_limits<double>::quiet_NaN()));
  EXPECT_EQ(value_from_text("h", "D:1.50"), field_value::decimal(2, 150));
  EXPECT_EQ(value_from_text("h", "S:a:b"), field_value::long_string("a:b"));
  EXPECT_EQ(value_from_text("h", "x:AAE="), field_value::bytes(std::string("\x00\x01", 2)));
  EXPECT_EQ(value_from_text("h", "V:"), field_value::void_value());
  EXPECT_EQ(value_from_text("h", R"(A:[{"type":"I","value":1}])"),
            field_value::array({field_value::i32(1)}));
  EXPECT_EQ(value_from_text("h", R"(F:{"k":{"type":"t","value":false}})"),
            field_value::table({{"k", field_value::boolean(false)}}));
}

TEST(message_json, value_from_text_rejects_bad_input_naming_the_header) {
  for (const char* bad : {"I", "I42", "B:256", "I:4x", "t:yes", "f:1e39", "A:[", "V:x", "Q:1"}) {
    try {
      value_from_text("my-header", bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const json_error& e) {
      EXPECT_NE(std::string(e.what()).find("'my-header'"), std::string::npos) << e.what();
    }
  }
}

TEST(message_json, property_from_text_parses_names_and_integers) {
  properties p;
  property_from_text("content_type=text/plain", p);
  property_from_text("delivery_mode=2", p);
  property_from_text("expiration=1=2", p);
  EXPECT_EQ(p.content_type, "text/plain");
  EXPECT_EQ(p.delivery_mode, 2);
  EXPECT_EQ(p.expiration, "1=2");
  EXPECT_THROW(property_from_text("priority=x", p), json_error);
  EXPECT_THROW(property_from_text("priority=256", p), json_error);
  EXPECT_THROW(property_from_text("content_type", p), json_error);
  EXPECT_THROW(property_from_text("nope=1", p), json_error);
}

}  // namespace
}  // namespace warren::cli
