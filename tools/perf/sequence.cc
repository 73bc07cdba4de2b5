#include "tools/perf/sequence.h"

#include <algorithm>
#include <iterator>
#include <utility>

namespace warren::perf {

void sequence_tracker::record(std::uint64_t stream, std::uint64_t seq) {
  ++received_;
  if (last_ == nullptr || stream != last_stream_) {
    last_ = &streams_[stream];
    last_stream_ = stream;
  }
  ranges& r = *last_;
  if (r.empty()) {
    r.emplace(seq, seq);
    return;
  }
  auto top = std::prev(r.end());
  if (seq > top->second) {
    // The usual case: the next number, extending the highest range.
    if (seq == top->second + 1) {
      top->second = seq;
    } else {
      r.emplace_hint(r.end(), seq, seq);
    }
    return;
  }
  // At or below the highest received: a duplicate, or a late one filling a hole.
  auto next = r.upper_bound(seq);
  if (next != r.begin()) {
    auto prev = std::prev(next);
    if (seq <= prev->second) {
      ++duplicates_;
      return;
    }
    ++reordered_;
    if (prev->second + 1 == seq) {
      prev->second = seq;
      if (next != r.end() && next->first == seq + 1) {
        prev->second = next->second;
        r.erase(next);
      }
      return;
    }
  } else {
    ++reordered_;
  }
  if (next != r.end() && next->first == seq + 1) {
    const std::uint64_t end = next->second;
    r.erase(next);
    r.emplace(seq, end);
  } else {
    r.emplace(seq, seq);
  }
}

sequence_summary summarize(const std::vector<sequence_record>& records, std::uint16_t run_tag) {
  sequence_summary out;
  // queue -> stream -> every range every channel of that queue received
  std::map<std::string,
           std::map<std::uint64_t, std::vector<std::pair<std::uint64_t, std::uint64_t>>>>
      by_queue;
  for (const sequence_record& rec : records) {
    if (rec.tracker == nullptr) continue;
    out.received += rec.tracker->received();
    out.duplicates += rec.tracker->duplicates();
    out.reordered += rec.tracker->reordered();
    auto& streams = by_queue[rec.queue];
    for (const auto& [stream, ranges] : rec.tracker->streams()) {
      auto& all = streams[stream];
      all.insert(all.end(), ranges.begin(), ranges.end());
    }
  }
  for (auto& [queue, streams] : by_queue) {
    for (auto& [stream, all] : streams) {
      ++out.streams;
      std::sort(all.begin(), all.end());
      const bool ours = ((stream >> 32) & 0xffffu) == run_tag;
      std::uint64_t expected = ours ? 0 : all.front().first;  // next number not yet covered
      std::uint64_t total = 0, covered = 0;
      for (const auto& [lo, hi] : all) {
        total += hi - lo + 1;
        if (lo > expected) {
          out.missing += lo - expected;
          ++out.gaps;
        }
        if (hi + 1 > expected) {
          covered += hi + 1 - std::max(lo, expected);
          expected = hi + 1;
        }
      }
      // Numbers two channels of the queue both received.
      out.duplicates += total - covered;
    }
  }
  return out;
}

}  // namespace warren::perf
