#include "engine/protocol/streams.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "codec/field_table.h"

namespace warren {
namespace {

using namespace std::chrono_literals;

// The argument's wire form: type letter and value octets, as the broker reads them.
std::string encoded(const stream_offset& o) {
  codec::field_table t;
  t.set("x-stream-offset", o.to_field());
  return codec::encode_table(t);
}

std::string expected_entry(char letter, std::string_view value_octets) {
  std::string s;
  s += static_cast<char>(15);  // the name's length
  s += "x-stream-offset";
  s += letter;
  s += value_octets;
  return s;
}

std::string be64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) s[static_cast<std::size_t>(i)] = static_cast<char>(v);
  return s;
}

std::string long_string(std::string_view v) {
  std::string s(4, '\0');
  s[3] = static_cast<char>(v.size());
  return s + std::string(v);
}

TEST(stream_offset_test, first_last_and_next_are_long_strings) {
  EXPECT_EQ(encoded(stream_offset::first()), expected_entry('S', long_string("first")));
  EXPECT_EQ(encoded(stream_offset::last()), expected_entry('S', long_string("last")));
  EXPECT_EQ(encoded(stream_offset::next()), expected_entry('S', long_string("next")));
}

TEST(stream_offset_test, a_numeric_offset_is_a_signed_64_l) {
  EXPECT_EQ(encoded(stream_offset::at(0)), expected_entry('l', be64(0)));
  EXPECT_EQ(encoded(stream_offset::at(4242)), expected_entry('l', be64(4242)));
  const auto max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(encoded(stream_offset::at(max)), expected_entry('l', be64(max)));
}

TEST(stream_offset_test, an_offset_above_int64_max_is_refused_naming_it) {
  const auto above = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) + 1;
  try {
    (void)stream_offset::at(above);
    FAIL() << "accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(above)), std::string::npos) << e.what();
  }
}

TEST(stream_offset_test, a_point_in_time_is_an_amqp_timestamp_T_in_whole_seconds) {
  // 2022-06-03T07:45:54Z is 1654242354 s; the fraction is dropped, never rounded up (a start
  // one second late would skip messages).
  const auto t = std::chrono::system_clock::time_point(1654242354s + 999ms);
  const stream_offset o = stream_offset::at_time(t);
  EXPECT_EQ(o.what(), stream_offset::kind::timestamp);
  EXPECT_EQ(o.value(), 1654242354u);
  EXPECT_EQ(encoded(o), expected_entry('T', be64(1654242354)));
  ASSERT_NE(o.to_field().as_timestamp(), nullptr) << "not a long: the broker reads a long as an "
                                                     "offset (rabbitmq-server#3376)";
  EXPECT_EQ(encoded(stream_offset::at_timestamp(7)), expected_entry('T', be64(7)));
}

TEST(stream_offset_test, a_time_before_the_epoch_is_refused) {
  EXPECT_THROW((void)stream_offset::at_time(std::chrono::system_clock::time_point(-1s)),
               std::invalid_argument);
}

TEST(stream_offset_test, an_interval_is_a_long_string_of_a_number_and_a_unit) {
  for (std::string_view spec : {"1h", "30m", "7D", "1Y", "2M", "45s", "0s"}) {
    const stream_offset o = stream_offset::interval(spec);
    EXPECT_EQ(o.what(), stream_offset::kind::interval);
    EXPECT_EQ(o.interval_spec(), spec);
    EXPECT_EQ(encoded(o), expected_entry('S', long_string(spec))) << spec;
  }
}

TEST(stream_offset_test, a_malformed_interval_is_refused_naming_it) {
  for (std::string_view bad :
       {"", "h", "1", "1x", "1H", "h1", "1.5h", "-1h", "1 h", "1234567890123456789h"}) {
    try {
      (void)stream_offset::interval(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("'" + std::string(bad) + "'"), std::string::npos)
          << e.what();
    }
  }
}

TEST(stream_offset_test, parse_reads_every_form_and_to_string_reads_back) {
  EXPECT_EQ(stream_offset::parse("first"), stream_offset::first());
  EXPECT_EQ(stream_offset::parse("last"), stream_offset::last());
  EXPECT_EQ(stream_offset::parse("next"), stream_offset::next());
  EXPECT_EQ(stream_offset::parse("0"), stream_offset::at(0));
  EXPECT_EQ(stream_offset::parse("123456"), stream_offset::at(123456));
  EXPECT_EQ(stream_offset::parse("1h"), stream_offset::interval("1h"));
  EXPECT_EQ(stream_offset::parse("2022-06-03T07:45:54Z"), stream_offset::at_timestamp(1654242354));
  EXPECT_EQ(stream_offset::parse("2022-06-03T09:45:54.250+02:00"),
            stream_offset::at_timestamp(1654242354));
  EXPECT_EQ(stream_offset::parse("2022-06-03T02:45:54-05:00"),
            stream_offset::at_timestamp(1654242354));
  for (const stream_offset& o :
       {stream_offset::first(), stream_offset::last(), stream_offset::next(), stream_offset::at(99),
        stream_offset::interval("30m"), stream_offset::at_timestamp(1654242354),
        stream_offset::at_timestamp(0)}) {
    EXPECT_EQ(stream_offset::parse(o.to_string()), o) << o.to_string();
  }
  EXPECT_EQ(stream_offset::at_timestamp(1654242354).to_string(), "2022-06-03T07:45:54Z");
}

TEST(stream_offset_test, parse_refuses_what_it_cannot_read) {
  for (std::string_view bad :
       {"", "FIRST", "-1", "1.5", "99999999999999999999", "2022-06-03T07:45:54",
        "2022-13-03T07:45:54Z", "1969-12-31T23:59:59Z", "yesterday"}) {
    EXPECT_THROW((void)stream_offset::parse(bad), std::invalid_argument) << bad;
  }
}

