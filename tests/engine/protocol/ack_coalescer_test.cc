#include "engine/protocol/ack_coalescer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace warren::protocol {

// For gtest's messages; found by argument-dependent lookup, so outside the unnamed namespace.
std::ostream& operator<<(std::ostream& os, const ack_action& a) {
  const char* names[] = {"ack", "nack", "reject"};
  return os << names[int(a.what)] << "(" << a.delivery_tag << (a.multiple ? ", multiple" : "")
            << (a.requeue ? ", requeue" : "") << ")";
}

namespace {

using namespace std::chrono_literals;
using kind = ack_action::kind;

ack_action ack(std::uint64_t tag, bool multiple = false) {
  return {kind::ack, tag, multiple, false};
}
ack_action nack(std::uint64_t tag, bool multiple, bool requeue) {
  return {kind::nack, tag, multiple, requeue};
}
ack_action reject(std::uint64_t tag, bool requeue) {
  return {kind::reject, tag, false, requeue};
}

class ack_coalescer_test : public ::testing::Test {
 protected:
  std::vector<ack_action> poll(ack_coalescer& c) {
    std::vector<ack_action> out;
    c.poll(now, out);
    return out;
  }
  std::vector<ack_action> flush(ack_coalescer& c) {
    std::vector<ack_action> out;
    c.flush(out);
    return out;
  }
  void deliver(ack_coalescer& c, std::uint64_t first, std::uint64_t last, bool needs_ack = true) {
    for (std::uint64_t tag = first; tag <= last; ++tag) c.on_delivery(tag, needs_ack);
  }

