#include "engine/protocol/confirm_tracker.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace warren::protocol {
namespace {

using namespace std::chrono_literals;

// What a completion saw, with its text copied (the view dies with the call).
struct seen {
  std::uint64_t sequence;
  std::uint64_t token;
  confirm_outcome outcome;
  bool returned;
  std::uint16_t reply_code;
  std::string reply_text;
  friend bool operator==(const seen&, const seen&) = default;
};

std::ostream& operator<<(std::ostream& os, const seen& s) {
  return os << "{seq " << s.sequence << " token " << s.token << " outcome " << int(s.outcome)
            << " returned " << s.returned << " " << s.reply_code << " '" << s.reply_text << "'}";
}

struct recorder {
  std::vector<seen> events;
  auto callback() {
    return [this](const confirm_event& e) {
      events.push_back(
          {e.sequence, e.token, e.outcome, e.returned, e.reply_code, std::string(e.reply_text)});
    };
  }
};

seen acked(std::uint64_t sequence, std::uint64_t token) {
  return {sequence, token, confirm_outcome::ack, false, 0, ""};
}

class confirm_tracker_test : public ::testing::Test {
 protected:
  time_point now = time_point{} + 1h;  // the fake clock
  recorder rec;
};

TEST_F(confirm_tracker_test, sequences_start_at_one_and_the_window_fills) {
  confirm_tracker t({.window = 3});
  EXPECT_EQ(t.next_sequence(), 1u);
  EXPECT_EQ(t.on_publish(10, now), 1u);
  EXPECT_EQ(t.on_publish(11, now), 2u);
  EXPECT_FALSE(t.full());
  EXPECT_EQ(t.on_publish(12, now), 3u);
  EXPECT_TRUE(t.full());
  EXPECT_EQ(t.on_publish(13, now), 0u);
  EXPECT_EQ(t.outstanding(), 3u);
  EXPECT_EQ(t.next_sequence(), 4u);
  ASSERT_TRUE(t.on_ack(1, false, rec.callback()));
  EXPECT_FALSE(t.full());
  EXPECT_EQ(t.on_publish(13, now), 4u);
}

TEST_F(confirm_tracker_test, single_ack_completes_that_publish_only) {
  confirm_tracker t;
  t.on_publish(100, now);
  t.on_publish(200, now);
  ASSERT_TRUE(t.on_ack(2, false, rec.callback()));
  EXPECT_EQ(rec.events, std::vector<seen>{acked(2, 200)});
  EXPECT_EQ(t.outstanding(), 1u);
  ASSERT_TRUE(t.on_ack(1, false, rec.callback()));
  EXPECT_EQ(rec.events.back(), acked(1, 100));
  EXPECT_EQ(t.outstanding(), 0u);
}

TEST_F(confirm_tracker_test, multiple_ack_completes_the_range_in_order_skipping_settled_ones) {
  confirm_tracker t;
  for (std::uint64_t token = 1; token <= 6; ++token) t.on_publish(token * 10, now);
  ASSERT_TRUE(t.on_ack(3, false, rec.callback()));
  rec.events.clear();
  ASSERT_TRUE(t.on_ack(5, true, rec.callback()));
  EXPECT_EQ(rec.events,
            (std::vector<seen>{acked(1, 10), acked(2, 20), acked(4, 40), acked(5, 50)}));
  EXPECT_EQ(t.outstanding(), 1u);
  // A repeated multiple ack is harmless.
  rec.events.clear();
  EXPECT_TRUE(t.on_ack(5, true, rec.callback()));
  EXPECT_TRUE(rec.events.empty());
}

TEST_F(confirm_tracker_test, multiple_with_tag_zero_settles_everything) {
  confirm_tracker t;
  for (int i = 0; i < 4; ++i) t.on_publish(i, now);
  ASSERT_TRUE(t.on_ack(0, true, rec.callback()));
  EXPECT_EQ(rec.events.size(), 4u);
  EXPECT_EQ(t.outstanding(), 0u);
}

TEST_F(confirm_tracker_test, nacks_single_and_multiple) {
  confirm_tracker t;
  for (int i = 1; i <= 4; ++i) t.on_publish(i, now);
  ASSERT_TRUE(t.on_nack(2, false, rec.callback()));
  ASSERT_TRUE(t.on_nack(3, true, rec.callback()));
  ASSERT_EQ(rec.events.size(), 3u);
  EXPECT_EQ(rec.events[0].sequence, 2u);
  EXPECT_EQ(rec.events[1].sequence, 1u);
  EXPECT_EQ(rec.events[2].sequence, 3u);
  for (const seen& e : rec.events) EXPECT_EQ(e.outcome, confirm_outcome::nack);
  EXPECT_EQ(t.outstanding(), 1u);
}

TEST_F(confirm_tracker_test, unknown_future_and_repeated_tags_are_rejected) {
  confirm_tracker t;
  t.on_publish(1, now);
  t.on_publish(2, now);
  EXPECT_FALSE(t.on_ack(3, false, rec.callback()));  // never published
  EXPECT_FALSE(t.on_ack(3, true, rec.callback()));
  EXPECT_FALSE(t.on_nack(7, true, rec.callback()));
  EXPECT_FALSE(t.on_ack(0, false, rec.callback()));
  EXPECT_TRUE(rec.events.empty());
  EXPECT_EQ(t.outstanding(), 2u);
  ASSERT_TRUE(t.on_ack(1, false, rec.callback()));
  EXPECT_FALSE(t.on_ack(1, false, rec.callback()));  // already settled
  EXPECT_FALSE(t.on_nack(1, false, rec.callback()));
  EXPECT_EQ(rec.events.size(), 1u);
}

TEST_F(confirm_tracker_test, return_then_ack_reports_the_return_in_the_event) {
  confirm_tracker t;
  t.on_publish(7, now, true, "ex", "nowhere");
  t.on_publish(8, now, true, "ex", "somewhere");
  EXPECT_EQ(t.on_return("ex", "nowhere", 312, "NO_ROUTE"), 1u);
  ASSERT_TRUE(t.on_ack(2, true, rec.callback()));
  EXPECT_EQ(rec.events,
            (std::vector<seen>{{1, 7, confirm_outcome::ack, true, 312, "NO_ROUTE"}, acked(2, 8)}));
}

TEST_F(confirm_tracker_test, return_matches_only_mandatory_publishes_with_the_same_route) {
  confirm_tracker t;
  t.on_publish(1, now, false, "ex", "key");  // not mandatory: the broker never returns it
  t.on_publish(2, now, true, "other", "key");
  t.on_publish(3, now, true, "ex", "other");
  EXPECT_EQ(t.on_return("ex", "key", 312, "NO_ROUTE"), 0u);
  t.on_publish(4, now, true, "ex", "key");
  EXPECT_EQ(t.on_return("ex", "key", 312, "NO_ROUTE"), 4u);
  // Already returned: a second return for that route has nothing left to match.
  EXPECT_EQ(t.on_return("ex", "key", 312, "NO_ROUTE"), 0u);
}

// The residual ambiguity documented in confirm_tracker.h: two outstanding mandatory publishes to
// one route, bindings changed in between so that only the SECOND is unroutable. The return
// carries no sequence number, so it is pinned on the oldest candidate: the first publish's event
// says returned, the second's does not.
TEST_F(confirm_tracker_test, same_route_return_is_attributed_to_the_oldest_candidate) {
  confirm_tracker t;
  t.on_publish(1, now, true, "ex", "key");
  t.on_publish(2, now, true, "ex", "key");
  EXPECT_EQ(t.on_return("ex", "key", 312, "NO_ROUTE"), 1u);
  ASSERT_TRUE(t.on_ack(2, true, rec.callback()));
  ASSERT_EQ(rec.events.size(), 2u);
  EXPECT_TRUE(rec.events[0].returned);
  EXPECT_FALSE(rec.events[1].returned);
}

// With unchanged bindings (the usual case) the attribution is exact: the first publish was acked
// (routed) before the second's return and ack arrive.
TEST_F(confirm_tracker_test, same_route_return_after_the_first_ack_goes_to_the_second) {
  confirm_tracker t;
  t.on_publish(1, now, true, "ex", "key");
  t.on_publish(2, now, true, "ex", "key");
  ASSERT_TRUE(t.on_ack(1, false, rec.callback()));
  EXPECT_EQ(t.on_return("ex", "key", 312, "NO_ROUTE"), 2u);
  ASSERT_TRUE(t.on_ack(2, false, rec.callback()));
  EXPECT_FALSE(rec.events[0].returned);
  EXPECT_TRUE(rec.events[1].returned);
}

TEST_F(confirm_tracker_test, timeout_completes_once_and_a_late_ack_is_accepted_silently) {
  confirm_tracker t({.window = 4, .timeout = 5s});
  EXPECT_EQ(t.next_deadline(), time_point::max());
  t.on_publish(1, now);
  now += 2s;
  t.on_publish(2, now);
  EXPECT_EQ(t.next_deadline(), now - 2s + 5s);
  now += 3s;  // publish 1 is due, publish 2 is not
  t.on_timer(now, rec.callback());
  ASSERT_EQ(rec.events.size(), 1u);
  EXPECT_EQ(rec.events[0].sequence, 1u);
  EXPECT_EQ(rec.events[0].outcome, confirm_outcome::timeout);
  EXPECT_EQ(t.outstanding(), 1u);
  EXPECT_EQ(t.next_deadline(), now + 2s);
  // The late answers: accepted, no second completion.
  EXPECT_TRUE(t.on_ack(1, false, rec.callback()));
  EXPECT_EQ(rec.events.size(), 1u);
  EXPECT_FALSE(t.on_ack(1, false, rec.callback()));
  now += 2s;
  t.on_timer(now, rec.callback());
  ASSERT_EQ(rec.events.size(), 2u);
  EXPECT_EQ(rec.events[1].sequence, 2u);
  EXPECT_TRUE(t.on_nack(2, true, rec.callback()));
  EXPECT_EQ(rec.events.size(), 2u);
  EXPECT_EQ(t.next_deadline(), time_point::max());
}

TEST_F(confirm_tracker_test, a_timed_out_publish_keeps_its_window_slot_until_answered) {
  confirm_tracker t({.window = 2, .timeout = 1s});
  t.on_publish(1, now);
  t.on_publish(2, now);
  now += 1s;
  t.on_timer(now, rec.callback());
  EXPECT_EQ(rec.events.size(), 2u);
  EXPECT_EQ(t.outstanding(), 0u);
  EXPECT_TRUE(t.full());
  ASSERT_TRUE(t.on_ack(2, true, rec.callback()));
  EXPECT_FALSE(t.full());
  EXPECT_EQ(rec.events.size(), 2u);
}

TEST_F(confirm_tracker_test, timers_skip_publishes_already_answered) {
  confirm_tracker t({.timeout = 1s});
  t.on_publish(1, now);
  t.on_publish(2, now + 100ms);
  t.on_publish(3, now + 200ms);
  ASSERT_TRUE(t.on_ack(1, false, rec.callback()));
  EXPECT_EQ(t.next_deadline(), now + 1100ms);
  ASSERT_TRUE(t.on_ack(2, false, rec.callback()));
  EXPECT_EQ(t.next_deadline(), now + 1200ms);
  rec.events.clear();
  t.on_timer(now + 1200ms, rec.callback());
  ASSERT_EQ(rec.events.size(), 1u);
  EXPECT_EQ(rec.events[0].sequence, 3u);
}

TEST_F(confirm_tracker_test, fail_all_completes_every_outstanding_publish_exactly_once) {
  confirm_tracker t({.window = 8, .timeout = 1s});
  t.on_publish(1, now);  // will time out
  now += 500ms;
  t.on_publish(2, now, true, "ex", "key");  // will be returned
  t.on_publish(3, now);                     // acked
  t.on_publish(4, now);
  t.on_publish(5, now);
  ASSERT_EQ(t.on_return("ex", "key", 312, "NO_ROUTE"), 2u);
  ASSERT_TRUE(t.on_ack(3, false, rec.callback()));
  now += 600ms;
  t.on_timer(now, rec.callback());
  ASSERT_EQ(rec.events.size(), 2u);
  rec.events.clear();
  t.fail_all(confirm_outcome::in_doubt, 320, "CONNECTION_FORCED", rec.callback());
  EXPECT_EQ(rec.events, (std::vector<seen>{
                            {2, 2, confirm_outcome::in_doubt, true, 312, "NO_ROUTE"},
                            {4, 4, confirm_outcome::in_doubt, false, 320, "CONNECTION_FORCED"},
                            {5, 5, confirm_outcome::in_doubt, false, 320, "CONNECTION_FORCED"}}));
  EXPECT_EQ(t.outstanding(), 0u);
  EXPECT_FALSE(t.full());
  rec.events.clear();
  t.fail_all(confirm_outcome::channel_closed, 0, "", rec.callback());
  EXPECT_TRUE(rec.events.empty());
  EXPECT_FALSE(t.on_ack(4, false, rec.callback()));
}

TEST_F(confirm_tracker_test, the_ring_wraps_many_times_over) {
  confirm_tracker t({.window = 5});  // 8 slots
  std::uint64_t completed = 0;
  std::uint64_t expected = 1;
  auto check = [&](const confirm_event& e) {
    EXPECT_EQ(e.sequence, expected);
    EXPECT_EQ(e.token, e.sequence * 3);
    ++expected;
    ++completed;
  };
  for (std::uint64_t sequence = 1; sequence <= 1000; ++sequence) {
    ASSERT_EQ(t.on_publish(sequence * 3, now, sequence % 7 == 0, "ex", "key"), sequence);
    // Acks trail by up to four, alternating single and multiple.
    if (sequence % 4 == 0) {
      ASSERT_TRUE(t.on_ack(sequence - 1, true, check));
    }
    if (sequence % 4 == 1 && sequence > 1) {
      ASSERT_TRUE(t.on_ack(sequence - 1, false, check));
    }
  }
  ASSERT_TRUE(t.on_ack(0, true, check));
  EXPECT_EQ(completed, 1000u);
  EXPECT_EQ(t.outstanding(), 0u);
}

TEST_F(confirm_tracker_test, a_completion_may_publish_into_the_slot_it_freed) {
  confirm_tracker t({.window = 2});
  t.on_publish(1, now, true, "ex", "a");
  t.on_publish(2, now, true, "ex", "b");
  ASSERT_EQ(t.on_return("ex", "a", 312, "NO_ROUTE"), 1u);
  std::vector<seen> events;
  ASSERT_TRUE(t.on_ack(2, true, [&](const confirm_event& e) {
    events.push_back(
        {e.sequence, e.token, e.outcome, e.returned, e.reply_code, std::string(e.reply_text)});
    // Sequence 3 takes sequence 1's slot (window 2) while this event is still being read.
    if (e.sequence == 1) {
      EXPECT_EQ(t.on_publish(30, now, true, "ex", "overwrites"), 3u);
    }
    EXPECT_EQ(e.reply_text, e.sequence == 1 ? "NO_ROUTE" : "");
  }));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0], (seen{1, 1, confirm_outcome::ack, true, 312, "NO_ROUTE"}));
  EXPECT_EQ(events[1], acked(2, 2));
  EXPECT_EQ(t.outstanding(), 1u);
  EXPECT_EQ(t.on_return("ex", "overwrites", 312, "NO_ROUTE"), 3u);
}

