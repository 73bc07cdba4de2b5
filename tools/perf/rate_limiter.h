// Paces events to a rate: each event is due 1/rate after the previous one. A caller that
// falls more than a second behind (a stall) does not catch up with a burst: pacing restarts
// from now. The clock is an argument, so tests need no sleeping. One thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

namespace warren::perf {

class rate_limiter {
 public:
  using clock = std::chrono::steady_clock;

  // per_second 0 (or less): no limit, acquire() always returns 0.
  explicit rate_limiter(double per_second) noexcept
      : interval_(per_second > 0 ? std::chrono::duration_cast<clock::duration>(
                                       std::chrono::duration<double>(1.0 / per_second))
                                 : clock::duration::zero()),
        limited_(per_second > 0) {}

  // Takes the next event's slot: how long to wait from `now` before it may happen.
  clock::duration acquire(clock::time_point now) noexcept {
    if (!limited_) return clock::duration::zero();
    if (next_ < now - std::chrono::seconds(1) || next_ == clock::time_point{}) next_ = now;
    const clock::duration wait = std::max(clock::duration::zero(), next_ - now);
    next_ += interval_;
    return wait;
  }

  bool limited() const noexcept { return limited_; }

 private:
  clock::duration interval_;
  bool limited_;
  clock::time_point next_{};
};

// Sleeps `d` in slices of at most 50 ms, returning early once stopping() is true: a low rate
// must not hold up the end of a run.
template <class Stop>
void sleep_unless(std::chrono::steady_clock::duration d, Stop stopping) {
  using clock = std::chrono::steady_clock;
  const clock::time_point until = clock::now() + d;
  for (clock::time_point now = clock::now(); now < until && !stopping(); now = clock::now()) {
    std::this_thread::sleep_for(
        std::min<clock::duration>(until - now, std::chrono::milliseconds(50)));
  }
}

}  // namespace warren::perf