  time_point now = time_point{} + 1h;
};

TEST_F(ack_coalescer_test, in_order_acks_coalesce_into_one_multiple_ack_at_max_count) {
  ack_coalescer c({.max_count = 4, .max_delay = 1s});
  deliver(c, 1, 10);
  for (std::uint64_t tag = 1; tag <= 3; ++tag) ASSERT_TRUE(c.ack(tag, false, now));
  EXPECT_TRUE(poll(c).empty());
  EXPECT_EQ(c.next_deadline(), now + 1s);
  ASSERT_TRUE(c.ack(4, false, now));
  EXPECT_LE(c.next_deadline(), now);
  EXPECT_EQ(poll(c), std::vector<ack_action>{ack(4, true)});
  EXPECT_EQ(c.unsettled(), 6u);
  EXPECT_EQ(c.held(), 0u);
  EXPECT_EQ(c.next_deadline(), time_point::max());
}

TEST_F(ack_coalescer_test, max_delay_sends_what_is_held) {
  ack_coalescer c({.max_count = 64, .max_delay = 1ms});
  deliver(c, 1, 3);
  ASSERT_TRUE(c.ack(1, false, now));
  now += 500us;
  ASSERT_TRUE(c.ack(2, false, now));
  EXPECT_TRUE(poll(c).empty());
  EXPECT_EQ(c.next_deadline(), now + 500us);  // from the oldest held decision
  now += 500us;
  EXPECT_EQ(poll(c), std::vector<ack_action>{ack(2, true)});
  ASSERT_TRUE(c.ack(3, false, now));
  now += 1ms;
  EXPECT_EQ(poll(c), std::vector<ack_action>{ack(3)});
  EXPECT_EQ(c.unsettled(), 0u);
}

TEST_F(ack_coalescer_test, acks_after_a_gap_wait_for_it_to_close_then_go_as_one) {
  ack_coalescer c({.max_count = 64, .max_delay = 1s});
  deliver(c, 1, 6);
  for (std::uint64_t tag = 2; tag <= 6; ++tag) ASSERT_TRUE(c.ack(tag, false, now));
  ASSERT_TRUE(c.ack(1, false, now));  // the slow worker
  EXPECT_EQ(flush(c), std::vector<ack_action>{ack(6, true)});
}

TEST_F(ack_coalescer_test, a_gap_still_open_sends_the_prefix_as_multiple_and_the_rest_single) {
  ack_coalescer c({.max_count = 5, .max_delay = 1s});
  deliver(c, 1, 8);
  ASSERT_TRUE(c.ack(1, false, now));
  ASSERT_TRUE(c.ack(2, false, now));
  // 3 is held by a slow worker.
  ASSERT_TRUE(c.ack(5, false, now));
  ASSERT_TRUE(c.ack(4, false, now));
  ASSERT_TRUE(c.ack(7, false, now));
  EXPECT_EQ(poll(c), (std::vector<ack_action>{ack(2, true), ack(4), ack(5), ack(7)}));
  EXPECT_EQ(c.unsettled(), 3u);  // 3, 6, 8
  ASSERT_TRUE(c.ack(3, false, now));
  ASSERT_TRUE(c.ack(8, false, now));
  ASSERT_TRUE(c.ack(6, false, now));
  // 3..8 are all settled or decided: one frame, spanning 4, 5 and 7 already sent.
  EXPECT_EQ(flush(c), std::vector<ack_action>{ack(8, true)});
}

TEST_F(ack_coalescer_test, no_ack_deliveries_are_spanned) {
  ack_coalescer c({.max_count = 2, .max_delay = 1s});
  c.on_delivery(1, true);
  c.on_delivery(2, false);
  c.on_delivery(3, false);
  c.on_delivery(4, true);
  EXPECT_EQ(c.unsettled(), 2u);
  EXPECT_FALSE(c.ack(2, false, now));  // the broker holds nothing for it
  ASSERT_TRUE(c.ack(1, false, now));
  ASSERT_TRUE(c.ack(4, false, now));
  EXPECT_EQ(poll(c), std::vector<ack_action>{ack(4, true)});
}

TEST_F(ack_coalescer_test, a_nack_goes_before_any_multiple_ack_spanning_it) {
  ack_coalescer c({.max_count = 64, .max_delay = 1s});
  deliver(c, 1, 6);
  ASSERT_TRUE(c.ack(1, false, now));
  ASSERT_TRUE(c.ack(2, false, now));
  ASSERT_TRUE(c.nack(3, false, true, now));
  ASSERT_TRUE(c.ack(4, false, now));
  ASSERT_TRUE(c.reject(5, false, now));
  ASSERT_TRUE(c.ack(6, false, now));
  EXPECT_EQ(flush(c), (std::vector<ack_action>{ack(2, true), nack(3, false, true), ack(4),
                                               reject(5, false), ack(6)}));
}

TEST_F(ack_coalescer_test, consecutive_nacks_coalesce_by_requeue_flag) {
  ack_coalescer c({.max_count = 64, .max_delay = 1s});
  deliver(c, 1, 7);
  ASSERT_TRUE(c.nack(1, false, true, now));
  ASSERT_TRUE(c.nack(2, false, true, now));
  ASSERT_TRUE(c.nack(3, false, false, now));
  ASSERT_TRUE(c.nack(4, false, false, now));
  ASSERT_TRUE(c.ack(5, false, now));
  ASSERT_TRUE(c.ack(6, false, now));
  EXPECT_EQ(flush(c),
            (std::vector<ack_action>{nack(2, true, true), nack(4, true, false), ack(6, true)}));
}

TEST_F(ack_coalescer_test, application_multiple_nack_covers_only_undecided_deliveries) {
  ack_coalescer c({.max_count = 64, .max_delay = 1s});
  deliver(c, 1, 5);
  ASSERT_TRUE(c.ack(2, false, now));
  ASSERT_TRUE(c.nack(4, true, false, now));  // 1, 3, 4 (2 is already decided)
  EXPECT_EQ(c.held(), 4u);
  EXPECT_EQ(flush(c),
            (std::vector<ack_action>{nack(1, false, false), ack(2), nack(4, true, false)}));
  EXPECT_EQ(c.unsettled(), 1u);
}

TEST_F(ack_coalescer_test, a_nack_above_a_gap_goes_single_and_the_gap_still_blocks) {
  ack_coalescer c({.max_count = 64, .max_delay = 1s});
  deliver(c, 1, 4);
  ASSERT_TRUE(c.nack(2, false, true, now));
  ASSERT_TRUE(c.ack(3, false, now));
  EXPECT_EQ(flush(c), (std::vector<ack_action>{nack(2, false, true), ack(3)}));
  ASSERT_TRUE(c.ack(4, false, now));
  ASSERT_TRUE(c.ack(1, false, now));
  EXPECT_EQ(flush(c), std::vector<ack_action>{ack(4, true)});
}

TEST_F(ack_coalescer_test, double_decisions_and_unknown_tags_are_refused) {
  ack_coalescer c;
  deliver(c, 1, 3);
  ASSERT_TRUE(c.ack(1, false, now));
  EXPECT_FALSE(c.ack(1, false, now));        // held
  EXPECT_FALSE(c.reject(1, true, now));      // held
  EXPECT_FALSE(c.ack(4, false, now));        // never delivered
  EXPECT_FALSE(c.ack(0, false, now));        // never a delivery tag
  EXPECT_FALSE(c.nack(9, true, true, now));  // beyond the last delivery
  EXPECT_EQ(flush(c), std::vector<ack_action>{ack(1)});
  EXPECT_FALSE(c.ack(1, false, now));  // settled on the wire
  EXPECT_FALSE(c.ack(1, true, now));   // nothing undecided up to 1
  ASSERT_TRUE(c.ack(0, true, now));    // everything so far
  EXPECT_FALSE(c.ack(3, true, now));
  EXPECT_EQ(flush(c), std::vector<ack_action>{ack(3, true)});
  EXPECT_TRUE(flush(c).empty());
}

TEST_F(ack_coalescer_test, reset_forgets_everything_and_tags_restart) {
  ack_coalescer c({.max_count = 64, .max_delay = 1s});
  deliver(c, 1, 5);
  ASSERT_TRUE(c.ack(2, false, now));
  c.reset();
  EXPECT_EQ(c.unsettled(), 0u);
  EXPECT_EQ(c.held(), 0u);
  EXPECT_EQ(c.next_deadline(), time_point::max());
  EXPECT_TRUE(flush(c).empty());
  EXPECT_FALSE(c.ack(2, false, now));
  deliver(c, 1, 2);
  ASSERT_TRUE(c.ack(1, false, now));
  ASSERT_TRUE(c.ack(2, false, now));
  EXPECT_EQ(flush(c), std::vector<ack_action>{ack(2, true)});
}

TEST_F(ack_coalescer_test, a_long_held_delivery_lets_the_ring_grow_and_still_settles) {
  ack_coalescer c({.max_count = 64, .max_delay = 1s});
  std::vector<ack_action> out;
  c.on_delivery(1, true);  // held by a slow worker throughout
  for (std::uint64_t tag = 2; tag <= 5000; ++tag) {
    c.on_delivery(tag, true);
    ASSERT_TRUE(c.ack(tag, false, now));
    c.poll(now, out);
  }
  // Every poll that reached max_count sent single frames (each tag is above the gap); the last
  // 4999 % 64 stay held.
  EXPECT_EQ(out.size(), 4999u - 4999u % 64);
  for (const ack_action& a : out) ASSERT_FALSE(a.multiple) << a;
  EXPECT_EQ(c.unsettled(), 1u + 4999u % 64);
  ASSERT_TRUE(c.ack(1, false, now));
  // The gap closed: one frame covers 1 and the held tail, spanning the tags already sent.
  EXPECT_EQ(flush(c), std::vector<ack_action>{ack(5000, true)});
  EXPECT_EQ(c.unsettled(), 0u);
}

// Regression (found by channel_core_fuzz, a libFuzzer timeout): with nothing owed, a delivery tag
// far past the last one restarted the ring at it but still walked every skipped tag, one by one.
TEST_F(ack_coalescer_test, a_tag_far_past_the_last_is_taken_at_once_when_nothing_is_owed) {
  ack_coalescer c({.max_count = 64, .max_delay = 1s});
  c.on_delivery(1, false);
  c.on_delivery(std::uint64_t{1} << 62, true);
  ASSERT_TRUE(c.ack(std::uint64_t{1} << 62, false, now));
  EXPECT_EQ(flush(c), std::vector<ack_action>{ack(std::uint64_t{1} << 62)});
  EXPECT_EQ(c.unsettled(), 0u);
}

// A broker numbers a channel's deliveries one by one; a tag that jumps further than
// max_tag_jump while deliveries are owed is ignored (like a tag that does not increase) rather
// than growing the ring, one octet per skipped tag, to whatever the broker names.
TEST_F(ack_coalescer_test, a_tag_jumping_past_max_tag_jump_while_owed_is_ignored) {
  ack_coalescer c({.max_count = 64, .max_delay = 1s});
  c.on_delivery(1, true);
  const std::uint64_t far = 1 + ack_coalescer::max_tag_jump + 1;
  c.on_delivery(far, true);
  EXPECT_FALSE(c.ack(far, false, now));
  EXPECT_EQ(c.unsettled(), 1u);
  // The largest jump allowed is still taken.
  c.on_delivery(1 + ack_coalescer::max_tag_jump, true);
  ASSERT_TRUE(c.ack(1, false, now));
  ASSERT_TRUE(c.ack(1 + ack_coalescer::max_tag_jump, false, now));
  EXPECT_EQ(flush(c), std::vector<ack_action>{ack(1 + ack_coalescer::max_tag_jump, true)});
}

// The broker's side: which deliveries it holds unacknowledged, and how each was settled.
class broker_model {
 public:
  void deliver(std::uint64_t tag) { unacked_.insert(tag); }
  // Applies one frame as RabbitMQ does; a frame naming a tag it does not hold is a channel error
  // (406 unknown delivery tag), recorded as a failure.
  void apply(const ack_action& a) {
    if (!unacked_.contains(a.delivery_tag)) {
      ADD_FAILURE() << "frame " << a << " names a tag the broker does not hold";
      return;
    }
    auto end = a.multiple ? unacked_.upper_bound(a.delivery_tag)
                          : std::next(unacked_.find(a.delivery_tag));
    auto begin = a.multiple ? unacked_.begin() : unacked_.find(a.delivery_tag);
    for (auto it = begin; it != end; ++it) {
      if (!settled_.emplace(*it, outcome_of(a)).second) {
        ADD_FAILURE() << "tag " << *it << " settled twice";
      }
    }
    unacked_.erase(begin, end);
  }
  static std::string outcome_of(const ack_action& a) {
    const char* names[] = {"ack", "nack", "reject"};
    return std::string(names[int(a.what)]) + (a.what != kind::ack && a.requeue ? "+requeue" : "");
  }
  const std::map<std::uint64_t, std::string>& settled() const { return settled_; }
  std::size_t unacked() const { return unacked_.size(); }

