#include "engine/protocol/ack_coalescer.h"

#include <algorithm>
#include <bit>

namespace warren::protocol {

namespace {

constexpr std::size_t initial_ring = 256;

}  // namespace

ack_coalescer::ack_coalescer(ack_coalescer_options options)
    : options_(options), ring_(initial_ring, none), mask_(initial_ring - 1) {}

void ack_coalescer::grow(std::uint64_t needed) {
  std::vector<std::uint8_t> bigger(std::bit_ceil(needed), none);
  const std::uint64_t bigger_mask = bigger.size() - 1;
  for (std::uint64_t tag = base_; tag <= last_; ++tag) bigger[tag & bigger_mask] = at(tag);
  ring_.swap(bigger);
  mask_ = bigger_mask;
}

void ack_coalescer::on_delivery(std::uint64_t tag, bool needs_ack) {
  if (tag <= last_) return;
  if (base_ > last_) {
    // Nothing owed: restart the ring at this tag, whatever the jump.
    base_ = tag;
    if (gap_ < tag) gap_ = tag;
  } else if (tag - last_ > max_tag_jump) {
    return;  // no broker numbers this way: owed nothing, rather than a ring the size of the jump
  } else if (tag - base_ >= ring_.size()) {
    grow(tag - base_ + 1);
  }
  // Tags skipped (never seen) are owed nothing. Only those in the ring: after a restart there
  // are none, however far the tag jumped.
  for (std::uint64_t skipped = std::max(last_ + 1, base_); skipped < tag; ++skipped) {
    at(skipped) = none;
  }
  at(tag) = needs_ack ? undecided : none;
  last_ = tag;
  if (needs_ack) ++unsettled_;
  advance_gap();
  advance_base();
}

void ack_coalescer::hold(std::uint64_t tag, state decision) noexcept {
  at(tag) = decision;
  ++held_;
}

bool ack_coalescer::decide(std::uint64_t tag, bool multiple, state decision, time_point now) {
  const std::size_t held_before = held_;
  if (multiple) {
    const std::uint64_t upto = tag == 0 ? last_ : tag;
    if (upto > last_ || gap_ > upto) return false;
    if (held_ == 0) held_since_ = now;
    // Everything below gap_ is decided already, so the walk starts there.
    for (std::uint64_t t = gap_; t <= upto; ++t) {
      if (at(t) == undecided) hold(t, decision);
    }
    gap_ = upto + 1;
    advance_gap();
  } else {
    if (tag < base_ || tag > last_ || at(tag) != undecided) return false;
    if (held_ == 0) held_since_ = now;
    hold(tag, decision);
    if (tag == gap_) {
      advance_gap();
    } else {
      above_gap_.push_back(tag);
    }
  }
  // Reaching max_count makes everything held due at once.
  if (held_before < options_.max_count && held_ >= options_.max_count) full_since_ = now;
  return true;
}

bool ack_coalescer::ack(std::uint64_t tag, bool multiple, time_point now) {
  return decide(tag, multiple, held_ack, now);
}

bool ack_coalescer::nack(std::uint64_t tag, bool multiple, bool requeue, time_point now) {
  return decide(tag, multiple, requeue ? held_nack_requeue : held_nack_drop, now);
}

bool ack_coalescer::reject(std::uint64_t tag, bool requeue, time_point now) {
  return decide(tag, false, requeue ? held_reject_requeue : held_reject_drop, now);
}

time_point ack_coalescer::next_deadline() const noexcept {
  if (held_ == 0) return time_point::max();
  if (held_ >= options_.max_count) return full_since_;
  if (held_since_ > time_point::max() - options_.max_delay) return time_point::max();
  return held_since_ + options_.max_delay;
}

void ack_coalescer::poll(time_point now, std::vector<ack_action>& out) {
  if (held_ != 0 && now >= next_deadline()) flush(out);
}

namespace {

ack_action frame_for(std::uint8_t decision, std::uint64_t tag, bool multiple) {
  using kind = ack_action::kind;
  switch (decision) {
    case 3:  // held_nack_requeue
      return {kind::nack, tag, multiple, true};
    case 4:  // held_nack_drop
      return {kind::nack, tag, multiple, false};
    case 5:  // held_reject_requeue
      return {kind::reject, tag, false, true};
    case 6:  // held_reject_drop
      return {kind::reject, tag, false, false};
    default:
      return {kind::ack, tag, multiple, false};
  }
}

}  // namespace

void ack_coalescer::flush(std::vector<ack_action>& out) {
  if (held_ == 0) return;
  // Below gap_ every tag is decided or owed nothing, so one multiple frame may cover a run of
  // equal decisions (and the tags owed nothing between them). A reject cannot be multiple and
  // ends the run; so does a different decision, whose frame then follows the run's.
  std::uint8_t run = none;
  std::uint64_t run_last = 0;
  std::size_t run_count = 0;
  auto end_run = [&] {
    if (run_count != 0) out.push_back(frame_for(run, run_last, run_count > 1));
    run = none;
    run_count = 0;
  };
  for (std::uint64_t tag = base_; tag < gap_; ++tag) {
    const std::uint8_t decision = at(tag);
    if (decision == none) continue;
    at(tag) = none;
    --held_;
    --unsettled_;
    if (decision == held_reject_requeue || decision == held_reject_drop) {
      end_run();
      out.push_back(frame_for(decision, tag, false));
      continue;
    }
    if (decision != run) end_run();
    run = decision;
    run_last = tag;
    ++run_count;
  }
  end_run();
  base_ = gap_;
  // Above the gap the broker still holds an undecided delivery below each tag: single frames.
  std::sort(above_gap_.begin(), above_gap_.end());
  for (std::uint64_t tag : above_gap_) {
    if (tag <= gap_ || tag > last_) continue;
    const std::uint8_t decision = at(tag);
    if (decision == none || decision == undecided) continue;
    at(tag) = none;
    --held_;
    --unsettled_;
    out.push_back(frame_for(decision, tag, false));
  }
  above_gap_.clear();
  advance_base();
}

void ack_coalescer::reset() {
  base_ = 1;
  last_ = 0;
  gap_ = 1;
  above_gap_.clear();
  unsettled_ = 0;
  held_ = 0;
}

void ack_coalescer::advance_gap() noexcept {
  while (gap_ <= last_ && at(gap_) != undecided) ++gap_;
}

void ack_coalescer::advance_base() noexcept {
  while (base_ <= last_ && at(base_) == none) ++base_;
}

}  // namespace warren::protocol
