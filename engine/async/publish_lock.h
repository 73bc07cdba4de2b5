// The lock that guards a connection's publish staging buffer.
//
// Why not std::mutex: every publish takes this lock once, for a few dozen nanoseconds (encode
// into the staging buffer, bump a sequence number). glibc's mutex unlocks with an atomic
// read-modify-write (to learn whether someone sleeps on it), a full barrier that waits for the
// message's own stores to drain: about a third of a publishing thread's time in the null-broker
// sink benchmark (9.1 M msg/s with std::mutex, 16.9 M with this lock; bench/RESULTS.md). Here
// unlock is a plain release store. A thread that finds the lock held spins briefly, then yields
// its core: holders never wait for anything while holding it (at worst they allocate when the
// staging buffer grows), so a waiter waits only for a holder that was preempted.
//
// Satisfies Lockable (use with std::lock_guard, std::unique_lock, std::condition_variable_any).
#pragma once

#include <atomic>
#include <thread>

namespace warren::async::detail {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

class publish_lock {
 public:
  void lock() noexcept {
    if (!locked_.exchange(true, std::memory_order_acquire)) return;
    lock_slow();
  }
  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) &&
           !locked_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  void lock_slow() noexcept {
    for (unsigned spins = 0;; ++spins) {
      // Test before test-and-set: waiting readers share the cache line instead of stealing it
      // from the holder on every try.
      while (locked_.load(std::memory_order_relaxed)) {
        if (spins < 64) {
          ++spins;
          cpu_relax();
        } else {
          std::this_thread::yield();
        }
      }
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
    }
  }

  std::atomic<bool> locked_{false};
};

}  // namespace warren::async::detail
