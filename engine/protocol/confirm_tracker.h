// Publisher confirms for one channel, sans-I/O: which publishes the broker still owes an answer,
// and the one event each of them ends with.
//
// After confirm.select the broker numbers the channel's publishes 1, 2, 3, ... and answers each
// with basic.ack or basic.nack, `multiple` covering every tag up to the one given. This tracker
// hands out those numbers (on_publish), settles them (on_ack / on_nack), expires them (on_timer),
// correlates basic.return to them (on_return) and ends them all when the channel or connection
// goes (fail_all). Every publish registered ends in exactly one confirm_event.
//
// No threads, no clock: `now` is an argument and must not go backwards from call to call.
// Threading: one thread at a time (in the engine, the channel's I/O thread).
//
// Cost: O(1) per publish and per single ack, O(settled) per multiple ack, no allocation per
// publish once the ring exists (a mandatory publish reuses the capacity of its slot's strings).
// The ring is indexed by sequence and sized to the window, so the window counts the span from
// the oldest publish the broker has not answered to the newest: a publish that timed out keeps
// its slot until the broker answers it or the channel goes, so a stalled broker also stalls new
// publishes (which is the back-pressure wanted).
//
// Return correlation and its residual ambiguity: basic.return carries no sequence number.
// RabbitMQ routes a channel's publishes in order and sends a publish's return before its ack, so
// the return is attributed to the OLDEST publish that is mandatory, still unanswered, not already
// returned, and has the same exchange and routing key. With unchanged bindings, publishes to the
// same route route the same way, so the attribution is exact. If bindings change between two
// outstanding mandatory publishes to the same route (the first routed, the second not), the
// second's return is attributed to the first: the first's event says `returned` and the second's
// does not. Nothing on the wire can tell the two apart; a caller that needs certainty waits for
// the confirm of one publish before sending the next to that route.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/protocol/time.h"

namespace warren::protocol {

struct confirm_tracker_options {
  // Most publishes awaiting an answer (see the window note above); 0 is taken as 1.
  std::size_t window = 1000;
  // A publish not answered this long after on_publish ends with confirm_outcome::timeout at the
  // next on_timer. 0: never.
  std::chrono::nanoseconds timeout{0};
};

enum class confirm_outcome : std::uint8_t {
  ack,      // the broker took responsibility (basic.ack)
  nack,     // the broker could not (basic.nack)
  timeout,  // no answer within confirm_tracker_options::timeout; a late answer is ignored
  // fail_all: the connection went before the answer, so nobody knows whether the broker has the
  // message (it may have stored it and lost only the ack). Never a nack: a nack is the broker
  // refusing the message.
  in_doubt,
  channel_closed,  // fail_all: the channel was closed before the answer
};

// One per publish, exactly once. The views are valid only during the completion call.
struct confirm_event {
  std::uint64_t sequence = 0;  // the publish sequence number (delivery tag of the confirm)
  std::uint64_t token = 0;     // the caller's token given to on_publish
  confirm_outcome outcome = confirm_outcome::ack;
  bool returned = false;  // a basic.return was correlated to this publish (mandatory only)
  // From the return when `returned`, otherwise from fail_all's close (0 and empty for ack, nack
  // and timeout).
  std::uint16_t reply_code = 0;
  std::string_view reply_text;
  // The `now` given to on_publish (for publish-to-confirm latency; whatever clock the face used).
  time_point published{};
};

// Completion callbacks are any callable `void(const confirm_event&)`; they are templates so no
// std::function is built per message. A completion may call on_publish (to refill the window;
// not from fail_all's completions, whose publishes fail_all would not end); it must not call
// on_ack, on_nack, on_timer, fail_all or reset.
class confirm_tracker {
 public:
  explicit confirm_tracker(confirm_tracker_options options = {});

  // The window is full: on_publish would return 0.
  bool full() const noexcept { return next_ - base_ >= window_; }
  std::size_t window() const noexcept { return window_; }
  // Publishes registered and not yet ended (timed-out ones are ended, though they keep a slot).
  std::size_t outstanding() const noexcept { return outstanding_; }
  // The sequence the next on_publish will return (when the window is not full).
  std::uint64_t next_sequence() const noexcept { return next_; }