TEST_F(confirm_tracker_test, reset_restarts_sequences_at_one) {
  confirm_tracker t({.window = 3, .timeout = 1s});
  t.on_publish(1, now, true, "ex", "key");
  t.on_publish(2, now);
  t.fail_all(confirm_outcome::channel_closed, 406, "PRECONDITION_FAILED", rec.callback());
  t.reset();
  EXPECT_EQ(t.next_sequence(), 1u);
  EXPECT_EQ(t.outstanding(), 0u);
  EXPECT_EQ(t.next_deadline(), time_point::max());
  EXPECT_EQ(t.on_return("ex", "key", 312, "NO_ROUTE"), 0u);
  EXPECT_EQ(t.on_publish(9, now), 1u);
  rec.events.clear();
  ASSERT_TRUE(t.on_ack(1, false, rec.callback()));
  EXPECT_EQ(rec.events, std::vector<seen>{acked(1, 9)});
}

// A model of what the broker and the tracker should agree on, driven by random operations: every
// publish completes exactly once, with the outcome the model expects, and the tracker's answers
// (sequence numbers, full(), outstanding(), accepted tags, return correlation) match the model.
TEST(confirm_tracker_property, random_operations_complete_every_publish_exactly_once) {
  struct publish {
    std::uint64_t token;
    bool mandatory;
    std::string routing_key;
    time_point deadline;
    bool answered_or_expired = false;  // the event happened (ack, nack or timeout)
    bool broker_answered = false;      // the broker's ack or nack came
    bool returned = false;
  };
  std::mt19937_64 rng(7);
  for (int round = 0; round < 200; ++round) {
    const std::size_t window = 1 + rng() % 20;
    const auto timeout = std::chrono::milliseconds(1 + rng() % 50);
    confirm_tracker t({.window = window, .timeout = timeout});
    std::map<std::uint64_t, publish> model;  // by sequence; erased when the broker answered
    std::map<std::uint64_t, int> completions;
    std::uint64_t next = 1;
    time_point now{};
    confirm_outcome expected_outcome = confirm_outcome::ack;
    auto complete = [&](const confirm_event& e) {
      ++completions[e.sequence];
      auto it = model.find(e.sequence);
      ASSERT_NE(it, model.end()) << e.sequence;
      EXPECT_EQ(e.token, it->second.token);
      EXPECT_EQ(e.outcome, expected_outcome);
      EXPECT_EQ(e.returned, it->second.returned);
      if (e.outcome == confirm_outcome::timeout) {
        EXPECT_LE(it->second.deadline, now);
      }
      EXPECT_FALSE(it->second.answered_or_expired) << "completed twice: " << e.sequence;
      it->second.answered_or_expired = true;
    };
    auto oldest_slot = [&] { return model.empty() ? next : model.begin()->first; };
    auto outstanding = [&] {
      std::size_t n = 0;
      for (auto& [sequence, p] : model) n += !p.answered_or_expired;
      return n;
    };
    for (int step = 0; step < 400; ++step) {
      const unsigned dice = rng() % 100;
      if (dice < 40) {
        const bool full = next - oldest_slot() >= window;
        ASSERT_EQ(t.full(), full);
        const bool mandatory = rng() % 3 == 0;
        const std::string key = "k" + std::to_string(rng() % 3);
        const std::uint64_t sequence = t.on_publish(next * 10, now, mandatory, "ex", key);
        if (full) {
          ASSERT_EQ(sequence, 0u);
          continue;
        }
        ASSERT_EQ(sequence, next);
        model[next] = {next * 10, mandatory, key, now + timeout};
        ++next;
      } else if (dice < 70 && !model.empty()) {
        // The broker answers one publish it has not answered, or a range.
        auto it = model.begin();
        std::advance(it, rng() % model.size());
        const std::uint64_t tag = it->first;
        const bool multiple = rng() % 3 == 0;
        const bool is_ack = rng() % 4 != 0;
        expected_outcome = is_ack ? confirm_outcome::ack : confirm_outcome::nack;
        const bool accepted =
            is_ack ? t.on_ack(tag, multiple, complete) : t.on_nack(tag, multiple, complete);
        ASSERT_TRUE(accepted);
        for (auto m = model.begin(); m != model.end();) {
          if (m->first == tag || (multiple && m->first < tag)) {
            EXPECT_TRUE(m->second.answered_or_expired) << "not completed: " << m->first;
            m = model.erase(m);
          } else {
            ++m;
          }
        }
        // The same single answer again is a protocol error.
        ASSERT_FALSE(t.on_ack(tag, false, complete));
        ASSERT_FALSE(t.on_ack(next, rng() % 2, complete));
      } else if (dice < 80) {
        // A return for the oldest unanswered, unreturned mandatory publish to a route.
        const std::string key = "k" + std::to_string(rng() % 3);
        std::uint64_t want = 0;
        for (auto& [sequence, p] : model) {
          if (p.mandatory && !p.returned && p.routing_key == key) {
            want = sequence;
            break;
          }
        }
        ASSERT_EQ(t.on_return("ex", key, 312, "NO_ROUTE"), want);
        if (want != 0) model[want].returned = true;
      } else if (dice < 97) {
        now += std::chrono::milliseconds(rng() % 10);
        expected_outcome = confirm_outcome::timeout;
        t.on_timer(now, complete);
        // Everything due has an event (the completion checks nothing early expired).
        for (auto& [sequence, p] : model) {
          if (p.deadline <= now) {
            EXPECT_TRUE(p.answered_or_expired) << sequence;
          }
        }
      } else {
        expected_outcome = confirm_outcome::channel_closed;
        t.fail_all(confirm_outcome::channel_closed, 504, "CHANNEL_ERROR", complete);
        for (auto& [sequence, p] : model) EXPECT_TRUE(p.answered_or_expired) << sequence;
        model.clear();
        t.reset();
        next = 1;
        completions.clear();
      }
      ASSERT_EQ(t.outstanding(), outstanding()) << "round " << round << " step " << step;
      ASSERT_EQ(t.next_sequence(), next);
    }
    expected_outcome = confirm_outcome::in_doubt;
    t.fail_all(confirm_outcome::in_doubt, 320, "CONNECTION_FORCED", complete);
    for (auto& [sequence, p] : model) EXPECT_TRUE(p.answered_or_expired) << sequence;
    for (auto& [sequence, count] : completions) ASSERT_EQ(count, 1) << sequence;
    ASSERT_EQ(t.outstanding(), 0u);
  }
}

}  // namespace
}  // namespace warren::protocol

