// Reference-counted receive buffers.
//
// The I/O layer reads socket bytes into an rx_buffer; decoded frames, and the deliveries built
// from them, are views into that memory. A delivery holds an rx_ref, so its body stays valid
// after the reader has moved on to a new buffer; the memory returns to its pool (or is freed)
// when the last rx_ref is released. This is what makes the receive path zero-copy.
//
// Lifetime: an rx_ref may outlive the rx_pool its buffer came from (a message kept after its
// connection is gone): the pool's bookkeeping stays alive until the last of its buffers is
// released, and buffers released after the pool was destroyed are freed, not cached.
//
// Thread safety: an rx_ref may be copied, moved and destroyed from any thread (the count is
// atomic). The bytes of a buffer are written only by the thread that allocated it, before it
// publishes views of them; after that they are read-only.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace warren {

class rx_pool;
class rx_ref;
namespace detail {
class rx_pool_state;
}

class rx_buffer {
 public:
  char* data() noexcept { return data_; }
  const char* data() const noexcept { return data_; }
  std::size_t capacity() const noexcept { return capacity_; }

 private:
  friend class rx_ref;
  friend class detail::rx_pool_state;
  rx_buffer(detail::rx_pool_state* pool, std::size_t capacity) noexcept
      : pool_(pool), capacity_(capacity) {}

  static rx_buffer* create(detail::rx_pool_state* pool, std::size_t capacity) {
    // sizeof + capacity must not wrap: a huge request would otherwise get a tiny block.
    if (capacity > SIZE_MAX - sizeof(rx_buffer)) throw std::bad_alloc();
    void* mem = std::malloc(sizeof(rx_buffer) + capacity);
    if (mem == nullptr) throw std::bad_alloc();
    return new (mem) rx_buffer(pool, capacity);
  }
  static void destroy(rx_buffer* b) noexcept {
    b->~rx_buffer();
    std::free(b);
  }
  void release() noexcept;

  std::atomic<std::uint32_t> refs_{1};
  detail::rx_pool_state* pool_;  // null: not pooled
  std::size_t capacity_;
  alignas(16) char data_[];
};

// An owning handle to an rx_buffer; empty handles are allowed and cheap.
class rx_ref {
 public:
  rx_ref() noexcept = default;
  rx_ref(const rx_ref& o) noexcept : b_(o.b_) {
    if (b_ != nullptr) b_->refs_.fetch_add(1, std::memory_order_relaxed);
  }
  rx_ref(rx_ref&& o) noexcept : b_(std::exchange(o.b_, nullptr)) {}
  rx_ref& operator=(rx_ref o) noexcept {
    std::swap(b_, o.b_);
    return *this;
  }
  ~rx_ref() {
    if (b_ != nullptr) b_->release();
  }

  // A buffer of at least `capacity` bytes from the heap, not pooled.
  static rx_ref allocate(std::size_t capacity) {
    return rx_ref(rx_buffer::create(nullptr, capacity));
  }

  explicit operator bool() const noexcept { return b_ != nullptr; }
  rx_buffer* get() const noexcept { return b_; }
  rx_buffer* operator->() const noexcept { return b_; }
  // True when this handle is the only one: the owner may then reuse the memory in place.
  bool unique() const noexcept {
    return b_ != nullptr && b_->refs_.load(std::memory_order_acquire) == 1;
  }
  void reset() noexcept { rx_ref().swap(*this); }
  void swap(rx_ref& o) noexcept { std::swap(b_, o.b_); }

 private:
  friend class detail::rx_pool_state;
  explicit rx_ref(rx_buffer* b) noexcept : b_(b) {}
  rx_buffer* b_ = nullptr;
};

namespace detail {

// The part of an rx_pool that its buffers point at. It is counted (one reference for the
// rx_pool, one per buffer handed out and not yet back) rather than owned by the rx_pool, so a
// buffer released after its rx_pool is gone still has somewhere to go.
class rx_pool_state {
 public:
  rx_pool_state(std::size_t buffer_size, std::size_t max_cached)
      : size_(buffer_size), max_cached_(max_cached) {
    // Reserved up front so that give_back never allocates (it runs in a noexcept release).
    free_.reserve(max_cached);
  }
  rx_pool_state(const rx_pool_state&) = delete;
  rx_pool_state& operator=(const rx_pool_state&) = delete;

  rx_ref acquire() {
    rx_buffer* b = nullptr;
    {
      std::lock_guard lock(mu_);
      if (!free_.empty()) {
        b = free_.back();
        free_.pop_back();
      }
    }
    if (b != nullptr) {
      b->refs_.store(1, std::memory_order_relaxed);
    } else {
      b = rx_buffer::create(this, size_);
    }
    refs_.fetch_add(1, std::memory_order_relaxed);
    return rx_ref(b);
  }
  std::size_t buffer_size() const noexcept { return size_; }
  std::size_t cached() const {
    std::lock_guard lock(mu_);
    return free_.size();
  }

  // The rx_pool is going away: the cached buffers are freed now, and buffers still out are
  // freed as they come back (nobody would take them from the cache again).
  void close() noexcept {
    std::vector<rx_buffer*> cached;
    {
      std::lock_guard lock(mu_);
      closed_ = true;
      cached.swap(free_);
    }
    for (rx_buffer* b : cached) rx_buffer::destroy(b);
    unref();
  }

  void give_back(rx_buffer* b) noexcept {
    bool kept = false;
    {
      std::lock_guard lock(mu_);
      if (!closed_ && free_.size() < max_cached_) {
        free_.push_back(b);
        kept = true;
      }
    }
    if (!kept) rx_buffer::destroy(b);
    unref();
  }

 private:
  ~rx_pool_state() = default;  // only through unref()
  void unref() noexcept {
    // acq_rel: whichever thread drops the last reference sees every other thread's use of
    // the free list before deleting it.
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  std::atomic<std::size_t> refs_{1};  // the rx_pool's
  mutable std::mutex mu_;
  std::vector<rx_buffer*> free_;
  bool closed_ = false;
  std::size_t size_;
  std::size_t max_cached_;
};

}  // namespace detail

// A bounded free list of equally sized buffers. Buffers released while the pool holds
// `max_cached` are freed rather than cached, so memory held idle is bounded. Buffers may
// outlive the pool (see Lifetime above); destroying the pool frees its cache at once.
class rx_pool {
 public:
  rx_pool(std::size_t buffer_size, std::size_t max_cached)
      : state_(new detail::rx_pool_state(buffer_size, max_cached)) {}
  rx_pool(const rx_pool&) = delete;
  rx_pool& operator=(const rx_pool&) = delete;
  ~rx_pool() { state_->close(); }

  rx_ref acquire() { return state_->acquire(); }
  std::size_t buffer_size() const noexcept { return state_->buffer_size(); }
  // Buffers cached for reuse.
  std::size_t cached() const { return state_->cached(); }

 private:
  detail::rx_pool_state* state_;
};

inline void rx_buffer::release() noexcept {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  if (pool_ != nullptr) {
    pool_->give_back(this);
  } else {
    destroy(this);
  }
}

}  // namespace warren
