#include "engine/metrics/prometheus.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/engine/metrics/sample_snapshot.h"

namespace warren::metrics {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool has_line(const std::string& text, const std::string& line) {
  const auto l = lines_of(text);
  return std::find(l.begin(), l.end(), line) != l.end();
}

connection_snapshot one_connection() {
  connection_snapshot c;
  c.id = 3;
  c.name = "app";
  c.transport = {.bytes_received = 2048,
                 .bytes_sent = 4096,
                 .frames_received = 9,
                 .frames_sent = 30,
                 .socket_reads = 5,
                 .socket_writes = 2};
  c.blocked_time = 2500us;
  c.recoveries = 1;
  c.heartbeats_missed = 2;
  c.open_channels = 1;
  c.publishes = {.published = 12, .confirmed = 10, .nacked = 1, .in_doubt = 1};
  c.deliveries = {.delivered = 5, .acked = 4, .nacked = 1};
  c.publish_to_confirm.record(1'500'000, 10);
  c.publish_to_confirm.record(3'000'000'000, 1);
  c.delivery_to_handled.record(700);
  c.delivery_to_handled.record(70'000);
  return c;
}

// The whole text for one connection: every connection-level family, in order, with HELP and
// TYPE, and both histograms bucket by bucket (1.5 ms x10 and 3 s; 700 ns and 70 us).
TEST(prometheus, connection_families_render_exactly) {
  snapshot s;
  s.connections.push_back(one_connection());
  const std::string want =
      R"(# HELP warren_publishes_total Messages accepted for publishing (try_publish or publish returned ok).
# TYPE warren_publishes_total counter
warren_publishes_total{connection="3",connection_name="app"} 12
# HELP warren_publishes_confirmed_total Publishes the broker confirmed (basic.ack).
# TYPE warren_publishes_confirmed_total counter
warren_publishes_confirmed_total{connection="3",connection_name="app"} 10
# HELP warren_publishes_nacked_total Publishes the broker refused (basic.nack).
# TYPE warren_publishes_nacked_total counter
warren_publishes_nacked_total{connection="3",connection_name="app"} 1
# HELP warren_publishes_in_doubt_total Publishes completed without the broker's ack or nack (confirm timeout, channel closed, connection lost): they may or may not be on the broker.
# TYPE warren_publishes_in_doubt_total counter
warren_publishes_in_doubt_total{connection="3",connection_name="app"} 1
# HELP warren_publishes_returned_total Publishes the broker returned as unroutable (basic.return).
# TYPE warren_publishes_returned_total counter
warren_publishes_returned_total{connection="3",connection_name="app"} 0
# HELP warren_publishes_republished_total Unconfirmed publishes sent again on a recovered channel.
# TYPE warren_publishes_republished_total counter
warren_publishes_republished_total{connection="3",connection_name="app"} 0
# HELP warren_deliveries_total Messages received (basic.deliver and basic.get-ok).
# TYPE warren_deliveries_total counter
warren_deliveries_total{connection="3",connection_name="app"} 5
# HELP warren_deliveries_acked_total Deliveries the application acknowledged (basic.ack sent).
# TYPE warren_deliveries_acked_total counter
warren_deliveries_acked_total{connection="3",connection_name="app"} 4
# HELP warren_deliveries_nacked_total Deliveries the application nacked (basic.nack sent).
# TYPE warren_deliveries_nacked_total counter
warren_deliveries_nacked_total{connection="3",connection_name="app"} 1
# HELP warren_deliveries_rejected_total Deliveries the application rejected (basic.reject sent).
# TYPE warren_deliveries_rejected_total counter
warren_deliveries_rejected_total{connection="3",connection_name="app"} 0
# HELP warren_received_bytes_total Bytes read from the connection's socket (TLS records whole).
# TYPE warren_received_bytes_total counter
warren_received_bytes_total{connection="3",connection_name="app"} 2048
# HELP warren_sent_bytes_total Bytes written to the connection's socket (TLS records whole).
# TYPE warren_sent_bytes_total counter
warren_sent_bytes_total{connection="3",connection_name="app"} 4096
# HELP warren_received_frames_total AMQP frames received.
# TYPE warren_received_frames_total counter
warren_received_frames_total{connection="3",connection_name="app"} 9
# HELP warren_sent_frames_total AMQP frames sent.
# TYPE warren_sent_frames_total counter
warren_sent_frames_total{connection="3",connection_name="app"} 30
# HELP warren_socket_reads_total Read system calls on the connection's socket.
# TYPE warren_socket_reads_total counter
warren_socket_reads_total{connection="3",connection_name="app"} 5
# HELP warren_socket_writes_total Write system calls on the connection's socket.
# TYPE warren_socket_writes_total counter
warren_socket_writes_total{connection="3",connection_name="app"} 2
# HELP warren_blocked_seconds_total Time the broker kept the connection blocked (connection.blocked), in seconds.
# TYPE warren_blocked_seconds_total counter
warren_blocked_seconds_total{connection="3",connection_name="app"} 0.0025
# HELP warren_blocked 1 while the broker keeps the connection blocked.
# TYPE warren_blocked gauge
warren_blocked{connection="3",connection_name="app"} 0
# HELP warren_recoveries_total Completed recoveries of the connection (reconnect and replay).
# TYPE warren_recoveries_total counter
warren_recoveries_total{connection="3",connection_name="app"} 1
# HELP warren_missed_heartbeats_total Heartbeat intervals that passed with nothing received from the broker.
# TYPE warren_missed_heartbeats_total counter
warren_missed_heartbeats_total{connection="3",connection_name="app"} 2
# HELP warren_open_channels Channels open on the connection.
# TYPE warren_open_channels gauge
warren_open_channels{connection="3",connection_name="app"} 1
# HELP warren_publish_confirm_seconds Time from a publish to the broker's ack or nack, in seconds.
# TYPE warren_publish_confirm_seconds histogram
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.000001024"} 0
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.000002048"} 0
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.000004096"} 0
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.000008192"} 0
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.000016384"} 0
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.000032768"} 0
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.000065536"} 0
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.000131072"} 0
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.000262144"} 0
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.000524288"} 0
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.001048576"} 0
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.002097152"} 10
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.004194304"} 10
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.008388608"} 10
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.016777216"} 10
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.033554432"} 10
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.067108864"} 10
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.134217728"} 10
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.268435456"} 10
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="0.536870912"} 10
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="1.073741824"} 10
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="2.147483648"} 10
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="4.294967296"} 11
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="8.589934592"} 11
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="17.179869184"} 11
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="34.359738368"} 11
warren_publish_confirm_seconds_bucket{connection="3",connection_name="app",le="+Inf"} 11
warren_publish_confirm_seconds_sum{connection="3",connection_name="app"} 3.015
warren_publish_confirm_seconds_count{connection="3",connection_name="app"} 11
# HELP warren_delivery_handled_seconds Time from a delivery's hand-off to its consumer to its handler's return, in seconds.
# TYPE warren_delivery_handled_seconds histogram
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.000001024"} 1
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.000002048"} 1
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.000004096"} 1
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.000008192"} 1
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.000016384"} 1
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.000032768"} 1
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.000065536"} 1
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.000131072"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.000262144"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.000524288"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.001048576"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.002097152"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.004194304"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.008388608"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.016777216"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.033554432"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.067108864"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.134217728"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.268435456"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="0.536870912"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="1.073741824"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="2.147483648"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="4.294967296"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="8.589934592"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="17.179869184"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="34.359738368"} 2
warren_delivery_handled_seconds_bucket{connection="3",connection_name="app",le="+Inf"} 2
warren_delivery_handled_seconds_sum{connection="3",connection_name="app"} 0.0000707
warren_delivery_handled_seconds_count{connection="3",connection_name="app"} 2
)";
  EXPECT_EQ(render_prometheus(s, {.channels = false, .consumers = false}), want);
}

