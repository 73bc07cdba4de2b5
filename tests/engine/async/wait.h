// Polling for the async engine's tests: waits until a condition that other threads (the I/O
// thread, workers, the broker) make true holds, or gives up.
//
// Thread rules: any thread; `done` runs on the calling thread only.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace warren::test {

// True once `done()` is; false when `timeout` passed first (checked every 2 ms).
inline bool wait_until(const std::function<bool()>& done,
                       std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace warren::test
