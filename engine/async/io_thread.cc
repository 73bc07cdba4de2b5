#include "engine/async/io_thread.h"

#include <future>

#include "engine/async/channel_impl.h"
#include "engine/async/connection_impl.h"

namespace warren::async::detail {

using protocol::clock;
using protocol::time_point;

namespace {
thread_local io_thread* current_io = nullptr;
}  // namespace

io_thread* io_thread::current() noexcept {
  return current_io;
}

io_thread::io_thread(const engine_options& o) : pool_(o.rx_buffer_size, o.rx_pool_max) {
  thread_ = std::thread([this] { run(); });
}

io_thread::~io_thread() {
  stop();
}

void io_thread::stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  wake();
  thread_.join();
}

void io_thread::run_and_wait(const std::function<void()>& f) {
  std::promise<void> done;
  std::future<void> ran = done.get_future();
  post([&f, &done] {
    f();
    done.set_value();
  });
  ran.wait();
}

void io_thread::add(std::shared_ptr<connection_impl> c) {
  conns_.push_back(std::move(c));
}

time_point io_thread::next_deadline() const {
  if (tasks_.size_approx() != 0 || acks_.size_approx() != 0 || stop_.load()) {
    return time_point::min();
  }
  time_point deadline = time_point::max();
  for (const auto& c : conns_) {
    // A publish staged into an empty staging woke us, or will: take it this round.
    if (c->publish_pending()) return time_point::min();
    deadline = std::min(deadline, c->next_deadline());
  }
  return deadline;
}

void io_thread::run() {
  current_io = this;
  io::event_loop::event evs[64];
  std::function<void()> task;
  while (true) {
    // Producers write the eventfd only while this thread may sleep: from here to the end of the
    // wait. The exchange reads what a producer wrote with its own exchange, so work it queued
    // before (without writing the eventfd) is visible to the check in next_deadline(). stop() is
    // such a producer: a stop requested while this thread was busy wrote no eventfd.
    wake_pending_.exchange(false, std::memory_order_acq_rel);
    const int n = loop_.wait(evs, 64, next_deadline());
    wake_pending_.store(true, std::memory_order_relaxed);  // busy: no wake-up needed
    time_point now = clock::now();
    for (int i = 0; i < n; ++i) {
      static_cast<connection_impl*>(evs[i].tag)->on_event(evs[i].readable, evs[i].writable, now);
    }
    while (tasks_.try_dequeue(task)) {
      task();
      task = nullptr;
    }
    now = clock::now();
    apply_acks(now);
    for (auto& c : conns_) c->service(now);
    std::erase_if(conns_, [](const auto& c) { return c->finished(); });
    if (stop_.load() && conns_.empty()) break;
    if (stop_.load()) {
      for (auto& c : conns_) c->force_close("engine stopped");
    }
  }
  current_io = nullptr;
}

void io_thread::apply_acks(time_point now) {
  ack_request ack;
  while (acks_.try_dequeue(ack)) {
    if (ack.ch->apply(ack, now)) touched_.push_back(std::move(ack.ch));
    ack.ch.reset();
  }
  for (auto& ch : touched_) ch->send_due_acks(now);
  touched_.clear();
}

}  // namespace warren::async::detail
