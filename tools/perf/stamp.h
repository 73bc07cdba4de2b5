// What a producer writes into each message so that consumers can measure latency and check
// sequences, and how it is read back. Pure: no I/O, any thread.
//
// Layout, little-endian, at the start of the body (or, with -B and --json-body, whose bodies
// are the user's, as the value of the header stamp_header):
//   0..7    publish time, nanoseconds: the monotonic clock (CLOCK_MONOTONIC is one clock for
//           every process of the host), or with -ms the wall clock (hosts in sync)
//   8..11   how late the publish was against its rate's schedule, microseconds (saturating);
//           0 when publishing is not paced. Publish time minus this is the intended send time.
//   12..15  the stream number: producer index x producer channels + channel index
//   16..17  the run's tag (random per run: a queue holding an earlier run's messages does not
//           mix its sequences with this run's)
//   18..23  the stream's sequence number, from 0, one per publish on that channel
// A body shorter than 12 octets carries nothing; 12 to 23 octets carry the times only.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <optional>
#include <string_view>

#include "tools/perf/options.h"

namespace warren::perf {

inline constexpr std::string_view stamp_header = "x-perf-stamp";

struct stamp {
  std::int64_t sent_ns = 0;
  std::uint32_t lag_us = 0;
  bool has_sequence = false;
  std::uint64_t stream = 0;  // run tag << 32 | stream number
  std::uint64_t sequence = 0;

  // When the schedule meant the message to go: the start of the coordinated-omission-corrected
  // latency.
  std::int64_t intended_ns() const noexcept {
    return sent_ns - static_cast<std::int64_t>(lag_us) * 1000;
  }
};

// Nanoseconds on the clock the stamps use: monotonic, or the wall clock with -ms.
inline std::int64_t stamp_clock_ns(bool wall) noexcept {
  timespec ts{};
  ::clock_gettime(wall ? CLOCK_REALTIME : CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

namespace detail {
inline void put_le(char* at, std::uint64_t v, int octets) noexcept {
  for (int i = 0; i < octets; ++i) at[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
inline std::uint64_t get_le(const char* at, int octets) noexcept {
  std::uint64_t v = 0;
  for (int i = octets - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(at[i]);
  return v;
}
}  // namespace detail

// Writes what fits in `size` octets at `at`: nothing below timestamp_octets, the times from
// there, and the stream and sequence from sequence_octets.
inline void write_stamp(char* at, std::size_t size, const stamp& s) noexcept {
  if (size < static_cast<std::size_t>(timestamp_octets)) return;
  detail::put_le(at, static_cast<std::uint64_t>(s.sent_ns), 8);
  detail::put_le(at + 8, s.lag_us, 4);
  if (size < static_cast<std::size_t>(sequence_octets)) return;
  detail::put_le(at + 12, s.stream & 0xffffffffu, 4);
  detail::put_le(at + 16, (s.stream >> 32) & 0xffffu, 2);
  detail::put_le(at + 18, s.sequence, 6);
}

// The stamp in `bytes`, if they are long enough to hold one.
inline std::optional<stamp> read_stamp(std::string_view bytes) noexcept {
  if (bytes.size() < static_cast<std::size_t>(timestamp_octets)) return std::nullopt;
  stamp s;
  s.sent_ns = static_cast<std::int64_t>(detail::get_le(bytes.data(), 8));
  s.lag_us = static_cast<std::uint32_t>(detail::get_le(bytes.data() + 8, 4));
  if (bytes.size() >= static_cast<std::size_t>(sequence_octets)) {
    s.has_sequence = true;
    s.stream = detail::get_le(bytes.data() + 12, 4) | (detail::get_le(bytes.data() + 16, 2) << 32);
    s.sequence = detail::get_le(bytes.data() + 18, 6);
  }
  return s;
}

// Microseconds from `from` to `to`, saturating at the 4-octet field's maximum, 0 when negative.
inline std::uint32_t lag_us_between(std::int64_t from_ns, std::int64_t to_ns) noexcept {
  if (to_ns <= from_ns) return 0;
  const std::int64_t us = (to_ns - from_ns) / 1000;
  return us >= 0xffffffffLL ? 0xffffffffu : static_cast<std::uint32_t>(us);
}

}  // namespace warren::perf
