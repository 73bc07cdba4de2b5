// What the engine counts about its connections, channels and consumers, and the snapshot an
// application takes of it (README, "Metrics").
//
// Recording. A face (the async engine, the blocking client) owns one connection_metrics per
// connection, obtained from its registry, one channel_metrics per channel and one
// consumer_metrics per consumer, and calls their on_* members where the events happen. Each
// member names the thread that may call it:
//   - "I/O thread": the one thread that drives the connection (the async engine's I/O thread;
//     in the blocking face, the thread inside the connection's call). Plain stores, no lock.
//   - "publish lock": whichever thread publishes, while holding the lock that already
//     serialises publishes on the connection (or the blocking face's calling thread).
//   - "any thread": atomic adds, safe from several threads at once (workers).
// No recording call takes a lock, allocates or can fail, except where it says "not per
// message" (adding channels and consumers, blocked/unblocked).
//
// Reading. registry::take() (or connection_metrics::snapshot()) may be called from any thread
// at any time, concurrently with recording; it locks the registry's lists only, never a
// recording path. Counts are read effect before cause, so within one snapshot
// confirmed + nacked + in_doubt <= published and acked + nacked + rejected <= delivered hold.
// A snapshot may miss records made while it is taken; the next one has them.
//
// Lifetimes. The registry hands out shared_ptrs: an object is listed while anyone else holds
// it. A channel's (or consumer's) counts go into its connection's totals for ever; once the
// face has dropped its last reference (no one can record into it any more) the connection folds
// them into its totals of closed channels and forgets the object. mark_closed() hides a channel
// that is closed but still referenced (by deliveries in flight) from the per-channel list, so
// a new channel with the same id is the only one listed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/metrics/counter.h"
#include "engine/metrics/histogram.h"

namespace warren::metrics {

using clock = std::chrono::steady_clock;

// Publishes, counted on the channel they were made on.
struct publish_counts {
  std::uint64_t published = 0;    // accepted: try_publish/publish returned ok
  std::uint64_t confirmed = 0;    // basic.ack from the broker (a returned publish is also acked)
  std::uint64_t nacked = 0;       // basic.nack from the broker
  std::uint64_t in_doubt = 0;     // completed with no verdict: confirm timeout, channel closed,
                                  // connection lost (it may or may not be on the broker)
  std::uint64_t returned = 0;     // basic.return: mandatory and unroutable
  std::uint64_t republished = 0;  // sent again on a recovered channel (recovery's republish)
  publish_counts& operator+=(const publish_counts& o) noexcept;
  bool operator==(const publish_counts&) const = default;
};

// Deliveries received on a channel and what the application decided for them. A multiple ack
// counts every delivery it settles.
struct delivery_counts {
  std::uint64_t delivered = 0;  // basic.deliver and basic.get-ok received
  std::uint64_t acked = 0;      // basic.ack sent for them
  std::uint64_t nacked = 0;     // basic.nack sent
  std::uint64_t rejected = 0;   // basic.reject sent
  delivery_counts& operator+=(const delivery_counts& o) noexcept;
  bool operator==(const delivery_counts&) const = default;
};

struct transport_counts {
  std::uint64_t bytes_received = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t frames_received = 0;
  std::uint64_t frames_sent = 0;
  std::uint64_t socket_reads = 0;   // read system calls, whatever they returned
  std::uint64_t socket_writes = 0;  // write system calls (one sendmsg of many frames is one)
  bool operator==(const transport_counts&) const = default;
};

struct consumer_snapshot {
  std::string tag;
  std::uint64_t delivered = 0;  // handed to the consumer
  std::int64_t pending = 0;     // handed to it and not yet handled
};

struct channel_snapshot {
  std::uint16_t id = 0;
  publish_counts publishes;
  delivery_counts deliveries;
  latency_histogram publish_to_confirm;      // publish to the broker's ack or nack
  latency_histogram delivery_to_handled;     // handed to the consumer to the handler's return
  std::vector<consumer_snapshot> consumers;  // in the order they were added
};

struct connection_snapshot {
  std::uint64_t id = 0;  // the registry's number for the connection, from 1, never reused
  std::string name;      // the application's name for it (may be empty)
  transport_counts transport;
  std::chrono::nanoseconds blocked_time{0};  // under connection.blocked, the current block too
  bool blocked = false;
  std::uint64_t recoveries = 0;         // completed recoveries (reconnect and replay)
  std::uint64_t heartbeats_missed = 0;  // heartbeat intervals with nothing from the broker
  std::size_t open_channels = 0;        // channels open (not marked closed)
  // Every channel the connection has had, the closed ones included.
  publish_counts publishes;
  delivery_counts deliveries;
  latency_histogram publish_to_confirm;
  latency_histogram delivery_to_handled;
  std::vector<channel_snapshot> channels;  // the open channels, by id
};

struct snapshot {
  clock::time_point taken;
  std::vector<connection_snapshot> connections;  // by id
};

class consumer_metrics {
 public:
  explicit consumer_metrics(std::string tag) : tag_(std::move(tag)) {}
  const std::string& tag() const noexcept { return tag_; }

