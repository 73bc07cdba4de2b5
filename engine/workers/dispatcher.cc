#include "engine/workers/dispatcher.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <tbb/global_control.h>
#include <tbb/info.h>
#include <tbb/task_arena.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <thread>
#include <vector>

namespace warren::workers {

namespace {

// Items a mailbox handles before it goes to the back of the ready FIFO, so that one busy mailbox
// does not hold a worker while others wait.
constexpr std::size_t batch = 256;

unsigned resolve(unsigned threads) {
  if (threads != 0) return threads;
  const unsigned hardware = std::thread::hardware_concurrency();
  return hardware ? hardware : 1;
}

// std::atomic<uint32_t>::wait would do, but libstdc++ spins and calls sched_yield before it sleeps,
// which is what this pool exists to avoid.
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected,
            nullptr, nullptr, 0);
}

void futex_wake_one(std::atomic<std::uint32_t>& word) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, 1, nullptr,
            nullptr, 0);
}

// TBB's process-wide thread limit, raised by the threads of every TBB-hosted pool alive: each
// pool's loops hold their TBB workers for the pool's lifetime, so they come on top of the workers
// the rest of the process would have. One global_control for all pools: with several, TBB applies
// the smallest, so per-pool controls could not add up.
class tbb_reservation {
 public:
  explicit tbb_reservation(unsigned threads) : threads_(threads) { change(int(threads)); }
  ~tbb_reservation() { change(-int(threads_)); }
  tbb_reservation(const tbb_reservation&) = delete;
  tbb_reservation& operator=(const tbb_reservation&) = delete;

 private:
  static void change(int delta) {
    static std::mutex mutex;
    static unsigned reserved = 0;
    static std::unique_ptr<tbb::global_control> control;
    std::lock_guard<std::mutex> lock(mutex);
    reserved = unsigned(int(reserved) + delta);
    control.reset();
    if (reserved == 0) return;
    // TBB runs (limit - 1) workers, the application's thread being the one more: this leaves the
    // default_concurrency() - 1 workers that TBB code elsewhere in the process would have, and
    // adds one per pool thread.
    const std::size_t wanted = std::size_t(tbb::info::default_concurrency()) + reserved;
    if (tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism) >= wanted) {
      return;  // a larger limit (the application's) already holds
    }
    control =
        std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, wanted);
  }

  unsigned threads_;
};

// The ready FIFO's storage, under the pool's mutex: a ring that only grows, so that steady-state
// hand-offs allocate nothing.
class ready_ring {
 public:
  ready_ring() : slots_(64) {}
  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  void push(std::shared_ptr<detail::mailbox_core>&& core) {
    if (size_ == slots_.size()) grow();
    slots_[(head_ + size_) & (slots_.size() - 1)] = std::move(core);
    ++size_;
  }
  std::shared_ptr<detail::mailbox_core> pop() noexcept {
    std::shared_ptr<detail::mailbox_core> core = std::move(slots_[head_]);
    head_ = (head_ + 1) & (slots_.size() - 1);
    --size_;
    return core;
  }

 private:
  void grow() {
    std::vector<std::shared_ptr<detail::mailbox_core>> bigger(slots_.size() * 2);
    for (std::size_t i = 0; i < size_; ++i) {
      bigger[i] = std::move(slots_[(head_ + i) & (slots_.size() - 1)]);
    }
    slots_.swap(bigger);
    head_ = 0;
  }

  std::vector<std::shared_ptr<detail::mailbox_core>> slots_;  // a power of two
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace

struct worker_pool::impl {
  impl(unsigned threads, hosting where) : how(where), slots(threads) { idle.reserve(threads); }

  // A worker's loop: take the oldest ready mailbox and run it; when there is none, park until a
  // submit (or the hand-on of another worker) claims this one.
  void work(unsigned self) noexcept;
  // Under mutex: when the ready mailboxes outnumber the workers already waking up, claims the most
  // recently parked worker (its cache is the warmest) for the caller to wake, and counts it as
  // waking.
  std::optional<unsigned> claim_if_needed() noexcept;
  void wake(unsigned worker) noexcept { futex_wake_one(slots[worker].word); }
  void run(std::shared_ptr<detail::mailbox_core>& core) noexcept;
  void start(unsigned n);
  // Stops the loops and waits until none touches the pool any more.
  void stop_all() noexcept;

  struct slot {
    // 0 while parked; set to 1 under the mutex by whoever claims the worker.
    alignas(64) std::atomic<std::uint32_t> word{1};
  };

