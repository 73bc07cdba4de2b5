#include "engine/async/publish_staging.h"

#include <algorithm>
#include <chrono>

namespace warren::async::detail {

std::size_t publish_staging::outgoing() const {
  std::size_t staged;
  {
    std::lock_guard lock(mu_);
    staged = staging_.size;
  }
  return staged + unsent_.load(std::memory_order_relaxed);
}

void publish_staging::wait_for_room(std::unique_lock<publish_lock>& lock,
                                    protocol::time_point until) {
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  room_.wait_until(lock, std::min(until, protocol::clock::now() + std::chrono::milliseconds(10)));
  waiters_.fetch_sub(1, std::memory_order_seq_cst);
}

bool publish_staging::take(out_buffer& out) {
  if (!scheduled_.load(std::memory_order_relaxed)) return false;
  std::uint64_t frames = 0;
  {
    std::lock_guard lock(mu_);
    if (staging_.size == 0) return false;
    std::swap(out, staging_);
    scheduled_.store(false, std::memory_order_relaxed);
    unsent_.fetch_add(out.size, std::memory_order_relaxed);
    frames = staged_frames_;
    staged_frames_ = 0;
  }
  if (metrics_ != nullptr) metrics_->on_frames_sent(frames);
  return true;
}

void publish_staging::notify_room() {
  if (waiters_.load(std::memory_order_seq_cst) == 0) return;
  { std::lock_guard lock(mu_); }
  room_.notify_all();
}

void publish_staging::clear() {
  {
    std::lock_guard lock(mu_);
    staging_ = out_buffer{};
    staged_frames_ = 0;
    scheduled_.store(false, std::memory_order_relaxed);
  }
  unsent_.store(0);
  notify_room();
}

}  // namespace warren::async::detail
