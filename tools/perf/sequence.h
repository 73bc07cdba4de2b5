// Per-stream sequence checking (as omq's --detect-gaps-in-messages): every producer channel is a
// stream whose publishes carry 0, 1, 2, ... (stamp.h). Each consumer channel records what it
// receives; after the run the records of the consumers that shared a queue are merged, and the
// summary says what was missing, duplicated or out of order.
//
//   missing     sequence numbers never received between the stream's start (0 for this run's
//               streams, the lowest received for an earlier run's) and the highest received:
//               lost, dropped by the broker (x-max-length, unroutable), nacked, in doubt and
//               not stored, or still in the queue when the run ended (a requeued message);
//               the numbers after the highest received are not counted (still in flight)
//   gaps        how many runs of consecutive missing numbers those are
//   duplicates  deliveries of a number the queue's consumers had already received
//               (redeliveries after a nack, a requeue or a recovery: at-least-once)
//   reordered   deliveries that came after a higher number of their stream on the same channel
//
// Threads: a tracker is used by one thread at a time (a consumer channel's handler runs one
// delivery at a time); summarize() runs once the consumers are stopped.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace warren::perf {

class sequence_tracker {
 public:
  // One delivery of `sequence` of `stream` (run tag << 32 | stream number).
  void record(std::uint64_t stream, std::uint64_t sequence);

  std::uint64_t received() const noexcept { return received_; }
  std::uint64_t duplicates() const noexcept { return duplicates_; }
  std::uint64_t reordered() const noexcept { return reordered_; }
  // Per stream: received numbers as inclusive ranges, start -> end.
  using ranges = std::map<std::uint64_t, std::uint64_t>;
  const std::unordered_map<std::uint64_t, ranges>& streams() const noexcept { return streams_; }

 private:
  std::unordered_map<std::uint64_t, ranges> streams_;
  std::uint64_t last_stream_ = 0;
  ranges* last_ = nullptr;
  std::uint64_t received_ = 0, duplicates_ = 0, reordered_ = 0;
};

struct sequence_summary {
  std::uint64_t streams = 0;   // (queue, stream) pairs seen
  std::uint64_t received = 0;  // deliveries that carried a sequence number
  std::uint64_t missing = 0, gaps = 0, duplicates = 0, reordered = 0;
  bool operator==(const sequence_summary&) const = default;
};

// One consumer channel's record, and the queue it consumed (channels of one queue share its
// messages, so their records are merged).
struct sequence_record {
  std::string queue;
  const sequence_tracker* tracker = nullptr;
};

// `run_tag`: this run's tag; its streams start at 0, an earlier run's at their lowest number.
sequence_summary summarize(const std::vector<sequence_record>& records, std::uint16_t run_tag);

}  // namespace warren::perf
