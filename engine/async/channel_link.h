// A channel's view of its connection: the few things a channel asks of it, handed to the channel
// at its creation, instead of the channel reaching into the connection's members.
//
// Threading: as each member says. The connection implements it (connection_impl).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "engine/async/publish_staging.h"
#include "engine/log.h"
#include "engine/protocol/channel_core.h"
#include "engine/protocol/topology.h"

namespace warren::async::detail {

struct consumer_entry;

// The connection's topology record and its lock (application threads record, any thread reads).
struct recorded_topology {
  template <class F>
  void change(F&& f) {
    std::lock_guard lock(mu);
    f(record);
  }
  protocol::topology_record snapshot() const {
    std::lock_guard lock(mu);
    return record.snapshot();
  }
  mutable std::mutex mu;
  protocol::topology record;
};

class channel_link {
 public:
  virtual ~channel_link() = default;

  // I/O thread -----------------------------------------------------------------------------------
  // Queues a method frame for the wire after the publishes staged before it and after the
  // connection machine's own output (methods, acks) queued so far.
  virtual void send_frame(out_buffer frame) = 0;
  // Where the channel core's own frames go (acks, rejects, a cancel, channel.open/close).
  virtual protocol::channel_wire& wire() = 0;
  // Runs `f` once the current read's deliveries have been handed off (a reply is released to
  // its caller after the deliveries that preceded it).
  virtual void defer(std::function<void()> f) = 0;
  // A consumer left its channel: its mailbox is drained (handlers in flight finish) by an
  // application thread, never this one.
  virtual void retire(std::unique_ptr<consumer_entry> e) = 0;
  // `e` has deliveries in its batch for the current read: post them once the read is fed.
  virtual void hand_off(consumer_entry& e) = 0;
  // The calls waiting for replies changed by `delta` (receive batching never holds one back).
  virtual void waiting(int delta) = 0;

  // Any thread -----------------------------------------------------------------------------------
  // Deliveries of this connection handled by workers (reading resumes below the limit).
  virtual void delivery_handled(std::size_t n) noexcept = 0;
  // Drains the consumers retired so far (not from an I/O thread or a handler: a no-op there).
  virtual void drain_retired() = 0;
  // The connection's logger (its password masked). Any thread.
  virtual const warren::logger& log() const noexcept = 0;

  // I/O thread -----------------------------------------------------------------------------------
  // The `now` of the read being fed (when deliveries are handed to their consumers).
  virtual protocol::time_point feed_time() const noexcept = 0;
};

}  // namespace warren::async::detail