TEST(prometheus, an_empty_snapshot_renders_nothing) {
  EXPECT_EQ(render_prometheus(snapshot{}), "");
}

TEST(prometheus, channel_and_consumer_families_carry_their_labels) {
  test::sample sample;
  const std::string text = render_prometheus(sample.take());
  EXPECT_TRUE(has_line(
      text,
      R"(warren_channel_publishes_total{connection="1",connection_name="orders",channel="1"} 10)"));
  EXPECT_TRUE(has_line(
      text,
      R"(warren_channel_deliveries_acked_total{connection="1",connection_name="orders",channel="2"} 3)"));
  EXPECT_TRUE(has_line(
      text,
      R"(warren_channel_publish_confirm_seconds_bucket{connection="1",connection_name="orders",channel="1",le="0.004194304"} 6)"));
  EXPECT_TRUE(has_line(text, "# TYPE warren_consumer_pending_deliveries gauge"));
  EXPECT_TRUE(has_line(
      text,
      R"(warren_consumer_pending_deliveries{connection="1",connection_name="orders",channel="2",consumer="ctag-1"} 1)"));
  EXPECT_TRUE(has_line(
      text,
      R"(warren_consumer_deliveries_total{connection="1",connection_name="orders",channel="2",consumer="ctag-1"} 4)"));
  // The second connection has no name and no channels.
  EXPECT_TRUE(has_line(text, R"(warren_publishes_total{connection="2"} 0)"));
  EXPECT_TRUE(has_line(
      text, R"(warren_blocked_seconds_total{connection="1",connection_name="orders"} 1.5)"));
  EXPECT_TRUE(has_line(text, R"(warren_blocked{connection="1",connection_name="orders"} 1)"));
}