  // I/O thread: n deliveries handed to the consumer.
  void on_delivered(std::uint64_t n = 1) noexcept {
    delivered_.add(n);
    pending_.add(static_cast<std::int64_t>(n));
  }
  // Any thread (workers): n of them handled (the handler returned, or they were dropped).
  void on_handled(std::uint64_t n = 1) noexcept { pending_.sub(static_cast<std::int64_t>(n)); }
  std::int64_t pending() const noexcept { return pending_.load(); }

  consumer_snapshot snapshot() const;

 private:
  const std::string tag_;
  owned_counter delivered_;
  gauge pending_;
};

class channel_metrics {
 public:
  explicit channel_metrics(std::uint16_t id) noexcept : id_(id) {}
  std::uint16_t id() const noexcept { return id_; }

  // Publish lock: n publishes accepted.
  void on_published(std::uint64_t n = 1) noexcept { pub_.published.add(n); }

  // I/O thread: the broker's verdicts, in-doubt completions, returns, republishes.
  void on_confirmed(std::uint64_t n = 1) noexcept { io_.confirmed.add(n); }
  void on_nacked(std::uint64_t n = 1) noexcept { io_.nacked.add(n); }
  void on_in_doubt(std::uint64_t n = 1) noexcept { io_.in_doubt.add(n); }
  void on_returned(std::uint64_t n = 1) noexcept { io_.returned.add(n); }
  void on_republished(std::uint64_t n = 1) noexcept { io_.republished.add(n); }
  // I/O thread: n publishes settled `ns` after they were published (or sent).
  void record_confirm_latency(std::uint64_t ns, std::uint64_t n = 1) noexcept {
    confirm_latency_.record_exclusive(ns, n);
  }
  // I/O thread: deliveries received, and the application's decisions as they go on the wire.
  void on_delivered(std::uint64_t n = 1) noexcept { io_.delivered.add(n); }
  void on_delivery_acked(std::uint64_t n = 1) noexcept { io_.acked.add(n); }
  void on_delivery_nacked(std::uint64_t n = 1) noexcept { io_.delivery_nacked.add(n); }
  void on_delivery_rejected(std::uint64_t n = 1) noexcept { io_.rejected.add(n); }

  // Any thread (workers, concurrently): a delivery handled `ns` after it was handed over.
  void record_handled(std::uint64_t ns) noexcept { handled_latency_.record(ns); }

  // Any thread, not per message. A consumer added with the tag of a listed one replaces it in
  // the list. A consumer is listed until remove_consumer() or until only this channel holds it.
  std::shared_ptr<consumer_metrics> add_consumer(std::string tag);
  void remove_consumer(const consumer_metrics& c) noexcept;

  // Any thread: the channel is closed; it is no longer listed per channel (see the top).
  void mark_closed() noexcept { closed_.store(true, std::memory_order_release); }
  // Any thread: the same channel opened again (a recovery reopens a channel's id): listed again.
  void mark_open() noexcept { closed_.store(false, std::memory_order_release); }
  bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }

  // Any thread. `with_consumers` false leaves the consumer list out (totals need none).
  channel_snapshot snapshot(bool with_consumers = true) const;

 private:
  struct alignas(cache_line) publisher_line {
    owned_counter published;
  };
  struct alignas(cache_line) io_line {
    owned_counter confirmed, nacked, in_doubt, returned, republished;
    owned_counter delivered, acked, delivery_nacked, rejected;
  };

