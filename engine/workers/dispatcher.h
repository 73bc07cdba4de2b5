// The hand-off from I/O threads to worker threads: a pool of workers, and one mailbox per consumer
// through which an I/O thread hands that consumer's items (deliveries, completions) to the pool.
//
// A mailbox is a moodycamel ConcurrentQueue plus the atomic counts that decide when the mailbox
// must be made ready (see mailbox_core::queued_): posting never blocks, and only the post that
// finds the mailbox idle touches the pool. The pool keeps one FIFO of ready mailboxes; a worker
// takes one, handles up to a batch of its items, and puts it back at the end when more remain, so
// one busy consumer cannot starve the others.
//
// When workers sleep is the pool's decision, not TBB's: deliveries from a broker arrive in small
// batches, thousands of times a second, and a TBB worker that runs out of tasks spins and yields
// for a long while before it sleeps, taking the CPU the broker itself needs on a small machine. A
// pool worker that finds the FIFO empty parks at once on its own futex (measured: any spin before
// parking cost more CPU than the wake-ups it saved, see bench/RESULTS.md "Worker hand-off"). A
// submit wakes a parked worker only when the ready mailboxes outnumber the workers already waking
// up, so a post to a mailbox that a worker holds costs one atomic add and no wake-up at all.
//
// Exceptions: a handler's exception goes to the mailbox's on_error (or is counted and dropped);
// nothing escapes a worker thread.
#pragma once

#include <concurrentqueue/concurrentqueue.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <utility>

namespace warren::workers {

namespace detail {
class mailbox_core;
}

// Worker threads. By default they are TBB's: a tbb::task_arena of `threads` slots (0: the hardware
// concurrency) runs one long-lived worker loop per slot, and each loop parks on its own futex when
// idle, so TBB's scheduler never spins for it. The pool adds its threads to TBB's process-wide
// limit (tbb::global_control, while any pool lives), so the loops never take the workers of TBB
// code elsewhere in the process; a smaller limit set by the application still wins, and with too
// few workers some loops wait for a thread.
//
// hosting::threads runs the same loops on std::threads instead. It exists for ThreadSanitizer:
// Debian's libtbb is not instrumented and tests/tsan.supp hides every race with a libtbb frame on
// either stack, which is every access made on a TBB worker.
//
// A handler runs isolated (tbb::this_task_arena::isolate): a handler waiting on TBB work never
// picks up a worker loop. TBB algorithms a handler calls run on its thread alone: the arena's other
// threads are this pool's loops.
//
// Threading: construct and destroy on one thread; submit from any. Destroy every mailbox of the
// pool before the pool: the destructor stops the loops and waits for them.
class worker_pool {
 public:
  enum class hosting { tbb, threads };

  explicit worker_pool(unsigned threads = 0, hosting where = hosting::tbb);
  ~worker_pool();
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  unsigned size() const noexcept { return size_; }

  // For mailbox: queues core at the end of the ready FIFO, where a worker calls core->run().
  void submit(std::shared_ptr<detail::mailbox_core> core);

 private:
  struct impl;
  unsigned size_;
  std::unique_ptr<impl> impl_;
};

namespace detail {

// The scheduling half of a mailbox, independent of the item type. Shared with the ready FIFO and
// the worker running it, so a worker that is finishing never touches freed memory.
class mailbox_core : public std::enable_shared_from_this<mailbox_core> {
 public:
  mailbox_core(worker_pool& pool, unsigned concurrency,
               std::function<void(std::exception_ptr)> on_error);
  virtual ~mailbox_core();

  // Producer: `n` items were just enqueued; makes the mailbox ready when fewer than `concurrency`
  // workers hold it.
  void posted(std::size_t n);
  std::size_t pending() const noexcept;
  void drain();
  // Called on a worker after submit. Returns true when it handled a full batch and more remain:
  // the worker then puts it back at the end of the ready FIFO (it keeps its slot).
  bool run() noexcept;
  std::uint64_t failures() const noexcept { return failures_.load(std::memory_order_relaxed); }
  // After drain, before the owner goes: the error handler must not outlive the mailbox.
  void close() noexcept;

 protected:
  // Handles up to `max` items, calling dequeued(1) as each is taken off the queue, before it is
  // handled. Returns how many were handled.
  virtual std::size_t handle_some(std::size_t max) noexcept = 0;
  void dequeued(std::size_t n) noexcept {
    // concurrency 1 counts whole batches in run(); see queued_.
    if (concurrency_ != 1) queued_.fetch_sub(std::int64_t(n));
  }
  // A handler threw.
  void report(std::exception_ptr error) noexcept;

 private:
  bool try_start() noexcept;
  bool run_one_at_a_time() noexcept;
  bool run_concurrently() noexcept;
  // Wakes drain() callers, if any, after handled_ moved.
  void notify_drainers() noexcept;

