// Consumers and the hand-off of deliveries to the worker pool.
//
// A consumer_entry is what a channel's consumer table (protocol::consumer_table) holds for one
// basic.consume: the handler's mailbox (engine/workers), the deliveries read in the current
// feed, waiting to be posted in bulk, and the route its deliveries' decisions take back.
//
// The route (consumer_impl) is counted by every delivery that names it (consumer_ref, intrusive:
// the I/O thread counts a whole batch with one atomic add) and holds the channel and the life its
// deliveries came from, so that a decision made on any thread reaches the channel's I/O thread
// and is refused there when that life has ended.
//
// Threading: a consumer_entry belongs to its channel's I/O thread until it is retired; then an
// application thread drains its mailbox (handlers in flight finish) and destroys it. A route is
// shared by any thread through its references.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/async/engine.h"
#include "engine/protocol/consumer_table.h"
#include "engine/workers/dispatcher.h"

namespace warren::async::detail {

class channel_impl;

// What a delivery needs to route its decision: the channel, its life, and whether a decision is
// expected at all.
struct consumer_impl {
  std::atomic<std::int64_t> refs{1};
  std::shared_ptr<channel_impl> ch;
  std::uint32_t life = 0;
  bool no_ack = false;
  // A worker handled n of this consumer's deliveries (once per run of them).
  void handled(std::size_t n) noexcept;
};

// Routes a decision on the delivery `tag` to its channel's I/O thread. False (nothing sent) for a
// no-ack consumer's delivery or once the channel is no longer open.
bool route_decision(const consumer_ref& c, std::uint64_t tag, int kind, bool multiple,
                    bool requeue);

struct consumer_entry final : protocol::consumer {
  consumer_ref route;
  std::size_t uncounted = 0;  // deliveries in `batch` whose reference is not yet counted
  std::unique_ptr<workers::mailbox<delivery>> box;
  std::function<void(std::string_view)> on_cancel;
  std::vector<delivery> batch;  // filled during one feed, posted in bulk after it

  // Posts `batch` to the mailbox, counting its references and pending deliveries.
  void post_batch();
};

// Handlers running on this thread (a basic_cancel or close made inside one does not wait for
// handlers: it would wait for itself).
bool in_handler() noexcept;

// When a delivery was handed to its consumer (the `now` of the read), for delivery-to-handled.
struct delivery_stamp {
  static protocol::time_point& of(delivery& d) noexcept { return d.handed_; }
};

// The mailbox handler for `h`: counts the handler in flight around each call and, when `self`
// (the consumer, which outlives its mailbox's calls) records metrics, the handled latency.
std::function<void(delivery&)> counted_handler(delivery_handler h, const consumer_entry* self);

}  // namespace warren::async::detail
