#include "codec/content.h"

#include <gtest/gtest.h>

#include <string>

namespace warren::codec {
namespace {

using namespace std::string_literals;

// Entries of a one-entry table {"k": S "v"}, without the table's length prefix.
const std::string one_header_entries =
    "\x01k"s             // name "k"
    "S"s                 // long string
    "\x00\x00\x00\x01"s  // length 1
    "v"s;

// A content-header payload with all 14 basic properties, worked out by hand.
// clang-format off
const std::string all_properties_payload =
    "\x00\x3c"s                          // class 60 (basic)
    "\x00\x00"s                          // weight 0
    "\x00\x00\x00\x00\x00\x00\x00\x05"s  // body size 5
    "\xff\xfc"s                          // flags: bits 15..2
    "\x0a" "text/plain"s                // content-type
    "\x04" "gzip"s                      // content-encoding
    "\x00\x00\x00\x08"s                  // headers: 8 octets of entries
    "\x01" "kS" "\x00\x00\x00\x01" "v"s   //   k = S "v"
    "\x02"s                              // delivery-mode 2 (persistent)
    "\x09"s                              // priority 9
    "\x02" "c1"s                        // correlation-id
    "\x02" "rq"s                        // reply-to
    "\x05" "60000"s                     // expiration
    "\x03" "m-1"s                       // message-id
    "\x00\x00\x00\x00\x65\x00\x00\x00"s  // timestamp 0x65000000
    "\x01" "t"s                         // type
    "\x05" "guest"s                     // user-id
    "\x03" "app"s                       // app-id
    "\x00"s;                            // cluster-id: present and empty
// clang-format on

content_header all_properties_header() {
  content_header h;
  h.body_size = 5;
  basic_properties& p = h.properties;
  p.set_content_type("text/plain");
  p.set_content_encoding("gzip");
  p.set_headers(table_view{one_header_entries});
  p.set_delivery_mode(basic_properties::persistent);
  p.set_priority(9);
  p.set_correlation_id("c1");
  p.set_reply_to("rq");
  p.set_expiration("60000");
  p.set_message_id("m-1");
  p.set_timestamp(0x65000000);
  p.set_type("t");
  p.set_user_id("guest");
  p.set_app_id("app");
  p.set_cluster_id("");
  return h;
}

std::string encode_to_string(const content_header& h, errc expected = errc::ok) {
  std::string out;
  writer w(out);
  EXPECT_EQ(encode(h, w), expected);
  w.finish();
  return out;
}

TEST(basic_properties, setters_set_value_and_flag) {
  basic_properties p;
  EXPECT_FALSE(p.has_priority());
  p.set_priority(3);
  EXPECT_TRUE(p.has_priority());
  EXPECT_EQ(p.priority, 3);
  EXPECT_EQ(p.flags, basic_properties::priority_flag);
  p.set_cluster_id("c");
  EXPECT_TRUE(p.has_cluster_id());
  EXPECT_EQ(p.flags, basic_properties::priority_flag | basic_properties::cluster_id_flag);
}

TEST(basic_properties, every_setter_sets_its_own_flag_bit_15_down_to_2) {
  const content_header h = all_properties_header();
  EXPECT_EQ(h.properties.flags, 0xfffc);
  const basic_properties& p = h.properties;
  const bool has[] = {
      p.has_content_type(), p.has_content_encoding(), p.has_headers(),  p.has_delivery_mode(),
      p.has_priority(),     p.has_correlation_id(),   p.has_reply_to(), p.has_expiration(),
      p.has_message_id(),   p.has_timestamp(),        p.has_type(),     p.has_user_id(),
      p.has_app_id(),       p.has_cluster_id()};
  for (bool b : has) EXPECT_TRUE(b);
}

TEST(content_header, encodes_all_fourteen_properties_in_flag_order) {
  const content_header h = all_properties_header();
  EXPECT_EQ(encode_to_string(h), all_properties_payload);
  EXPECT_EQ(encoded_size(h), all_properties_payload.size());
}

TEST(content_header, decodes_all_fourteen_properties_as_views_into_payload) {
  content_header h;
  ASSERT_EQ(decode(all_properties_payload, h), errc::ok);
  EXPECT_EQ(h, all_properties_header());
  EXPECT_EQ(h.properties.content_type.data(), all_properties_payload.data() + 15);
  EXPECT_EQ(h.properties.headers.raw.data(),
            all_properties_payload.data() + 34);  // 14 + 11 + 5 + 4
}

TEST(content_header, encodes_empty_property_list_as_zero_flags) {
  content_header h;
  h.body_size = 0x0102030405060708;
  const std::string expected =
      "\x00\x3c"s                          // class 60
      "\x00\x00"s                          // weight
      "\x01\x02\x03\x04\x05\x06\x07\x08"s  // body size
      "\x00\x00"s;                         // no properties
  EXPECT_EQ(encode_to_string(h), expected);
  content_header back;
  ASSERT_EQ(decode(expected, back), errc::ok);
  EXPECT_EQ(back, h);
}

TEST(content_header, ignores_values_whose_flag_is_clear) {
  content_header h;
  h.properties.content_type = std::string(300, 'x');  // not flagged: neither checked nor sent
  h.properties.set_delivery_mode(1);
  const std::string expected =
      "\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"s
      "\x10\x00"s  // flags: delivery-mode only
      "\x01"s;
  EXPECT_EQ(encode_to_string(h), expected);
}

TEST(content_header, decodes_zero_continuation_flags_word) {
  const std::string payload =
      "\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"s
      "\x80\x01"s  // content-type, and another flags word follows
      "\x00\x00"s  // continuation: nothing
      "\x01x"s;
  content_header h;
  ASSERT_EQ(decode(payload, h), errc::ok);
  EXPECT_EQ(h.properties.content_type, "x");
  // The continuation bit is a wire detail, not a property.
  EXPECT_EQ(h.properties.flags, basic_properties::content_type_flag);
}

TEST(content_header, rejects_continuation_word_announcing_properties_basic_lacks) {
  for (const std::string& more : {"\x80\x00"s, "\x00\x01"s, "\x00\x04"s}) {
    const std::string payload =
        "\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"s
        "\x00\x01"s +
        more;
    content_header h;
    EXPECT_EQ(decode(payload, h), errc::bad_content_header);
  }
}

TEST(content_header, rejects_flag_bit_one) {
  const std::string payload = "\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02"s;
  content_header h;
  EXPECT_EQ(decode(payload, h), errc::bad_content_header);
}

TEST(content_header, rejects_class_other_than_basic) {
  const std::string payload = "\x00\x3d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"s;
  content_header h;
  EXPECT_EQ(decode(payload, h), errc::bad_content_header);
  EXPECT_EQ(reply_code(errc::bad_content_header), 502);
}

TEST(content_header, rejects_octets_after_last_property) {
  content_header h;
  EXPECT_EQ(decode(all_properties_payload + "\x00"s, h), errc::bad_content_header);
}

TEST(content_header, reports_truncated_for_every_prefix) {
  for (std::size_t n = 0; n < all_properties_payload.size(); ++n) {
    content_header h;
    EXPECT_EQ(decode(std::string_view(all_properties_payload).substr(0, n), h), errc::truncated)
        << "length " << n;
  }
}

TEST(content_header, rejects_headers_length_beyond_payload) {
  const std::string payload =
      "\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"s
      "\x20\x00"s          // headers only
      "\xff\xff\xff\xf0"s  // hostile length
      "\x01kS\x00\x00\x00\x01v"s;
  content_header h;
  EXPECT_EQ(decode(payload, h), errc::truncated);
}

TEST(content_header, decode_resets_properties_absent_from_the_payload) {
  content_header h = all_properties_header();
  const std::string payload = "\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"s;
  ASSERT_EQ(decode(payload, h), errc::ok);
  EXPECT_EQ(h, content_header{});
}

TEST(content_header, refuses_shortstr_above_255_octets) {
  content_header h;
  const std::string long_id(256, 'm');
  h.properties.set_message_id(long_id);
  EXPECT_EQ(encode_to_string(h, errc::string_too_long), "");
  h.properties.set_message_id(std::string_view(long_id).substr(0, 255));
  EXPECT_EQ(encode_to_string(h).size(), 14u + 1 + 255);
}

TEST(content_header, refuses_flags_that_are_not_properties) {
  content_header h;
  h.properties.flags = 0x0001;
  EXPECT_EQ(encode_to_string(h, errc::value_out_of_range), "");
}

TEST(content_header, reports_buffer_too_small_for_fixed_writer) {
  const content_header h = all_properties_header();
  std::string out(all_properties_payload.size() - 1, '\0');
  writer short_w(out.data(), out.size());
  EXPECT_EQ(encode(h, short_w), errc::buffer_too_small);
  EXPECT_TRUE(short_w.overflowed());

  out.resize(all_properties_payload.size());
  writer exact_w(out.data(), out.size());
  ASSERT_EQ(encode(h, exact_w), errc::ok);
  EXPECT_EQ(out, all_properties_payload);
}

TEST(body_frame_count, splits_at_frame_max_minus_eight) {
  EXPECT_EQ(max_body_chunk(4096), 4088u);
  EXPECT_EQ(body_frame_count(10000, 4096), 3u);  // 4088 + 4088 + 1824
  EXPECT_EQ(body_frame_count(8176, 4096), 2u);   // exactly two full chunks
  EXPECT_EQ(body_frame_count(8177, 4096), 3u);
  EXPECT_EQ(body_frame_count(1, 4096), 1u);
}

TEST(body_frame_count, empty_body_has_no_body_frame) {
  EXPECT_EQ(body_frame_count(0, 4096), 0u);
}

TEST(body_frame_count, uses_pre_tune_limit_while_frame_max_is_zero) {
  EXPECT_EQ(max_body_chunk(0), 131064u);
  EXPECT_EQ(body_frame_count(131064, 0), 1u);
  EXPECT_EQ(body_frame_count(131065, 0), 2u);
}

}  // namespace
}  // namespace warren::codec
