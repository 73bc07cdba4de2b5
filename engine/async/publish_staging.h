// A connection's publish staging: warren's TermAppender. Any thread encodes a publish straight
// into one buffer under the publish lock; the I/O thread takes the whole buffer at once (swapping
// a spare in) and writes it after the frames queued before it.
//
// The publish lock (publish_lock.h) guards, besides the buffer: every channel's confirm tracker
// (protocol::channel_core::confirms()) and publish callbacks, so that a publish's sequence number
// is assigned in the order its frames enter the buffer, and the connection's blocked flag.
//
// Back-pressure: has_room() refuses a publish that would take the octets not yet written
// (staged here or queued as segments by the I/O thread) above max_outgoing_bytes; one message
// larger than that is taken when nothing waits. Publishers that wait for room (publish with a
// deadline, wait_for_confirms) sleep on the room condition, woken by notify_room().
//
// Threading: as each member says.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <string_view>

#include "engine/async/publish_lock.h"
#include "engine/metrics/metrics.h"
#include "engine/protocol/time.h"

namespace warren::async::detail {

// Bytes for the wire. Unlike std::string, growing it does not zero-fill, which matters on the
// publish path (each publish reserves its exact size and encodes into it).
struct out_buffer {
  std::unique_ptr<char[]> data;
  std::size_t size = 0;
  std::size_t cap = 0;

  char* grow(std::size_t n) {
    if (size + n > cap) {
      std::size_t c = std::max<std::size_t>(cap * 2, std::max<std::size_t>(size + n, 4096));
      std::unique_ptr<char[]> d(new char[c]);
      if (size != 0) std::memcpy(d.get(), data.get(), size);
      data = std::move(d);
      cap = c;
    }
    char* p = data.get() + size;
    size += n;
    return p;
  }
  void append(std::string_view s) { std::memcpy(grow(s.size()), s.data(), s.size()); }
  std::string_view view() const noexcept { return {data.get(), size}; }
};

class publish_staging {
 public:
  explicit publish_staging(std::size_t max_outgoing) noexcept : max_out_(max_outgoing) {}
  publish_staging(const publish_staging&) = delete;
  publish_staging& operator=(const publish_staging&) = delete;

  publish_lock& lock() const noexcept { return mu_; }

  // Publish lock held ----------------------------------------------------------------------------
  // Whether `need` more octets may be staged now (see back-pressure above).
  bool has_room(std::size_t need) const noexcept {
    const std::size_t queued = staging_.size + unsent_.load(std::memory_order_relaxed);
    return queued == 0 || queued + need <= max_out_;
  }
  // Room for `n` octets at the end of the staging, to encode into; unreserve() gives back what an
  // encode did not use.
  char* reserve(std::size_t n) { return staging_.grow(n); }
  void unreserve(std::size_t n) noexcept { staging_.size -= n; }
  // Appends already encoded frames (a method that must keep its place among publishes).
  void append(std::string_view frames) { staging_.append(frames); }
  // After staging: true when the staging was empty before, so the I/O thread must be woken.
  bool staged() noexcept {
    if (scheduled_.load(std::memory_order_relaxed)) return false;
    scheduled_.store(true, std::memory_order_relaxed);
    return true;
  }
  std::size_t staged_size() const noexcept { return staging_.size; }
  // Frames staged (a publish's, a method's): counted into the metrics by the I/O thread when it
  // takes them, once per batch, so that the publisher touches no line of the metrics for them.
  void count_frames(std::uint64_t n) noexcept { staged_frames_ += n; }
  bool counting() const noexcept { return metrics_ != nullptr; }
  // Before staged(): when the first publish of what is staged now was made, which the confirm
  // latency of every publish staged with it is measured from. One clock read per batch the I/O
  // thread takes, not one per message; a publish's latency so includes the time its batch waited
  // for the I/O thread (README, "Metrics").
  protocol::time_point batch_time() noexcept {
    if (!scheduled_.load(std::memory_order_relaxed)) batch_time_ = protocol::clock::now();
    return batch_time_;
  }
  void set_blocked(bool b) noexcept { blocked_.store(b, std::memory_order_relaxed); }
  // Where count_frames() counts (null: nowhere). Before the first publish.
  void set_metrics(metrics::connection_metrics* m) noexcept { metrics_ = m; }

  // Any thread -----------------------------------------------------------------------------------
  // connection.blocked is in force (read under the lock by publishers; anywhere for reporting).
  bool blocked() const noexcept { return blocked_.load(std::memory_order_relaxed); }
  // The connection is recovering (from the loss to the end of the replay): publishes are refused
  // with publish_status::recovering. Written by the I/O thread under the lock.
  bool recovering() const noexcept { return recovering_.load(std::memory_order_acquire); }
  void set_recovering(bool r) noexcept { recovering_.store(r, std::memory_order_release); }
  // Something is staged that the I/O thread has not taken (read without the lock: a hint that
  // is exact once the waker's wake-up was seen, see io_thread::run).
  bool pending() const noexcept { return scheduled_.load(std::memory_order_relaxed); }
  // Octets staged plus octets queued as segments and not yet written.
  std::size_t outgoing() const;
  // Waits, with `lock` held on lock(), until notify_room() or `until`; in slices of at most 10 ms,
  // so that a wake-up racing with the caller's check costs at most one slice.
  void wait_for_room(std::unique_lock<publish_lock>& lock, protocol::time_point until);

  // I/O thread -----------------------------------------------------------------------------------
  // Takes what is staged into `out` (an empty buffer whose capacity becomes the new staging);
  // false, `out` untouched, when nothing is staged. The lock is taken only when something is.
  bool take(out_buffer& out);
  // Octets handed to the I/O thread's segments (counted before the lock goes, so producers never
  // see bytes in neither place) and octets written.
  void add_unsent(std::size_t n) noexcept { unsent_.fetch_add(n, std::memory_order_relaxed); }
  void written(std::size_t n) noexcept { unsent_.fetch_sub(n, std::memory_order_relaxed); }
  // Wakes waiting publishers, if any (the lock is taken and dropped first, so one between its
  // check and its wait is not missed).
  void notify_room();
  // The connection ended: the staged bytes are dropped and nothing is unsent any more.
  void clear();

 private:
  mutable publish_lock mu_;
  out_buffer staging_;
  // True from the first publish into an empty staging until the I/O thread takes it: written
  // under the lock, read without it to skip the lock when nothing is staged.
  std::atomic<bool> scheduled_{false};
  std::atomic<bool> blocked_{false};
  std::atomic<bool> recovering_{false};
  metrics::connection_metrics* metrics_ = nullptr;
  protocol::time_point batch_time_{};  // publish lock
  std::uint64_t staged_frames_ = 0;    // publish lock
  std::atomic<std::size_t> unsent_{0};
  const std::size_t max_out_;
  std::condition_variable_any room_;
  std::atomic<int> waiters_{0};
};

}  // namespace warren::async::detail
