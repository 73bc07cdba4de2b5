// Consumer acknowledgements for one channel, sans-I/O: turns the application's per-delivery
// ack/nack/reject decisions into as few basic.ack/basic.nack/basic.reject frames as is safe.
//
// The rule everything here serves: the broker's basic.ack with multiple=true and tag T settles
// EVERY delivery <= T still unacknowledged on the channel. So a multiple frame may only span
// tags the application settled the same way, or tags the broker does not hold (no_ack
// deliveries, tags already settled on the wire). Decisions that arrive out of order wait for the
// gap to close so that one multiple frame covers them; when max_count or max_delay is reached
// with a gap still open, the contiguous prefix goes as one multiple frame and the rest as single
// frames. Consecutive nacks with the same requeue flag coalesce the same way; a reject is always
// its own frame. A nack or reject reaches the wire before any multiple frame spanning its tag.
//
// No threads, no clock: `now` is an argument. Threading: one thread at a time (in the engine, the
// channel's I/O thread; workers' decisions are routed to it).
//
// Cost: O(1) amortised per delivery and per decision; memory is one byte per tag from the oldest
// unsettled delivery to the newest, so a delivery a worker holds for long keeps the tags after
// it in memory (one byte each) until it is settled.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/protocol/time.h"

namespace warren::protocol {

struct ack_coalescer_options {
  // Decisions held before they are sent; 0 or 1: every decision goes at the next poll.
  std::uint32_t max_count = 64;
  // Longest a decision is held before it is sent.
  std::chrono::microseconds max_delay{1000};
};

// One frame to send: basic.ack (requeue unused), basic.nack, or basic.reject (multiple false).
struct ack_action {
  enum class kind : std::uint8_t { ack, nack, reject } what;
  std::uint64_t delivery_tag;
  bool multiple;
  bool requeue;
  friend bool operator==(const ack_action&, const ack_action&) = default;
};

class ack_coalescer {
 public:
  // The furthest a delivery tag may jump past the newest one while deliveries are owed (a broker
  // numbers a channel's deliveries one by one; the ring would otherwise take one octet per tag
  // skipped).
  static constexpr std::uint64_t max_tag_jump = std::uint64_t{1} << 16;

  explicit ack_coalescer(ack_coalescer_options options = {});

  // Every delivery on the channel, in order, including no_ack ones (which the broker does not
  // hold, so multiple frames may span them) and basic.get-ok ones. Tags must increase; a tag
  // that does not, or that jumps more than max_tag_jump past the newest while deliveries are
  // owed, is ignored (owed nothing: a decision on it is refused).
  void on_delivery(std::uint64_t tag, bool needs_ack);

  // The application's decision for `tag` (with `multiple`: for every delivery up to `tag` that
  // it has not decided yet; tag 0 with multiple: every delivery so far). Returns false, and
  // changes nothing, when the tag was never delivered, was a no_ack delivery, or was already
  // decided (for multiple: when no undecided delivery <= tag remains). The channel-level errors
  // the broker would raise for these are the caller's to report.
  bool ack(std::uint64_t tag, bool multiple, time_point now);
  bool nack(std::uint64_t tag, bool multiple, bool requeue, time_point now);
  bool reject(std::uint64_t tag, bool requeue, time_point now);

  // Appends the frames due at `now` (max_count reached, or the oldest held decision is
  // max_delay old), in the order they must be sent; appends nothing when none is due.
  void poll(time_point now, std::vector<ack_action>& out);
  // Appends every held decision as frames, now (before a channel close, basic.recover, or when
  // the caller wants no delay).
  void flush(std::vector<ack_action>& out);
  // When poll has something to send: time_point::max() when nothing is held; a time at or
  // before the last decision's `now` when max_count is reached.
  time_point next_deadline() const noexcept;

  // The channel closed: forgets every delivery and decision (the broker requeues what it held);
  // tags start again from any value.
  void reset();

  // Deliveries that need an ack and have not been settled on the wire (undecided or held).
  std::size_t unsettled() const noexcept { return unsettled_; }
  // Decisions held, not yet returned by poll/flush.
  std::size_t held() const noexcept { return held_; }

 private:
  // Per tag. `none`: nothing owed to the broker (no_ack, settled on the wire, or never seen).
  enum state : std::uint8_t {
    none,
    undecided,
    held_ack,
    held_nack_requeue,
    held_nack_drop,
    held_reject_requeue,
    held_reject_drop,
  };

  std::uint8_t& at(std::uint64_t tag) noexcept { return ring_[tag & mask_]; }
  void grow(std::uint64_t needed);
  void hold(std::uint64_t tag, state decision) noexcept;
  bool decide(std::uint64_t tag, bool multiple, state decision, time_point now);
  void advance_gap() noexcept;
  void advance_base() noexcept;

  ack_coalescer_options options_;
  std::vector<std::uint8_t> ring_;  // power of two; valid for tags in [base_, last_]
  std::uint64_t mask_;
  std::uint64_t base_ = 1;  // below: all none
  std::uint64_t last_ = 0;  // newest tag delivered
  std::uint64_t gap_ = 1;   // oldest undecided tag (last_ + 1 when none): multiples stop before it
  // Single decisions made above gap_ (single frames unless the gap closes first).
  std::vector<std::uint64_t> above_gap_;
  std::size_t unsettled_ = 0;
  std::size_t held_ = 0;
  time_point held_since_{};  // `now` of the oldest held decision
  time_point full_since_{};  // `now` when held_ reached max_count
};

}  // namespace warren::protocol
