// The receive side's buffer, for either face: the octets read from the socket and not yet taken
// by the connection_machine, in a pooled rx buffer (engine/buffer.h) that deliveries may still
// view after the machine is done with them.
//
// The room rule. Before a read: at least `min_read` octets free after the unconsumed ones, and
// room for the whole frame they begin (its size is in its header). Octets handed out in views
// never move: while other references to the buffer exist (deliveries viewing it), the partial
// frame is copied to a fresh buffer, and the old one returns to its pool when its views go. A frame
// larger than a pooled buffer gets a heap buffer of its own size.
//
// Threading: one thread at a time (the connection's owner). Nothing throws but allocation.
#pragma once

#include <cstddef>
#include <string_view>

#include "engine/buffer.h"

namespace warren {

class receive_buffer {
 public:
  static constexpr std::size_t min_read = 4096;

  explicit receive_buffer(rx_pool& pool) noexcept : pool_(&pool) {}

  // Makes room to read into (see the room rule above).
  void make_room();
  // Where to read to, and how much fits (after make_room()).
  char* space() noexcept { return rx_->data() + end_; }
  std::size_t space_size() const noexcept { return rx_->capacity() - end_; }
  // `n` octets were read into space().
  void received(std::size_t n) noexcept { end_ += n; }

  // What the machine has not taken yet, and the buffer holding it (connection_machine::feed's
  // `owner`).
  std::string_view unconsumed() const noexcept {
    return rx_ ? std::string_view(rx_->data() + begin_, end_ - begin_) : std::string_view();
  }
  const rx_ref& owner() const noexcept { return rx_; }
  // The machine took `n` octets. Once nothing is left the buffer is reused from its start when
  // nobody else views it, and let go otherwise.
  void consume(std::size_t n) noexcept;

  // Lets the buffer go (the connection ends).
  void release() noexcept;

 private:
  rx_pool* pool_;
  rx_ref rx_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

}  // namespace warren