 private:
  std::set<std::uint64_t> unacked_;
  std::map<std::uint64_t, std::string> settled_;
};

TEST(ack_coalescer_property, random_decisions_settle_every_delivery_once_as_the_app_chose) {
  std::mt19937_64 rng(20261127);
  for (int round = 0; round < 300; ++round) {
    const std::uint32_t max_count = 1 + rng() % 12;
    ack_coalescer c({.max_count = max_count, .max_delay = 50us});
    broker_model broker;
    time_point now{};
    std::map<std::uint64_t, std::string> chosen;  // the app's decision per tag
    std::vector<std::uint64_t> undecided;         // needs_ack deliveries not decided yet
    std::vector<ack_action> out;
    const std::uint64_t deliveries = 1 + rng() % 200;
    std::uint64_t delivered = 0;
    auto send = [&] {
      for (const ack_action& a : out) broker.apply(a);
      out.clear();
    };
    while (delivered < deliveries || !undecided.empty()) {
      const unsigned dice = rng() % 10;
      if (delivered < deliveries && (dice < 4 || undecided.empty())) {
        const bool needs_ack = rng() % 5 != 0;
        c.on_delivery(++delivered, needs_ack);
        if (needs_ack) {
          broker.deliver(delivered);
          undecided.push_back(delivered);
        }
      } else if (dice < 9) {
        // Any undecided delivery, as a pool of workers would finish them.
        const std::size_t pick = rng() % undecided.size();
        const std::uint64_t tag = undecided[pick];
        const unsigned how = rng() % 6;
        const bool requeue = rng() % 2;
        const bool multiple = how >= 4;
        std::string outcome = how == 2 || how == 4 ? "nack" : how == 3 ? "reject" : "ack";
        if (outcome != "ack" && requeue) outcome += "+requeue";
        bool accepted = false;
        if (how == 0 || how == 1 || how == 5) {
          accepted = c.ack(tag, multiple, now);
        } else if (how == 2 || how == 4) {
          accepted = c.nack(tag, multiple, requeue, now);
        } else {
          accepted = c.reject(tag, requeue, now);
        }
        ASSERT_TRUE(accepted) << "tag " << tag;
        std::vector<std::uint64_t> still;
        for (std::uint64_t t : undecided) {
          if (t == tag || (multiple && t < tag)) {
            chosen[t] = outcome;
          } else {
            still.push_back(t);
          }
        }
        undecided.swap(still);
        // A decision is never taken twice.
        ASSERT_FALSE(c.ack(tag, false, now));
      } else {
        now += std::chrono::microseconds(rng() % 40);
        c.poll(now, out);
        send();
      }
      ASSERT_LE(c.held(), c.unsettled());
    }
    c.flush(out);
    send();
    ASSERT_EQ(broker.unacked(), 0u) << "round " << round;
    ASSERT_EQ(c.unsettled(), 0u);
    ASSERT_EQ(broker.settled(), chosen) << "round " << round;
  }
}

}  // namespace
}  // namespace warren::protocol