  const std::uint16_t id_;
  std::atomic<bool> closed_{false};
  publisher_line pub_;
  io_line io_;
  alignas(cache_line) concurrent_latency_histogram confirm_latency_;  // I/O thread
  alignas(cache_line) concurrent_latency_histogram handled_latency_;  // workers
  mutable std::mutex consumers_mu_;
  mutable std::vector<std::shared_ptr<consumer_metrics>> consumers_;
};

class connection_metrics {
 public:
  connection_metrics(std::uint64_t id, std::string name) : id_(id), name_(std::move(name)) {}
  std::uint64_t id() const noexcept { return id_; }
  const std::string& name() const noexcept { return name_; }

  // I/O thread: one read or write system call and the bytes it moved (0 for none).
  void on_socket_read(std::size_t bytes) noexcept {
    io_.reads.add();
    io_.bytes_in.add(bytes);
  }
  void on_socket_write(std::size_t bytes) noexcept {
    io_.writes.add();
    io_.bytes_out.add(bytes);
  }
  // I/O thread: frames decoded, and frames the I/O thread itself queued for sending.
  void on_frames_received(std::uint64_t n = 1) noexcept { io_.frames_in.add(n); }
  void on_frames_sent(std::uint64_t n = 1) noexcept { io_.frames_out.add(n); }
  // Publish lock: frames a publish encoded straight into the outgoing buffer.
  void on_publish_frames_sent(std::uint64_t n) noexcept { pub_.frames_out.add(n); }
  // I/O thread: a heartbeat interval passed with nothing received; a recovery completed.
  void on_heartbeat_missed() noexcept { io_.heartbeats_missed.add(); }
  void on_recovered() noexcept { io_.recoveries.add(); }
  // I/O thread, not per message: connection.blocked and connection.unblocked (a repeated one
  // is ignored).
  void on_blocked(clock::time_point now) noexcept;
  void on_unblocked(clock::time_point now) noexcept;

  // Any thread, not per message: a channel opened. A listed channel with the same id is marked
  // closed (a channel id is reused only after its channel closed).
  std::shared_ptr<channel_metrics> add_channel(std::uint16_t id);

  // Any thread; `now` ends the current block, if any, for blocked_time.
  connection_snapshot snapshot(clock::time_point now = clock::now(),
                               bool with_channels = true) const;

 private:
  struct alignas(cache_line) io_line {
    owned_counter bytes_in, bytes_out, frames_in, frames_out, reads, writes;
    owned_counter heartbeats_missed, recoveries;
  };
  struct alignas(cache_line) publisher_line {
    owned_counter frames_out;
  };

  // Channels' lock held: folds a channel no face references any more into the totals.
  void retire(const channel_metrics& gone) const;

  const std::uint64_t id_;
  const std::string name_;
  io_line io_;
  publisher_line pub_;

  mutable std::mutex blocked_mu_;
  clock::duration blocked_total_{0};
  std::optional<clock::time_point> blocked_since_;

  mutable std::mutex channels_mu_;
  mutable std::vector<std::shared_ptr<channel_metrics>> channels_;
  // What the channels folded away (no longer referenced by their face) had counted.
  mutable publish_counts retired_publishes_;
  mutable delivery_counts retired_deliveries_;
  mutable latency_histogram retired_confirm_latency_;
  mutable latency_histogram retired_handled_latency_;
};

// One per engine (or per blocking client): the list snapshots walk.
class registry {
 public:
  // `keep_connections`: list every connection ever added, also once its face dropped it (its
  // counts final), so that a counter never vanishes in the middle of a run; memory then grows
  // with every connection made (a few KiB each), which suits a run of the perf tool, not a
  // service that reconnects for months. By default a dropped connection leaves the list.
  explicit registry(bool keep_connections = false) noexcept : keep_(keep_connections) {}

  // Any thread, not per message. Ids count from 1 in call order.
  std::shared_ptr<connection_metrics> add_connection(std::string name = {});
  // Any thread, any time: every connection whose face still holds its metrics.
  snapshot take(clock::time_point now = clock::now()) const;

 private:
  const bool keep_;
  mutable std::mutex mu_;
  std::uint64_t next_id_ = 1;
  mutable std::vector<std::shared_ptr<connection_metrics>> connections_;
};

}  // namespace warren::metrics
