// An I/O thread: one event loop (engine/io/event_loop.h) for the connections assigned to it, run
// as an agent. Each round it waits until a socket is ready, a task or a delivery decision is
// queued, a staged publish waits, or the earliest timer of its connections is due; then it lets
// each connection read, runs the queued tasks, applies the decisions, and services every
// connection (timers, writes, teardown).
//
// Wake-ups. Other threads queue work (post, post_ack, a publish into an empty staging) and call
// wake(), which writes the loop's eventfd only while the thread may sleep: from the start of a
// round's check to the end of its wait (one write per wake-up, not per item). Work queued before
// the check is seen by it; work queued after it finds the flag down and writes.
//
// Threading: post, run_and_wait, post_ack and wake from any thread (run_and_wait not from this
// thread); everything else on this thread.
#pragma once

#include <concurrentqueue/concurrentqueue.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "engine/async/engine.h"
#include "engine/buffer.h"
#include "engine/io/event_loop.h"
#include "engine/protocol/time.h"

namespace warren::async::detail {

class channel_impl;
class connection_impl;

// A delivery decision, routed from any thread to the channel's I/O thread.
struct ack_request {
  enum class kind : std::uint8_t { ack, nack, reject, idle };
  std::shared_ptr<channel_impl> ch;
  std::uint64_t tag = 0;
  std::uint32_t life = 0;  // the channel's life the delivery came from
  kind what = kind::ack;
  bool multiple = false;
  bool requeue = false;
};

class io_thread {
 public:
  explicit io_thread(const engine_options& o);
  ~io_thread();
  io_thread(const io_thread&) = delete;
  io_thread& operator=(const io_thread&) = delete;

  // The I/O thread the caller runs on, or null.
  static io_thread* current() noexcept;
  bool on_this_thread() const noexcept { return current() == this; }

  // Any thread -----------------------------------------------------------------------------------
  void post(std::function<void()> f) {
    tasks_.enqueue(std::move(f));
    wake();
  }
  // Runs `f` on this thread and waits until it has run (not from this thread).
  void run_and_wait(const std::function<void()>& f);
  void post_ack(ack_request&& r) {
    acks_.enqueue(std::move(r));
    wake();
  }
  void wake() noexcept {
    if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) loop_.wake();
  }
  // Stops the loop once its connections are gone (they are closed first) and joins it.
  void stop();

  // This thread ----------------------------------------------------------------------------------
  rx_pool& pool() noexcept { return pool_; }
  io::event_loop& loop() noexcept { return loop_; }
  void add(std::shared_ptr<connection_impl> c);
  // Applies the decisions queued so far to their channels and sends those due. Also called
  // before a call, so that a decision made before it goes first.
  void apply_acks(protocol::time_point now);

 private:
  void run();
  // The earliest timer of the connections, or min() when work waits.
  protocol::time_point next_deadline() const;

  io::event_loop loop_;
  rx_pool pool_;
  std::vector<std::shared_ptr<connection_impl>> conns_;
  moodycamel::ConcurrentQueue<std::function<void()>> tasks_;
  moodycamel::ConcurrentQueue<ack_request> acks_;
  std::atomic<bool> wake_pending_{false};
  std::atomic<bool> stop_{false};
  std::vector<std::shared_ptr<channel_impl>> touched_;  // kept alive until their acks are sent
  std::thread thread_;
};

}  // namespace warren::async::detail
