// The replies one channel waits for, sans-I/O: a FIFO of the reply ids of the calls sent on it.
//
// AMQP 0-9-1 answers a channel's synchronous methods in the order they were sent, so the oldest
// expectation owns the next reply. One rule for a call that gives up (a timeout, an error raised
// while it waited): its expectation keeps its place (abandon), and its reply, when it comes, is
// consumed and dropped (take() says `dropped`), so it can never answer a later call. What a late
// reply still does to the channel (a late basic.consume-ok's consumer is cancelled, a late
// basic.get-ok's message is given back) is the channel core's business; whether a face also
// closes the channel when a call times out is that face's policy.
//
// No threads, no clock. Threading: one thread at a time (the channel's owner). Cost: a deque entry
// per call; calls are not per message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <utility>

#include "engine/protocol/connection_machine.h"

namespace warren::protocol {

// Why a channel's life ended, as its waits and confirms are told.
enum class end_cause : std::uint8_t {
  closed_by_client,  // our channel.close completed (close-ok), or we gave up on the channel
  closed_by_peer,    // the broker closed the channel (channel.close)
  connection_lost,   // the connection ended (any reason, a client close included)
};

// A call waiting for its reply, as the face implements it (a promise, a slot a blocking wait
// polls). Per call, not per message: the virtual calls and the allocation are not on a hot path.
class reply_waiter {
 public:
  virtual ~reply_waiter() = default;
  // The reply, inside the receive path. Its views live until this returns: keep the command
  // (it holds its buffers) or copy what is needed.
  virtual void on_reply(command& reply) = 0;
  // The channel's life ended before the reply came.
  virtual void on_failed(end_cause cause, const close_reason& why) = 0;
};

// `Effect` is what the reply does to the channel besides answering the call (the channel core's
// bookkeeping); it travels with the expectation and comes back from take() and fail_all().
template <class Effect>
class reply_expectations {
 public:
  struct entry {
    std::uint32_t reply_id = 0;
    std::uint32_t alt_reply_id = 0;  // 0, or a second reply that answers too (basic.get-empty)
    std::shared_ptr<reply_waiter> waiter;  // null once abandoned
    bool abandoned = false;
    Effect effect{};

    bool answered_by(std::uint32_t id) const noexcept {
      return id == reply_id || (alt_reply_id != 0 && id == alt_reply_id);
    }
  };

  enum class match : std::uint8_t {
    none,      // the oldest expectation is not answered by this id (or there is none)
    answered,  // the oldest expectation was answered; its waiter is in `out`
    dropped,   // the oldest expectation was abandoned: the reply is consumed, nobody is told
  };

  // A call whose reply is `reply_id` (or `alt_reply_id`) has just been queued for the wire.
  // Expectations must be pushed in the order their methods reach the wire.
  void push(std::uint32_t reply_id, std::shared_ptr<reply_waiter> waiter, Effect effect = {},
            std::uint32_t alt_reply_id = 0) {
    entry& e = fifo_.emplace_back();
    e.reply_id = reply_id;
    e.alt_reply_id = alt_reply_id;
    e.waiter = std::move(waiter);
    e.effect = std::move(effect);
  }

  // A reply with method id `id` arrived. Pops the oldest expectation into `out` when `id`
  // answers it; otherwise changes nothing (the reply answers no call: ignore it).
  match take(std::uint32_t id, entry& out) {
    if (fifo_.empty() || !fifo_.front().answered_by(id)) return match::none;
    out = std::move(fifo_.front());
    fifo_.pop_front();
    return out.abandoned ? match::dropped : match::answered;
  }

  // The call of `waiter` gives up: its expectation stays in line, and its reply will be dropped.
  // The waiter is released at once (it is told nothing more). False when `waiter` has no
  // expectation here (already answered or failed).
  bool abandon(const reply_waiter* waiter) noexcept {
    for (entry& e : fifo_) {
      if (!e.abandoned && e.waiter.get() == waiter) {
        e.abandoned = true;
        e.waiter.reset();
        return true;
      }
    }
    return false;
  }

  // The channel's life ended: pops every expectation, oldest first, into `f(entry&)`. `f` may
  // push new expectations (a new life); they are kept.
  template <class F>
  void fail_all(F&& f) {
    std::deque<entry> ended;
    ended.swap(fifo_);
    for (entry& e : ended) f(e);
  }

  bool empty() const noexcept { return fifo_.empty(); }
  std::size_t size() const noexcept { return fifo_.size(); }
  // Expectations whose caller still waits (not abandoned).
  std::size_t waiting() const noexcept {
    std::size_t n = 0;
    for (const entry& e : fifo_) n += e.abandoned ? 0 : 1;
    return n;
  }

 private:
  std::deque<entry> fifo_;
};

}  // namespace warren::protocol
