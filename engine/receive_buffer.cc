#include "engine/receive_buffer.h"

#include <algorithm>
#include <cstring>

#include "codec/frame.h"

namespace warren {

void receive_buffer::make_room() {
  const std::size_t used = end_ - begin_;
  std::size_t need = codec::frame_header_size;
  if (used >= codec::frame_header_size) {
    const auto* p = reinterpret_cast<const unsigned char*>(rx_->data() + begin_);
    need = (std::size_t{p[3]} << 24 | std::size_t{p[4]} << 16 | std::size_t{p[5]} << 8 | p[6]) +
           codec::frame_overhead;
  }
  const std::size_t cap = rx_ ? rx_->capacity() : 0;
  if (rx_ && cap - end_ >= min_read && cap - begin_ >= need) return;
  if (rx_ && rx_.unique() && cap >= std::max(need, used + min_read)) {
    std::memmove(rx_->data(), rx_->data() + begin_, used);
    end_ = used;
    begin_ = 0;
    return;
  }
  // Sized for what is held too: after a parse that stopped early it may be more than one frame.
  const std::size_t size = std::max(need, used) + min_read;
  rx_ref fresh = size > pool_->buffer_size() ? rx_ref::allocate(size) : pool_->acquire();
  if (used != 0) std::memcpy(fresh->data(), rx_->data() + begin_, used);
  rx_ = std::move(fresh);
  begin_ = 0;
  end_ = used;
}

void receive_buffer::consume(std::size_t n) noexcept {
  begin_ += std::min(n, end_ - begin_);
  if (begin_ != end_) return;
  if (!rx_.unique()) rx_.reset();
  begin_ = end_ = 0;
}

void receive_buffer::release() noexcept {
  rx_.reset();
  begin_ = end_ = 0;
}

}  // namespace warren