  // Registers the publish about to be written; returns its sequence number (1, 2, ...) or 0 when
  // the window is full (nothing registered). exchange/routing_key are copied only when
  // `mandatory` (for on_return) and need not outlive the call.
  std::uint64_t on_publish(std::uint64_t token, time_point now, bool mandatory = false,
                           std::string_view exchange = {}, std::string_view routing_key = {});

  // basic.return: marks the publish it is correlated to (see the header comment) as returned,
  // with this code and text, and returns its sequence; 0 when no outstanding mandatory publish
  // has this exchange and routing key (nothing changes). O(window) in the worst case: returns
  // are the exception path.
  std::uint64_t on_return(std::string_view exchange, std::string_view routing_key,
                          std::uint16_t reply_code, std::string_view reply_text);

  // basic.ack / basic.nack from the broker: calls `complete(const confirm_event&)` once per
  // publish settled, in sequence order. `multiple` settles every outstanding publish up to
  // `tag` (tag 0 with multiple: every one). An answer to a publish that already timed out is
  // accepted and ignored (no second completion).
  // Returns false, and settles nothing, for a tag above the last published sequence, or a
  // non-multiple tag that is not outstanding and was never timed out (tag 0, already settled):
  // the caller treats it as a protocol error (PRECONDITION_FAILED on the channel).
  template <class F>
  bool on_ack(std::uint64_t tag, bool multiple, F&& complete) {
    return settle(tag, multiple, confirm_outcome::ack, complete);
  }
  template <class F>
  bool on_nack(std::uint64_t tag, bool multiple, F&& complete) {
    return settle(tag, multiple, confirm_outcome::nack, complete);
  }

  // Completes, with confirm_outcome::timeout and in sequence order, every outstanding publish
  // whose deadline is at or before `now`.
  template <class F>
  void on_timer(time_point now, F&& complete);

  // The earliest deadline among outstanding publishes; time_point::max() when none (or no
  // timeout is configured).
  time_point next_deadline() const noexcept;

  // The connection was lost or the channel closed: completes every outstanding publish, in
  // sequence order, with `why` (in_doubt or channel_closed) and this code and text (a
  // returned publish keeps its return's code and text). Timed-out publishes are forgotten.
  template <class F>
  void fail_all(confirm_outcome why, std::uint16_t reply_code, std::string_view reply_text,
                F&& complete);

  // The connection was lost and its unconfirmed publishes are to be published again on the
  // recovered channel: calls `keep(const confirm_event&)` (outcome in_doubt, the publish's
  // sequence and token) for every outstanding publish, in sequence order, WITHOUT ending it, and
  // forgets them all; the caller registers each again with the new tracker (its token names it),
  // and that publish's eventual answer completes it. Timed-out publishes (already completed) are
  // forgotten.
  template <class F>
  void take_outstanding(F&& keep);

  // Forgets everything, without completions (call fail_all first), and restarts sequences at 1:
  // for a new confirm.select on a reopened channel.
  void reset();

 private:
  // Ends every outstanding publish with `why` in sequence order (a timed-out one is only
  // forgotten), handing each event to `each` before the next; fail_all and take_outstanding.
  template <class F>
  void end_outstanding(confirm_outcome why, F&& each);
  enum class slot_state : std::uint8_t { free, outstanding, timed_out };

  // 32 bytes: the hot path touches only this.
  struct slot {
    std::uint64_t sequence = 0;
    std::uint64_t token = 0;
    time_point published{};  // on_publish's `now`; the deadline is published + timeout
    slot_state state = slot_state::free;
    bool mandatory = false;
    bool returned = false;
    std::uint16_t reply_code = 0;
  };
  // Only for mandatory publishes; allocated on the first one.
  struct route {
    std::string exchange;
    std::string routing_key;
    std::string reply_text;
  };

  slot& at(std::uint64_t sequence) noexcept { return slots_[sequence & mask_]; }
  time_point deadline_of(const slot& s) const noexcept {
    // Saturate instead of overflowing for huge timeouts.
    if (timeout_.count() == 0 || s.published >= time_point::max() - timeout_) {
      return time_point::max();
    }
    return s.published + timeout_;
  }
  const slot& at(std::uint64_t sequence) const noexcept { return slots_[sequence & mask_]; }
  bool live(std::uint64_t sequence) const noexcept {
    const slot& s = at(sequence);
    return s.sequence == sequence && s.state != slot_state::free;
  }