namespace warren::protocol {
namespace {

// Recovery's republish: the unconfirmed publishes are handed over in order without ending, a
// timed-out one (already ended) is not, and the tracker is empty afterwards.
TEST(confirm_tracker_take, outstanding_publishes_are_handed_over_in_order_and_not_completed) {
  const time_point now = time_point{} + 1h;
  confirm_tracker t({.window = 8, .timeout = 5s});
  for (std::uint64_t token = 100; token < 105; ++token) t.on_publish(token, now);
  recorder done;
  ASSERT_TRUE(t.on_ack(1, false, done.callback()));
  t.on_timer(now + 6s, done.callback());  // 2..5 time out
  t.on_publish(105, now + 6s);            // 6, outstanding
  t.on_publish(106, now + 6s);            // 7, outstanding
  const std::size_t completed = done.events.size();
  recorder kept;
  t.take_outstanding(kept.callback());
  EXPECT_EQ(done.events.size(), completed) << "nothing taken is completed";
  ASSERT_EQ(kept.events.size(), 2u);
  EXPECT_EQ(kept.events[0].token, 105u);
  EXPECT_EQ(kept.events[0].sequence, 6u);
  EXPECT_EQ(kept.events[0].outcome, confirm_outcome::in_doubt);
  EXPECT_EQ(kept.events[1].token, 106u);
  EXPECT_EQ(t.outstanding(), 0u);
}

}  // namespace
}  // namespace warren::protocol