  const hosting how;
  std::mutex mutex;
  // Under mutex.
  ready_ring ready;
  std::vector<unsigned> idle;  // parked workers, the last parked at the back
  unsigned waking = 0;         // claimed workers that have not yet taken a mailbox or parked
  bool stop = false;
  // Not under mutex.
  std::vector<slot> slots;
  // hosting::tbb: loops not yet returned; a loop's decrement is its last touch of the pool.
  std::atomic<unsigned> live{0};
  std::optional<tbb_reservation> reservation;
  std::optional<tbb::task_arena> arena;
  std::vector<std::thread> threads;  // hosting::threads
};

std::optional<unsigned> worker_pool::impl::claim_if_needed() noexcept {
  if (ready.size() <= waking || idle.empty()) return std::nullopt;
  const unsigned worker = idle.back();
  idle.pop_back();
  ++waking;
  slots[worker].word.store(1, std::memory_order_release);
  return worker;
}

void worker_pool::impl::run(std::shared_ptr<detail::mailbox_core>& core) noexcept {
  for (;;) {
    bool again;
    if (how == hosting::tbb) {
      // Without isolation, a handler waiting inside TBB (task_group::wait, say) could pick up a
      // worker loop not yet started, which would not return until the pool goes.
      again = tbb::this_task_arena::isolate([&] { return core->run(); });
    } else {
      again = core->run();
    }
    if (!again) return;
    std::unique_lock<std::mutex> lock(mutex);
    try {
      // No wake-up here: this worker is back at the FIFO at once, and if it takes another mailbox
      // first, its hand-on in work() wakes a worker for this one.
      ready.push(std::move(core));
      return;
    } catch (...) {
      // The FIFO could not grow: keep running this mailbox here.
    }
  }
}

void worker_pool::impl::work(unsigned self) noexcept {
  std::unique_lock<std::mutex> lock(mutex);
  bool claimed = false;  // this worker is counted in `waking`
  for (;;) {
    if (!ready.empty()) {
      std::shared_ptr<detail::mailbox_core> core = ready.pop();
      if (claimed) {
        --waking;
        claimed = false;
      }
      // Hand-on: more is ready than the workers on their way can take, so one more gets up. Each
      // woken worker does the same, so a backlog of mailboxes wakes workers one at a time, and a
      // lone mailbox wakes nobody.
      const std::optional<unsigned> next = claim_if_needed();
      lock.unlock();
      if (next) wake(*next);
      run(core);
      core.reset();  // before the lock: a mailbox's last reference may go here
      lock.lock();
      continue;
    }
    if (stop) break;
    if (claimed) {
      --waking;
      claimed = false;
    }
    // Park. Under the mutex, so a submit either came before the check above (and its mailbox was
    // seen) or finds this worker in `idle` and claims it: no lost wake-up.
    slots[self].word.store(0, std::memory_order_relaxed);
    idle.push_back(self);
    lock.unlock();
    while (slots[self].word.load(std::memory_order_acquire) == 0) futex_wait(slots[self].word, 0);
    lock.lock();
    claimed = true;
  }
}

void worker_pool::impl::start(unsigned n) {
  if (how == hosting::threads) {
    threads.reserve(n);
    for (unsigned i = 0; i < n; ++i) threads.emplace_back([this, i] { work(i); });
    return;
  }
  reservation.emplace(n);
  // Every slot is for workers: no external thread joins the arena.
  arena.emplace(int(n), 0);
  arena->initialize();
  for (unsigned i = 0; i < n; ++i) {
    live.fetch_add(1, std::memory_order_relaxed);
    try {
      arena->enqueue([this, i] {
        work(i);
        live.fetch_sub(1, std::memory_order_release);
      });
    } catch (...) {
      live.fetch_sub(1, std::memory_order_relaxed);
      throw;
    }
  }
}

void worker_pool::impl::stop_all() noexcept {
  std::vector<unsigned> parked;
  {
    std::lock_guard<std::mutex> lock(mutex);
    stop = true;
    parked.swap(idle);
    for (unsigned w : parked) slots[w].word.store(1, std::memory_order_release);
  }
  for (unsigned w : parked) wake(w);
  for (std::thread& t : threads) t.join();
  // Loops TBB has not started yet start, see `stop` and return. Waiting on the counter (not on a
  // condition variable the loop would signal afterwards) is what makes freeing the pool safe.
  for (unsigned spins = 0; live.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
}

worker_pool::worker_pool(unsigned threads, hosting where)
    : size_(resolve(threads)), impl_(std::make_unique<impl>(size_, where)) {
  try {
    impl_->start(size_);
  } catch (...) {
    impl_->stop_all();  // the loops already started
    throw;
  }
}

worker_pool::~worker_pool() {
  impl_->stop_all();
}

void worker_pool::submit(std::shared_ptr<detail::mailbox_core> core) {
  impl& p = *impl_;
  std::optional<unsigned> worker;
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    p.ready.push(std::move(core));
    // The syscall is made after unlocking, so the woken worker does not run into the held mutex.
    worker = p.claim_if_needed();
  }
  if (worker) p.wake(*worker);
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
  // Counted after the enqueue: a worker that sees the count also sees the items.
  const std::int64_t before = queued_.fetch_add(std::int64_t(n));
  if (concurrency_ == 1) {
    // Only the move from <= 0 to > 0 needs the pool: otherwise the worker on this mailbox will see
    // the count when it subtracts its batch.
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

bool mailbox_core::run() noexcept {
  return concurrency_ == 1 ? run_one_at_a_time() : run_concurrently();
}

bool mailbox_core::run_one_at_a_time() noexcept {
  for (;;) {
    const std::size_t n = handle_some(batch);
    if (n != 0) {
      handled_.fetch_add(n);
      notify_drainers();
    }
    // The producer's count of every item it enqueued before counting is visible from here on
    // (read-modify-writes of one atomic), so > 0 means items this worker can dequeue.
    const std::int64_t left = queued_.fetch_sub(std::int64_t(n)) - std::int64_t(n);
    if (left <= 0) return false;  // from here on a producer's post submits the mailbox again
    if (n == batch) return true;  // to the back of the FIFO, so that other mailboxes get a worker
  }
}

bool mailbox_core::run_concurrently() noexcept {
  for (;;) {
    const std::size_t n = handle_some(batch);
    if (n != 0) {
      handled_.fetch_add(n);
      notify_drainers();
    }
    if (n == batch) return true;  // keeps the slot
    running_.fetch_sub(1);
    // The lost wake-up: a producer that enqueued while this worker was finding the queue empty saw
    // every slot taken and submitted nothing. Its count is visible here (both sides are seq_cst),
    // so this worker takes a slot back and handles it.
    if (queued_.load() <= 0 || !try_start()) return false;
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
