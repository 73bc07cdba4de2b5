// Paces events to a rate: each event is due 1/rate after the previous one. A caller that
// falls more than a second behind (a stall) does not catch up with a burst: pacing restarts
// from now. It also keeps the plan (intended()) for latency from the intended send time. The
// clock is an argument, so tests need no sleeping. One thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

namespace warren::perf {

class rate_limiter {
 public:
  using clock = std::chrono::steady_clock;

  // per_second 0 (or less): no limit, acquire() always returns 0.
  explicit rate_limiter(double per_second) noexcept { set_interval(per_second); }

  // Takes the next event's slot: how long to wait from `now` before it may happen.
  clock::duration acquire(clock::time_point now) noexcept {
    if (!limited_) return clock::duration::zero();
    if (next_ == clock::time_point{}) next_ = scheduled_ = now;
    // Pacing restarts after a stall; the schedule does not (see intended()).
    if (next_ < now - std::chrono::seconds(1)) next_ = now;
    const clock::duration wait = std::max(clock::duration::zero(), next_ - now);
    intended_ = scheduled_;
    next_ += interval_;
    scheduled_ += interval_;
    return wait;
  }

  // When the plan meant the event acquire() just gave to happen: the start of the schedule
  // plus one interval per event, never restarted. After a stall the events go late against it
  // by the stall (pacing does not catch up with a burst), which is what latency corrected for
  // coordinated omission must count. Unlimited: the epoch (no plan).
  clock::time_point intended() const noexcept { return intended_; }

  // A new rate from `now` on (--variable-rate). Events already taken keep their slots; the
  // next one is due one new interval after the previous one, or at `now` when publishing was
  // paused or unlimited (the plan starts afresh).
  void set_rate(double per_second, clock::time_point now) noexcept {
    const bool was_limited = limited_;
    set_interval(per_second);
    if (!limited_) return;
    if (!was_limited || next_ == clock::time_point{}) {
      next_ = scheduled_ = now;
    } else {
      // The slot already handed out keeps its old spacing; the next is one new interval on.
      next_ = std::max(now, next_ - old_interval_ + interval_);
      scheduled_ = scheduled_ - old_interval_ + interval_;
    }
  }

  bool limited() const noexcept { return limited_; }

 private:
  void set_interval(double per_second) noexcept {
    old_interval_ = interval_;
    limited_ = per_second > 0;
    interval_ = limited_ ? std::chrono::duration_cast<clock::duration>(
                               std::chrono::duration<double>(1.0 / per_second))
                         : clock::duration::zero();
  }

  clock::duration interval_{}, old_interval_{};
  bool limited_ = false;
  clock::time_point next_{}, scheduled_{}, intended_{};
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