TEST(prometheus, options_leave_out_channel_and_consumer_families) {
  test::sample sample;
  const std::string text =
      render_prometheus(sample.take(), {.channels = false, .consumers = false});
  EXPECT_EQ(text.find("warren_channel_"), std::string::npos);
  EXPECT_EQ(text.find("warren_consumer_"), std::string::npos);
  EXPECT_NE(text.find("warren_publishes_total"), std::string::npos);
}

TEST(prometheus, each_family_is_one_block_with_help_and_type_first) {
  test::sample sample;
  const auto lines = lines_of(render_prometheus(sample.take()));
  std::vector<std::string> seen;
  std::string current;
  for (const std::string& l : lines) {
    if (l.starts_with("# HELP ")) {
      current = l.substr(7, l.find(' ', 7) - 7);
      ASSERT_EQ(std::find(seen.begin(), seen.end(), current), seen.end()) << current;
      seen.push_back(current);
      continue;
    }
    if (l.starts_with("# TYPE ")) {
      ASSERT_TRUE(l.starts_with("# TYPE " + current + " ")) << l;
      continue;
    }
    ASSERT_TRUE(l.starts_with(current)) << l << " outside " << current;
  }
  EXPECT_GE(seen.size(), 30u);
}

TEST(prometheus, label_values_are_escaped_and_made_valid_utf8) {
  EXPECT_EQ(escape_label_value(R"(a"b\c)"), R"(a\"b\\c)");
  EXPECT_EQ(escape_label_value("line\nbreak"), R"(line\nbreak)");
  EXPECT_EQ(escape_label_value("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x90\x87"),
            "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x90\x87");  // valid: unchanged
  EXPECT_EQ(escape_label_value("a\xFF"
                               "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(escape_label_value("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong '/'
  EXPECT_EQ(escape_label_value("\xED\xA0\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");                        // a surrogate
  EXPECT_EQ(escape_label_value("x\xE2\x82"), "x\xEF\xBF\xBD\xEF\xBF\xBD");  // truncated
  EXPECT_EQ(escape_label_value(std::string("nul\0in", 6)), std::string("nul\0in", 6));

  snapshot s;
  connection_snapshot c;
  c.id = 1;
  c.name = "say \"hi\"\\\n";
  channel_snapshot ch;
  ch.id = 1;
  ch.consumers.push_back({.tag = "tag\xFE", .delivered = 1, .pending = 0});
  c.channels.push_back(ch);
  s.connections.push_back(c);
  const std::string text = render_prometheus(s);
  EXPECT_TRUE(has_line(
      text, R"(warren_publishes_total{connection="1",connection_name="say \"hi\"\\\n"} 0)"));
  EXPECT_TRUE(has_line(
      text,
      "warren_consumer_deliveries_total{connection=\"1\",connection_name=\"say \\\"hi\\\"\\\\\\n\","
      "channel=\"1\",consumer=\"tag\xEF\xBF\xBD\"} 1"));
}

TEST(prometheus, constant_labels_come_first_on_every_sample) {
  test::sample sample;
  const std::string text =
      render_prometheus(sample.take(), {.labels = {{"role", "ingest \"a\""}, {"zone", "z1"}}});
  for (const std::string& l : lines_of(text)) {
    if (l.starts_with("#")) continue;
    ASSERT_TRUE(l.find(R"({role="ingest \"a\"",zone="z1",connection=")") != std::string::npos) << l;
  }
}

TEST(prometheus, bad_or_reserved_constant_label_names_throw_before_writing) {
  test::sample sample;
  const snapshot s = sample.take();
  for (const char* name : {"", "1abc", "a-b", "__name", "connection", "channel", "consumer", "le",
                           "connection_name"}) {
    std::string out = "kept";
    EXPECT_THROW(render_prometheus(s, {.labels = {{name, "v"}}}, out), std::invalid_argument)
        << name;
    EXPECT_EQ(out, "kept");
  }
  EXPECT_NO_THROW(render_prometheus(s, {.labels = {{"_ok9", "v"}}}));
}

TEST(prometheus, seconds_are_exact_decimals) {
  EXPECT_EQ(seconds_text(0), "0");
  EXPECT_EQ(seconds_text(1), "0.000000001");
  EXPECT_EQ(seconds_text(1500), "0.0000015");
  EXPECT_EQ(seconds_text(1'000'000'000), "1");
  EXPECT_EQ(seconds_text(34'359'738'368), "34.359738368");
  EXPECT_EQ(seconds_text(18'446'744'073'709'551'615u), "18446744073.709551615");
}

TEST(prometheus, bounds_are_powers_of_two_from_one_microsecond_to_thirty_four_seconds) {
  const auto b = latency_bucket_bounds_ns();
  ASSERT_EQ(b.size(), 26u);
  EXPECT_EQ(b.front(), 1024u);
  EXPECT_EQ(b.back(), std::uint64_t{1} << 35);
  for (std::size_t i = 1; i < b.size(); ++i) EXPECT_EQ(b[i], 2 * b[i - 1]);
}

// Against a direct count of the recorded values: each bucket counts exactly the values below
// its bound, buckets never decrease, and +Inf equals _count.
TEST(prometheus, cumulative_buckets_count_exactly_the_values_below_each_bound) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> exponent(1.0, 11.0);
  connection_snapshot c;
  c.id = 1;
  std::vector<std::uint64_t> values;
  for (int i = 0; i < 5000; ++i) {
    values.push_back(static_cast<std::uint64_t>(std::pow(10.0, exponent(rng))));
    c.publish_to_confirm.record(values.back());
  }
  snapshot s;
  s.connections.push_back(c);
  const std::string text = render_prometheus(s);
  for (const std::uint64_t bound : latency_bucket_bounds_ns()) {
    const auto below =
        std::count_if(values.begin(), values.end(), [&](std::uint64_t v) { return v < bound; });
    const std::string line = "warren_publish_confirm_seconds_bucket{connection=\"1\",le=\"" +
                             seconds_text(bound) + "\"} " + std::to_string(below);
    EXPECT_TRUE(has_line(text, line)) << line;
  }
  EXPECT_TRUE(
      has_line(text, "warren_publish_confirm_seconds_bucket{connection=\"1\",le=\"+Inf\"} 5000"));
  EXPECT_TRUE(has_line(text, "warren_publish_confirm_seconds_count{connection=\"1\"} 5000"));
}

}  // namespace
}  // namespace warren::metrics
