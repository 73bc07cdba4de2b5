// The client-independent parts of the workloads: a producer's pacing, sizes and stamps
// (publisher), and what a consumer channel records per message (receiver).
#include "tools/perf/workload.h"

#include <gtest/gtest.h>

#include <thread>

#include "codec/field_table.h"

namespace warren::perf {
namespace {

perf_options parse(std::vector<std::string> args) {
  return parse_options(args);
}

TEST(publisher, stamps_each_body_with_its_stream_and_sequence) {
  const perf_options o = parse({"-x", "2", "-X", "3", "-s", "40"});
  topology_plan plan = make_plan(o, "k", 5);
  publisher pub(o, plan, 1, nullptr);
  pub.begin(publisher::clock::now());
  for (std::uint64_t i = 0; i < 3; ++i) {
    for (std::size_t c = 0; c < 3; ++c) {
      const publisher::message m = pub.next(c);
      ASSERT_EQ(m.body.size(), 40u);
      EXPECT_EQ(m.sequence, i);
      const auto st = read_stamp(m.body);
      ASSERT_TRUE(st && st->has_sequence);
      // Producer 1 of 2, 3 channels each: streams 3, 4, 5; tagged with the run's tag.
      EXPECT_EQ(st->stream, (std::uint64_t{plan.run_tag} << 32) | (3 + c));
      EXPECT_EQ(st->sequence, i);
      EXPECT_EQ(st->lag_us, 0u);  // not paced
      EXPECT_NEAR(static_cast<double>(st->sent_ns), static_cast<double>(steady_now_ns()), 1e9);
    }
  }
}

TEST(publisher, use_millis_stamps_the_wall_clock) {
  const perf_options o = parse({"-ms", "-s", "24"});
  publisher pub(o, make_plan(o, "k"), 0, nullptr);
  const auto st = read_stamp(pub.next(0).body);
  ASSERT_TRUE(st.has_value());
  EXPECT_NEAR(static_cast<double>(st->sent_ns), static_cast<double>(stamp_clock_ns(true)), 1e9);
}

TEST(publisher, variable_sizes_follow_their_steps) {
  const perf_options o = parse({"--variable-size", "30:1", "--variable-size", "500:1"});
  publisher pub(o, make_plan(o, "k"), 0, nullptr);
  const auto now = publisher::clock::now();
  pub.begin(now);
  EXPECT_EQ(pub.next(0).body.size(), 30u);
  pub.begin(now - std::chrono::milliseconds(1500));  // as if 1.5 s into the run
  EXPECT_EQ(pub.next(0).body.size(), 500u);
  pub.begin(now - std::chrono::milliseconds(2100));
  EXPECT_EQ(pub.next(0).body.size(), 30u);
}

TEST(publisher, bodies_from_a_source_keep_the_stamp_in_a_header) {
  const perf_options o = parse({"--json-body", "-s", "100", "--body-count", "2"});
  const auto bodies = body_source::for_options(o);
  publisher pub(o, make_plan(o, "k"), 0, bodies);
  const publisher::message m = pub.next(0);
  EXPECT_TRUE(m.body == bodies->body(0) || m.body == bodies->body(1));
  EXPECT_EQ(pub.content_type(), "application/json");
  codec::field_table headers;
  ASSERT_EQ(codec::decode_table(codec::table_view{pub.headers()}, headers), codec::errc::ok);
  const codec::field_value* v = headers.find(stamp_header);
  ASSERT_NE(v, nullptr);
  ASSERT_NE(v->as_long_string(), nullptr);
  EXPECT_EQ(*v->as_long_string(), pub.header_stamp());
  const auto st = read_stamp(pub.header_stamp());
  ASSERT_TRUE(st && st->has_sequence);
  EXPECT_EQ(st->sequence, 0u);
  pub.next(0);
  EXPECT_EQ(read_stamp(pub.header_stamp())->sequence, 1u);
}

TEST(publisher, pacing_waits_and_a_rate_of_zero_pauses) {
  const perf_options o = parse({"-r", "1000"});
  publisher pub(o, make_plan(o, "k"), 0, nullptr);
  pub.begin(publisher::clock::now());
  auto never = [] { return false; };
  int waits = 0;
  auto record = [&](publisher::clock::duration d) {
    ++waits;
    // Never more than the schedule's spacing ahead: each turn is 1 ms after the previous.
    EXPECT_LE(d, std::chrono::milliseconds(1));
    std::this_thread::sleep_for(d);
  };
  const auto start = publisher::clock::now();
  for (int i = 0; i < 11; ++i) ASSERT_TRUE(pub.wait_turn(never, record));
  // 11 turns at 1000/s: the last is due 10 ms after the first.
  EXPECT_GE(publisher::clock::now() - start, std::chrono::milliseconds(10));
  EXPECT_GE(waits, 1);
  EXPECT_FALSE(pub.wait_turn([] { return true; }, record));

  const perf_options paused = parse({"--variable-rate", "0:60"});
  publisher idle(paused, make_plan(paused, "k"), 0, nullptr);
  idle.begin(publisher::clock::now());
  waits = 0;
  bool stop = false;
  auto stop_after_3 = [&](publisher::clock::duration) { stop = ++waits >= 3; };
  EXPECT_FALSE(idle.wait_turn([&] { return stop; }, stop_after_3));
  EXPECT_EQ(waits, 3);
}

TEST(publisher, random_start_delay_is_within_one_millisecond_and_the_option) {
  const perf_options o = parse({"--producer-random-start-delay", "2"});
  publisher pub(o, make_plan(o, "k"), 0, nullptr);
  for (int i = 0; i < 1000; ++i) {
    const auto d = pub.start_delay();
    ASSERT_GE(d, std::chrono::milliseconds(1));
    ASSERT_LE(d, std::chrono::seconds(2));
  }
  EXPECT_EQ(publisher(parse({}), make_plan(parse({}), "k"), 0, nullptr).start_delay(),
            publisher::clock::duration::zero());
}

TEST(receiver, records_latency_from_the_publish_and_from_the_intended_time) {
  const perf_options o = parse({"-s", "24"});
  stats_slot slot;
  slot.latency.enable();
  slot.latency_intended.enable();
  sequence_tracker tracker;
  receiver r(o, slot, tracker);
  std::string body(24, '\0');
  stamp st;
  st.sent_ns = steady_now_ns() - 5'000'000;  // 5 ms ago
  st.lag_us = 2000;                          // 2 ms behind its schedule
  st.has_sequence = true;
  st.stream = 7;
  st.sequence = 0;
  write_stamp(body.data(), body.size(), st);
  r.count(body, std::nullopt);
  histogram h, hi;
  slot.latency.snapshot_into(h);
  slot.latency_intended.snapshot_into(hi);
  ASSERT_EQ(h.count(), 1u);
  EXPECT_GE(h.min(), 5'000'000u);
  EXPECT_GE(hi.min(), h.min() + 2'000'000u - 1);
  EXPECT_EQ(slot.received.load(), 1u);
  EXPECT_EQ(tracker.received(), 1u);
  // A header stamp wins over the body.
  std::string header(24, '\0');
  st.sequence = 1;
  write_stamp(header.data(), header.size(), st);
  r.count("not a stamp", header);
  EXPECT_EQ(tracker.received(), 2u);
  EXPECT_EQ(tracker.streams().at(7).begin()->second, 1u);
}

TEST(receiver, consumer_latency_works_for_the_time_asked) {
  const perf_options o = parse({"-L", "300"});
  stats_slot slot;
  sequence_tracker tracker;
  receiver spin(o, slot, tracker);
  auto t = std::chrono::steady_clock::now();
  spin.work();
  EXPECT_GE(std::chrono::steady_clock::now() - t, std::chrono::microseconds(300));
  receiver sleep(parse({"-L", "3000"}), slot, tracker);
  t = std::chrono::steady_clock::now();
  sleep.work();
  EXPECT_GE(std::chrono::steady_clock::now() - t, std::chrono::microseconds(3000));
}

}  // namespace
}  // namespace warren::perf