  worker_pool& pool_;
  const unsigned concurrency_;
  std::function<void(std::exception_ptr)> on_error_;
  // The producer's line. posted_ is written by the producer only.
  alignas(64) std::atomic<std::uint64_t> posted_{0};
  // concurrency 1: items posted and not yet handled. The producer that moves it from <= 0 to
  // > 0 submits the mailbox; the worker running it subtracts each batch it handled and stops when
  // it reaches <= 0 (it may go below 0 for a moment: a worker can handle an item before the
  // producer has counted it). One atomic operation per post and one per batch, and no pool
  // traffic at all while a worker is already on the mailbox.
  // concurrency > 1: items enqueued and not yet dequeued (decremented per item as it is taken,
  // so a worker finding the queue empty never waits for another worker's slow handler).
  std::atomic<std::int64_t> queued_{0};
  // The workers' line.
  alignas(64) std::atomic<unsigned> running_{0};  // concurrency > 1: workers holding a slot
  std::atomic<std::uint64_t> handled_{0};
  std::atomic<std::uint64_t> failures_{0};
  std::atomic<unsigned> drain_waiters_{0};
  std::mutex drain_mutex_;
  std::condition_variable drained_;
};

}  // namespace detail

// One per consumer. Items posted by ONE thread at a time (the consumer's I/O thread), handled on
// the pool.
//
// concurrency 1: items are handled strictly in post order, never two at once. concurrency k > 1:
// up to k at once, in no particular order.
//
// T must be move-constructible (a mailbox of a type without a default constructor is fine). The
// handler runs on a worker thread; an exception from it goes to on_error (on a worker, with no
// lock held), or, without on_error, is dropped and counted in failures(). on_error must not
// throw (what it throws is dropped and counted). after_batch(n), when given, runs on the worker
// after each run of n >= 1 items it handled (thrown ones included), before drain() can see
// them handled: per-item bookkeeping done once per run. It must not throw.
template <class T>
class mailbox {
 public:
  using handler = std::function<void(T&)>;
  using error_handler = std::function<void(std::exception_ptr)>;
  using batch_handler = std::function<void(std::size_t)>;

  mailbox(worker_pool& pool, handler handle, unsigned concurrency = 1, error_handler on_error = {},
          batch_handler after_batch = {})
      : state_(std::make_shared<state>(pool, std::move(handle), concurrency ? concurrency : 1,
                                       std::move(on_error), std::move(after_batch))) {}
  mailbox(const mailbox&) = delete;
  mailbox& operator=(const mailbox&) = delete;

  // Producer thread only; never waits for a handler (a post that finds the mailbox idle takes the
  // pool's lock for a few instructions). Throws std::bad_alloc when the queue (or the ready FIFO)
  // cannot grow; the mailbox may then stall, as memory is gone anyway.
  void post(T&& item) {
    if (!state_->enqueue(std::move(item))) throw std::bad_alloc();
    state_->posted(1);
  }
  // Moves n items from first (enqueue_bulk). Producer thread only; never blocks.
  template <class It>
  void post_bulk(It first, std::size_t n) {
    if (n == 0) return;
    if (!state_->enqueue_bulk(std::make_move_iterator(first), n)) throw std::bad_alloc();
    state_->posted(n);
  }

  // Posted and not yet handled (approximate while workers run).
  std::size_t pending() const noexcept { return state_->pending(); }
  // Blocks until every item posted before the call is handled. Not on a worker of the pool (it
  // could wait for itself).
  void drain() { state_->drain(); }
  // Handler exceptions dropped for want of on_error (and on_error's own).
  std::uint64_t failures() const noexcept { return state_->failures(); }

  // Drains, then destroys: the handler is never called after this returns.
  ~mailbox() {
    state_->drain();
    state_->close();
    state_->handle = nullptr;
    state_->after_batch = nullptr;
  }

 private:
  struct state final : detail::mailbox_core {
    state(worker_pool& pool, handler h, unsigned concurrency, error_handler on_error,
          batch_handler b)
        : mailbox_core(pool, concurrency, std::move(on_error)),
          handle(std::move(h)),
          after_batch(std::move(b)),
          producer(queue) {}

    std::size_t handle_some(std::size_t max) noexcept override {
      moodycamel::ConsumerToken token(queue);
      std::size_t n = 0;
      // The queue move-assigns into the slot: an optional needs no default constructor of T.
      std::optional<T> item;
      while (n < max && queue.try_dequeue(token, item)) {
        dequeued(1);
        ++n;
        try {
          handle(*item);
        } catch (...) {
          report(std::current_exception());
        }
        item.reset();  // what the item holds (a receive buffer, say) goes now
      }
      if (n != 0 && after_batch) after_batch(n);
      return n;
    }

    // The producer token gives the mailbox its own sub-queue, whichever thread posts. Under
    // ThreadSanitizer the calling thread's implicit sub-queue is used instead (same order for
    // one posting thread): an explicit sub-queue decides that a block is free for reuse through
    // a relaxed load and a fence, which TSan does not model, so every block reuse would be
    // reported (upstream exempts one such function with a clang-only attribute).
#if defined(__SANITIZE_THREAD__)
    bool enqueue(T&& item) {
      return queue.enqueue(std::move(item));
    }
    template <class It>
    bool enqueue_bulk(It first, std::size_t n) {
      return queue.enqueue_bulk(first, n);
    }
#else
    bool enqueue(T&& item) {
      return queue.enqueue(producer, std::move(item));
    }
    template <class It>
    bool enqueue_bulk(It first, std::size_t n) {
      return queue.enqueue_bulk(producer, first, n);
    }
#endif

    handler handle;
    batch_handler after_batch;
    moodycamel::ConcurrentQueue<T> queue;
    moodycamel::ProducerToken producer;
  };

  std::shared_ptr<state> state_;
};

}  // namespace warren::workers
