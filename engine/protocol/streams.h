// RabbitMQ's quorum queues and streams as AMQP 0-9-1 carries them, sans-I/O and shared by both
// faces: where a stream consumer starts (the x-stream-offset consumer argument), the headers the
// broker adds to what it delivers (x-stream-offset on a stream's deliveries, x-delivery-count on
// a quorum queue's redeliveries), and how far a stream consumer's application has got
// (stream_progress, what a recovery resumes after).
//
// Threading: plain values and one-thread-at-a-time objects; no shared state. Errors: the
// stream_offset factories and parse throw std::invalid_argument naming the bad value; the
// header readers never throw (a missing or malformed header reads as nullopt).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

#include "codec/content.h"
#include "codec/field_table.h"

namespace warren {

// Where a stream consumer starts reading: basic.consume's x-stream-offset argument. The
// broker's default (no argument) is next.
//
// Encoding, as RabbitMQ 3.10 reads it: first, last and next as long strings; an offset as a
// signed 64 ('l'); a point in time as an AMQP timestamp ('T', whole seconds since the epoch: a
// long would be read as an offset, which is what clients without a timestamp type end up
// sending, rabbitmq-server#3376); an interval back from now ("1h") as a long string.
class stream_offset {
 public:
  enum class kind : std::uint8_t {
    first,      // the oldest message the stream still holds
    last,       // the start of the last chunk written (a few messages before the end)
    next,       // only what is published after the consumer starts
    offset,     // this offset (the first one still held when it was truncated away)
    timestamp,  // the first chunk written at or after this second
    interval,   // as timestamp, `now - interval`, computed by the broker
  };

  static stream_offset first() noexcept { return stream_offset(kind::first); }
  static stream_offset last() noexcept { return stream_offset(kind::last); }
  static stream_offset next() noexcept { return stream_offset(kind::next); }
  // std::invalid_argument above INT64_MAX (the broker reads a signed 64).
  static stream_offset at(std::uint64_t offset);
  // Whole seconds, rounded down. std::invalid_argument before the epoch (a 'T' is unsigned).
  static stream_offset at_time(std::chrono::system_clock::time_point t);
  // Seconds since the epoch.
  static stream_offset at_timestamp(std::uint64_t seconds_since_epoch) noexcept;
  // A number and one unit as RabbitMQ reads them: Y(ears), M(onths), D(ays), h(ours),
  // m(inutes), s(econds), e.g. "1h", "30m", "7D". std::invalid_argument for anything else
  // (the broker would refuse the consume with 406 only once it is sent).
  static stream_offset interval(std::string_view spec);
  // Text as a command line gives it: first, last, next, a decimal offset, an interval ("1h"),
  // or an ISO 8601 date-time with its zone ("2022-06-03T07:45:54Z",
  // "2022-06-03T09:45:54.250+02:00"; fractions dropped). std::invalid_argument otherwise.
  static stream_offset parse(std::string_view text);

  kind what() const noexcept { return what_; }
  // offset: the offset; timestamp: seconds since the epoch; 0 otherwise.
  std::uint64_t value() const noexcept { return value_; }
  // interval: the spec ("1h"); empty otherwise.
  const std::string& interval_spec() const noexcept { return interval_; }

  // The x-stream-offset argument's value (see the encoding above).
  codec::field_value to_field() const;
  // As parse() would read it back ("first", "42", "1h", "2022-06-03T07:45:54Z").
  std::string to_string() const;

  bool operator==(const stream_offset&) const = default;

 private:
  explicit stream_offset(kind k) noexcept : what_(k) {}
  kind what_ = kind::next;
  std::uint64_t value_ = 0;
  std::string interval_;
};

// The argument and header names.
inline constexpr std::string_view x_stream_offset = "x-stream-offset";
inline constexpr std::string_view x_delivery_count = "x-delivery-count";
inline constexpr std::string_view x_queue_type = "x-queue-type";

// The integer under `name` in a message's headers (any integer letter, widened), or nullopt: no
// headers, no such entry, not an integer, or a malformed table. Walks the headers without
// allocating.
std::optional<std::int64_t> header_integer(const codec::basic_properties& p,
                                           std::string_view name) noexcept;
// The same over an owning headers table.
std::optional<std::int64_t> header_integer(const codec::field_table& headers,
                                           std::string_view name) noexcept;

// A stream delivery's offset (its x-stream-offset header); nullopt when absent or negative.
std::optional<std::uint64_t> stream_offset_header(const codec::basic_properties& p) noexcept;
std::optional<std::uint64_t> stream_offset_header(const codec::field_table& headers) noexcept;

// How many times a quorum queue delivered this message before (its x-delivery-count header,
// which RabbitMQ 3.10 adds from the first redelivery on: 1, 2, ...); nullopt when absent (a
// first delivery, or a queue type that does not count) or negative.
std::optional<std::uint64_t> delivery_count_header(const codec::basic_properties& p) noexcept;
std::optional<std::uint64_t> delivery_count_header(const codec::field_table& headers) noexcept;

namespace protocol {

// How far a stream consumer's application has got: the offset of the last delivery it HANDLED,
// i.e. settled (ack, nack or reject), such that every earlier delivery of this consumer was
// settled too. A recovery resumes the consumer at resume_from() (the next offset): what was
// delivered and not yet settled is read again (at-least-once), nothing settled is read twice
// unless its settle was lost with the connection.
//
// Fed by the face's channel: on_delivery for each of the consumer's deliveries (delivery tags
// ascend on a channel, offsets along the stream), on_settled for every decision the channel
// accepted (a multiple=true decision covers every tag up to it, of any consumer of the channel:
// the ones that are not this consumer's are not here). Memory: the deliveries not yet settled,
// which the consumer's prefetch bounds (RabbitMQ sends no more unsettled ones).
//
// No threads, no clock. Threading: one thread at a time (the channel's owner).
class stream_progress {
 public:
  // A delivery of this consumer. Without an offset (no x-stream-offset header: not a stream
  // delivery) it is not tracked.
  void on_delivery(std::uint64_t delivery_tag, std::optional<std::uint64_t> offset);
  // A decision on `delivery_tag` (all tags up to it when `multiple`) went to the broker.
  void on_settled(std::uint64_t delivery_tag, bool multiple);
  // The channel's life ended, or a basic.recover gave every unsettled delivery back: they are
  // not owed anymore and will come again; the watermark stays.
  void forget_unsettled() noexcept { pending_.clear(); }

  // The last handled offset (see above); nullopt before the first.
  std::optional<std::uint64_t> last_handled() const noexcept { return last_; }
  // Where to resume: the offset after last_handled(); nullopt before the first (resume where
  // the consumer first started).
  std::optional<stream_offset> resume_from() const;
  // Deliveries tracked and not yet handled (settled ones behind an unsettled one included).
  std::size_t pending() const noexcept { return pending_.size(); }

 private:
  struct entry {
    std::uint64_t tag = 0;
    std::uint64_t offset = 0;
    bool settled = false;
  };
  void advance() noexcept;

  std::deque<entry> pending_;  // ascending tags
  std::optional<std::uint64_t> last_;
};

}  // namespace protocol
}  // namespace warren