  // Ends the slot's publish: fills `event`, moves the return text into `text` (the slot may be
  // reused by a publish from inside the completion), and frees the slot when `release`.
  void end(std::uint64_t sequence, confirm_outcome outcome, bool release, confirm_event& event,
           std::string& text) noexcept;
  // Frees a timed-out slot without an event.
  void forget(std::uint64_t sequence) noexcept;
  // Moves base_ past freed slots and timer_ past slots that are no longer outstanding.
  void advance() noexcept;

  template <class F>
  void complete_one(std::uint64_t sequence, confirm_outcome outcome, F& complete) {
    confirm_event event;
    std::string text;
    end(sequence, outcome, true, event, text);
    advance();
    complete(static_cast<const confirm_event&>(event));
  }

  template <class F>
  bool settle(std::uint64_t tag, bool multiple, confirm_outcome outcome, F& complete);

  std::size_t window_;
  std::chrono::nanoseconds timeout_;
  std::uint64_t mask_;
  std::vector<slot> slots_;
  std::vector<route> routes_;  // same indexing as slots_, empty until a mandatory publish
  std::uint64_t base_ = 1;     // oldest sequence whose slot is not free (next_ when none)
  std::uint64_t next_ = 1;     // next sequence to hand out
  std::uint64_t timer_ = 1;    // oldest outstanding sequence (next_ when none)
  std::size_t outstanding_ = 0;
  std::size_t unreturned_mandatory_ = 0;  // live, mandatory, not returned (on_return fast path)
};

template <class F>
bool confirm_tracker::settle(std::uint64_t tag, bool multiple, confirm_outcome outcome,
                             F& complete) {
  if (tag >= next_) return false;
  if (!multiple) {
    if (tag < base_ || !live(tag)) return false;
    if (at(tag).state == slot_state::timed_out) {
      forget(tag);
      advance();
      return true;
    }
    complete_one(tag, outcome, complete);
    return true;
  }
  const std::uint64_t last = tag == 0 ? next_ - 1 : tag;
  // base_ moves as slots are freed, so the loop reads it afresh; publishes made by a completion
  // get sequences above `last`, so they are never settled by this call.
  for (std::uint64_t sequence = base_; sequence <= last; ++sequence) {
    if (sequence < base_ || !live(sequence)) continue;
    if (at(sequence).state == slot_state::timed_out) {
      forget(sequence);
      advance();
      continue;
    }
    complete_one(sequence, outcome, complete);
  }
  return true;
}

template <class F>
void confirm_tracker::on_timer(time_point now, F&& complete) {
  while (timer_ < next_) {
    if (deadline_of(at(timer_)) > now) return;
    confirm_event event;
    std::string text;
    // The slot stays taken (timed_out) until the broker answers; end() moves timer_ on.
    end(timer_, confirm_outcome::timeout, false, event, text);
    advance();
    complete(static_cast<const confirm_event&>(event));
  }
}

template <class F>
void confirm_tracker::end_outstanding(confirm_outcome why, F&& each) {
  const std::uint64_t last = next_ - 1;
  for (std::uint64_t sequence = base_; sequence <= last; ++sequence) {
    if (sequence < base_ || !live(sequence)) continue;
    if (at(sequence).state == slot_state::timed_out) {
      forget(sequence);
      advance();
      continue;
    }
    confirm_event event;
    std::string text;
    end(sequence, why, true, event, text);
    advance();
    each(event);
  }
}

template <class F>
void confirm_tracker::fail_all(confirm_outcome why, std::uint16_t reply_code,
                               std::string_view reply_text, F&& complete) {
  end_outstanding(why, [&](confirm_event& event) {
    if (!event.returned) {
      event.reply_code = reply_code;
      event.reply_text = reply_text;
    }
    complete(static_cast<const confirm_event&>(event));
  });
}

template <class F>
void confirm_tracker::take_outstanding(F&& keep) {
  end_outstanding(confirm_outcome::in_doubt,
                  [&](confirm_event& event) { keep(static_cast<const confirm_event&>(event)); });
}

}  // namespace warren::protocol
