// Counters and gauges cheap enough for a per-message path.
//
// owned_counter is written by one thread at a time: its owner (an I/O thread), or whichever
// thread holds the lock that serialises its writers (the publish lock). add() is then a plain
// load and store, no locked instruction; two threads adding at once without such a lock would
// lose counts (TSan does not see it: every access is atomic). shared_counter may be added to by
// any number of threads at once (an atomic add). gauge goes up and down from any thread.
//
// Reads (load()) may come from any thread at any time. Writes are release stores and reads
// acquire loads (both plain moves on x86), so a snapshot that reads an effect before its cause
// (confirmed before published) never sees more effects than causes: the writer of the effect
// had seen the cause counted.
//
// Group the counters of one writer together and keep them off the lines other threads write
// (alignas(64) on the group): a line two writers share bounces between their cores.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace warren::metrics {

inline constexpr std::size_t cache_line = 64;

class owned_counter {
 public:
  void add(std::uint64_t n = 1) noexcept {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_release);
  }
  std::uint64_t load() const noexcept { return v_.load(std::memory_order_acquire); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

class shared_counter {
 public:
  void add(std::uint64_t n = 1) noexcept { v_.fetch_add(n, std::memory_order_release); }
  std::uint64_t load() const noexcept { return v_.load(std::memory_order_acquire); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

class gauge {
 public:
  void add(std::int64_t n = 1) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
  void sub(std::int64_t n = 1) noexcept { v_.fetch_sub(n, std::memory_order_relaxed); }
  void set(std::int64_t v) noexcept { v_.store(v, std::memory_order_relaxed); }
  std::int64_t load() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> v_{0};
};

}  // namespace warren::metrics
