#include "engine/workers/dispatcher.h"

#include <tbb/global_control.h>
#include <tbb/task_arena.h>

#include <chrono>
#include <thread>

namespace warren::workers {

namespace {

// Items a task handles before it goes to the back of the pool's queue, so that one busy mailbox
// does not hold a worker while others wait.
constexpr std::size_t batch = 256;

unsigned resolve(unsigned threads) {
  if (threads != 0) return threads;
  const unsigned hardware = std::thread::hardware_concurrency();
  return hardware ? hardware : 1;
}

// TBB sizes its process-wide worker pool for the hardware less one thread (kept for the
// application's own thread), which would leave the arena short on a small machine.
std::unique_ptr<tbb::global_control> raise_limit(unsigned threads) {
  const std::size_t wanted = std::size_t(threads) + 1;
  if (tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism) >= wanted) {
    return nullptr;
  }
  return std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                               wanted);
}

}  // namespace

struct worker_pool::impl {
  // Every slot is for workers: no external thread joins the arena.
  explicit impl(unsigned threads) : control(raise_limit(threads)), arena(int(threads), 0) {
    arena.initialize();
  }

  std::unique_ptr<tbb::global_control> control;
  tbb::task_arena arena;
  std::atomic<std::size_t> in_flight{0};
};

worker_pool::worker_pool(unsigned threads)
    : size_(resolve(threads)), impl_(std::make_unique<impl>(size_)) {}

worker_pool::~worker_pool() {
  // A task's last touch of the pool is its in_flight decrement, so waiting on the counter (not on
  // a condition variable the task would have to signal afterwards) is what makes this safe.
  for (unsigned spins = 0; impl_->in_flight.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
}

void worker_pool::submit(std::shared_ptr<detail::mailbox_core> core) {
  // TBB calls the functor as const; the reference is dropped before the in_flight decrement so
  // that a mailbox's last reference never outlives the pool's wait.
  struct task {
    mutable std::shared_ptr<detail::mailbox_core> core;
    std::atomic<std::size_t>* in_flight;
    void operator()() const {
      core->run();
      core.reset();
      in_flight->fetch_sub(1, std::memory_order_release);
    }
  };
  impl_->in_flight.fetch_add(1, std::memory_order_relaxed);
  try {
    impl_->arena.enqueue(task{std::move(core), &impl_->in_flight});
  } catch (...) {
    impl_->in_flight.fetch_sub(1, std::memory_order_relaxed);
    throw;
  }
}

namespace detail {

mailbox_core::mailbox_core(worker_pool& pool, unsigned concurrency,
                           std::function<void(std::exception_ptr)> on_error)
    : pool_(pool), concurrency_(concurrency ? concurrency : 1), on_error_(std::move(on_error)) {}

mailbox_core::~mailbox_core() = default;

bool mailbox_core::try_start() noexcept {
  unsigned running = running_.load();
  do {
    if (running >= concurrency_) return false;
  } while (!running_.compare_exchange_weak(running, running + 1));
  return true;
}

void mailbox_core::posted(std::size_t n) {
  // One producer: a plain increment, readable by pending() from any thread.
  posted_.store(posted_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  // Counted after the enqueue: a task that sees the count also sees the items.
  const std::int64_t before = queued_.fetch_add(std::int64_t(n));
  if (concurrency_ == 1) {
    // Only the move from <= 0 to > 0 needs a task: otherwise the running one will see the count
    // when it subtracts its batch.
    if (before > 0 || before + std::int64_t(n) <= 0) return;
    pool_.submit(shared_from_this());
    return;
  }
  if (!try_start()) return;
  try {
    pool_.submit(shared_from_this());
  } catch (...) {
    running_.fetch_sub(1);
    throw;
  }
}

std::size_t mailbox_core::pending() const noexcept {
  const std::uint64_t handled = handled_.load(std::memory_order_relaxed);
  const std::uint64_t posted = posted_.load(std::memory_order_relaxed);
  return posted > handled ? std::size_t(posted - handled) : 0;
}

void mailbox_core::notify_drainers() noexcept {
  if (drain_waiters_.load() == 0) return;
  // Under the mutex: a drainer between its check and its wait cannot miss this.
  std::lock_guard<std::mutex> lock(drain_mutex_);
  drained_.notify_all();
}

void mailbox_core::run() noexcept {
  if (concurrency_ == 1) {
    run_one_at_a_time();
  } else {
    run_concurrently();
  }
}

void mailbox_core::run_one_at_a_time() noexcept {
  for (;;) {
    const std::size_t n = handle_some(batch);
    if (n != 0) {
      handled_.fetch_add(n);
      notify_drainers();
    }
    // The producer's count of every item it enqueued before counting is visible from here on
    // (read-modify-writes of one atomic), so > 0 means items this task can dequeue.
    const std::int64_t left = queued_.fetch_sub(std::int64_t(n)) - std::int64_t(n);
    if (left <= 0) return;  // from here on a producer's post starts a new task
    if (n == batch) {
      // Go to the back of the pool's queue, so that other mailboxes get a worker.
      try {
        pool_.submit(shared_from_this());
        return;
      } catch (...) {
        // Could not allocate the task: keep handling here.
      }
    }
  }
}

void mailbox_core::run_concurrently() noexcept {
  for (;;) {
    const std::size_t n = handle_some(batch);
    if (n != 0) {
      handled_.fetch_add(n);
      notify_drainers();
    }
    if (n == batch) {
      try {
        pool_.submit(shared_from_this());  // keeps the slot
        return;
      } catch (...) {
        continue;
      }
    }
    running_.fetch_sub(1);
    // The lost wake-up: a producer that enqueued while this task was finding the queue empty saw
    // every slot taken and started nobody. Its count is visible here (both sides are seq_cst), so
    // this task takes a slot back and handles it.
    if (queued_.load() <= 0 || !try_start()) return;
  }
}

void mailbox_core::drain() {
  const std::uint64_t target = posted_.load(std::memory_order_relaxed);
  if (handled_.load() >= target) return;
  drain_waiters_.fetch_add(1);
  {
    std::unique_lock<std::mutex> lock(drain_mutex_);
    drained_.wait(lock, [&] { return handled_.load() >= target; });
  }
  drain_waiters_.fetch_sub(1);
}

void mailbox_core::close() noexcept {
  // Only after drain: no handler runs, so nothing can call report().
  on_error_ = nullptr;
}

void mailbox_core::report(std::exception_ptr error) noexcept {
  if (!on_error_) {
    failures_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  try {
    on_error_(std::move(error));
  } catch (...) {
    failures_.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace detail

}  // namespace warren::workers
