// --variable-rate and --variable-size: a value that follows its steps in turn (RATE:SECONDS,
// ...), over and over, from the moment the producers start. Pure; the time is an argument.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "tools/perf/options.h"

namespace warren::perf {

class step_schedule {
 public:
  // `steps` may be empty: then value_at() is `fallback` for ever.
  step_schedule(std::vector<variable_step> steps, std::int64_t fallback)
      : steps_(std::move(steps)), fallback_(fallback) {
    for (const variable_step& s : steps_) cycle_s_ += s.seconds;
  }

  bool varies() const noexcept { return !steps_.empty(); }

  // The value in force `elapsed` after the start.
  std::int64_t value_at(std::chrono::steady_clock::duration elapsed) const noexcept {
    return steps_.empty() ? fallback_ : steps_[index_at(elapsed)].value;
  }

  // How long after `elapsed` the value in force changes (a step boundary); a large duration
  // when it never does.
  std::chrono::steady_clock::duration until_change(
      std::chrono::steady_clock::duration elapsed) const noexcept {
    using namespace std::chrono;
    if (steps_.empty()) return hours(24 * 365);
    const auto cycle = duration_cast<steady_clock::duration>(seconds(cycle_s_));
    const auto in_cycle =
        elapsed < steady_clock::duration::zero() ? steady_clock::duration::zero() : elapsed % cycle;
    auto end = steady_clock::duration::zero();
    for (const variable_step& s : steps_) {
      end += duration_cast<steady_clock::duration>(seconds(s.seconds));
      if (in_cycle < end) return end - in_cycle;
    }
    return cycle - in_cycle;
  }

 private:
  std::size_t index_at(std::chrono::steady_clock::duration elapsed) const noexcept {
    using namespace std::chrono;
    if (elapsed < steady_clock::duration::zero()) return 0;
    const auto in_cycle = elapsed % duration_cast<steady_clock::duration>(seconds(cycle_s_));
    auto end = steady_clock::duration::zero();
    for (std::size_t i = 0; i < steps_.size(); ++i) {
      end += duration_cast<steady_clock::duration>(seconds(steps_[i].seconds));
      if (in_cycle < end) return i;
    }
    return steps_.size() - 1;
  }

  std::vector<variable_step> steps_;
  std::int64_t fallback_;
  std::uint64_t cycle_s_ = 0;
};

}  // namespace warren::perf