// Headers as the broker sends them, read through the zero-copy path and the owning one.
struct headers_case {
  codec::field_table table;
  std::string raw;
  codec::basic_properties props;
  explicit headers_case(codec::field_table t) : table(std::move(t)) {
    raw = codec::encode_table(table);
    props.flags = codec::basic_properties::headers_flag;
    props.headers = codec::table_view{raw};
  }
};

TEST(stream_headers_test, a_stream_deliverys_offset_is_read_from_x_stream_offset) {
  headers_case h({{"other", codec::field_value::long_string("x")},
                  {"x-stream-offset", codec::field_value::i64(41)}});
  EXPECT_EQ(stream_offset_header(h.props), 41u);
  EXPECT_EQ(stream_offset_header(h.table), 41u);
}

TEST(stream_headers_test, a_quorum_redeliverys_count_is_read_from_x_delivery_count) {
  headers_case h({{"x-delivery-count", codec::field_value::i64(2)}});
  EXPECT_EQ(delivery_count_header(h.props), 2u);
  EXPECT_EQ(delivery_count_header(h.table), 2u);
  // Any integer letter: another peer (a shovel, py-amqp) may re-encode it narrower.
  headers_case narrow({{"x-delivery-count", codec::field_value::i32(3)}});
  EXPECT_EQ(delivery_count_header(narrow.props), 3u);
}

TEST(stream_headers_test, an_absent_negative_or_non_integer_header_reads_as_nullopt) {
  codec::basic_properties none;
  EXPECT_EQ(stream_offset_header(none), std::nullopt) << "no headers at all";
  EXPECT_EQ(delivery_count_header(none), std::nullopt);
  headers_case h({{"x-stream-offset", codec::field_value::long_string("12")},
                  {"x-delivery-count", codec::field_value::i64(-1)}});
  EXPECT_EQ(stream_offset_header(h.props), std::nullopt);
  EXPECT_EQ(delivery_count_header(h.props), std::nullopt);
  EXPECT_EQ(delivery_count_header(h.table), std::nullopt);
  codec::basic_properties broken;
  broken.flags = codec::basic_properties::headers_flag;
  const std::string garbage = "\x0fx-stream-offse";  // truncated mid-name
  broken.headers = codec::table_view{garbage};
  EXPECT_EQ(stream_offset_header(broken), std::nullopt);
}

// stream_progress ------------------------------------------------------------------------------

TEST(stream_progress_test, nothing_is_handled_before_the_first_settle) {
  protocol::stream_progress p;
  p.on_delivery(1, 100);
  EXPECT_EQ(p.last_handled(), std::nullopt);
  EXPECT_EQ(p.resume_from(), std::nullopt);
  EXPECT_EQ(p.pending(), 1u);
}

TEST(stream_progress_test, in_order_acks_move_the_watermark_to_each_offset) {
  protocol::stream_progress p;
  for (std::uint64_t t = 1; t <= 3; ++t) p.on_delivery(t, 9 + t);  // offsets 10..12
  p.on_settled(1, false);
  EXPECT_EQ(p.last_handled(), 10u);
  p.on_settled(2, false);
  EXPECT_EQ(p.last_handled(), 11u);
  EXPECT_EQ(p.resume_from(), stream_offset::at(12));
  EXPECT_EQ(p.pending(), 1u);
}

TEST(stream_progress_test, an_out_of_order_settle_waits_for_the_earlier_deliveries) {
  protocol::stream_progress p;
  for (std::uint64_t t = 1; t <= 3; ++t) p.on_delivery(t, t - 1);
  p.on_settled(3, false);
  EXPECT_EQ(p.last_handled(), std::nullopt) << "0 and 1 are not handled: resuming after 2 "
                                               "would lose them";
  p.on_settled(2, false);
  EXPECT_EQ(p.last_handled(), std::nullopt);
  p.on_settled(1, false);
  EXPECT_EQ(p.last_handled(), 2u);
  EXPECT_EQ(p.pending(), 0u);
}

TEST(stream_progress_test, a_multiple_settle_covers_every_tag_up_to_it) {
  protocol::stream_progress p;
  // Tags 2 and 4 are another consumer's on the same channel: not here.
  p.on_delivery(1, 50);
  p.on_delivery(3, 51);
  p.on_delivery(5, 52);
  p.on_settled(4, true);
  EXPECT_EQ(p.last_handled(), 51u);
  p.on_settled(4, false);  // not this consumer's tag
  EXPECT_EQ(p.last_handled(), 51u);
  p.on_settled(5, true);
  EXPECT_EQ(p.last_handled(), 52u);
}

TEST(stream_progress_test, forgetting_unsettled_deliveries_keeps_the_watermark) {
  protocol::stream_progress p;
  p.on_delivery(1, 7);
  p.on_delivery(2, 8);
  p.on_settled(1, false);
  p.forget_unsettled();
  EXPECT_EQ(p.pending(), 0u);
  EXPECT_EQ(p.last_handled(), 7u);
  p.on_settled(2, false);  // a decision on a delivery the broker took back changes nothing
  EXPECT_EQ(p.last_handled(), 7u);
  // A new life's tags start again at 1.
  p.on_delivery(1, 8);
  p.on_settled(1, false);
  EXPECT_EQ(p.last_handled(), 8u);
}

TEST(stream_progress_test, a_delivery_without_an_offset_is_not_tracked) {
  protocol::stream_progress p;
  p.on_delivery(1, std::nullopt);
  EXPECT_EQ(p.pending(), 0u);
  p.on_settled(1, false);
  EXPECT_EQ(p.last_handled(), std::nullopt);
}

}  // namespace
}  // namespace warren
