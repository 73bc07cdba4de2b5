#include "engine/protocol/streams.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <stdexcept>

namespace warren {
namespace {

bool all_digits(std::string_view s) noexcept {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Decimal digits to an unsigned 64; nullopt on overflow or a non-digit.
std::optional<std::uint64_t> to_u64(std::string_view s) noexcept {
  if (!all_digits(s)) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
    if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

// Days since 1970-01-01 of a proleptic Gregorian date, and back (independent of the local zone).
std::int64_t days_from_civil(int year, int month, int day) noexcept {
  const int y = year - (month <= 2 ? 1 : 0);
  const int era = (y >= 0 ? y : y - 399) / 400;
  const int yoe = y - era * 400;
  const int doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
  const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return static_cast<std::int64_t>(era) * 146097 + doe - 719468;
}

void civil_from_days(std::int64_t z, std::int64_t& year, unsigned& month, unsigned& day) noexcept {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  day = doy - (153 * mp + 2) / 5 + 1;
  month = mp < 10 ? mp + 3 : mp - 9;
  year = static_cast<std::int64_t>(yoe) + era * 400 + (month <= 2 ? 1 : 0);
}

// YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM) to seconds since the epoch.
std::optional<std::int64_t> parse_date_time(std::string_view v) noexcept {
  if (v.size() < 20 || v[4] != '-' || v[7] != '-' || (v[10] != 'T' && v[10] != 't') ||
      v[13] != ':' || v[16] != ':') {
    return std::nullopt;
  }
  auto num = [&](std::size_t at, std::size_t n) -> int {
    const auto d = to_u64(v.substr(at, n));
    return d ? static_cast<int>(*d) : -1;
  };
  const int year = num(0, 4), month = num(5, 2), day = num(8, 2);
  const int hour = num(11, 2), minute = num(14, 2), second = num(17, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 ||
      minute < 0 || minute > 59 || second < 0 || second > 60) {
    return std::nullopt;
  }
  std::size_t at = 19;
  if (v[at] == '.') {
    std::size_t end = at + 1;
    while (end < v.size() && v[end] >= '0' && v[end] <= '9') ++end;
    if (end == at + 1) return std::nullopt;
    at = end;
  }
  int offset_s = 0;
  const std::string_view zone = v.substr(at);
  if (zone == "Z" || zone == "z") {
    offset_s = 0;
  } else if (zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && zone[3] == ':') {
    const int h = num(at + 1, 2), m = num(at + 4, 2);
    if (h < 0 || h > 18 || m < 0 || m > 59) return std::nullopt;
    offset_s = (h * 3600 + m * 60) * (zone[0] == '-' ? -1 : 1);
  } else {
    return std::nullopt;
  }
  return days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset_s;
}

std::optional<std::uint64_t> non_negative(std::optional<std::int64_t> v) noexcept {
  if (!v || *v < 0) return std::nullopt;
  return static_cast<std::uint64_t>(*v);
}

}  // namespace

stream_offset stream_offset::at(std::uint64_t offset) {
  if (offset > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    throw std::invalid_argument("stream offset " + std::to_string(offset) +
                                " is above 2^63-1 (x-stream-offset is a signed 64)");
  }
  stream_offset o(kind::offset);
  o.value_ = offset;
  return o;
}

stream_offset stream_offset::at_time(std::chrono::system_clock::time_point t) {
  const auto s = std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
  if (s < 0) {
    throw std::invalid_argument("stream offset timestamp before 1970-01-01 (" + std::to_string(s) +
                                " s): an AMQP timestamp is unsigned");
  }
  return at_timestamp(static_cast<std::uint64_t>(s));
}

stream_offset stream_offset::at_timestamp(std::uint64_t seconds_since_epoch) noexcept {
  stream_offset o(kind::timestamp);
  o.value_ = seconds_since_epoch;
  return o;
}

stream_offset stream_offset::interval(std::string_view spec) {
  // At most 18 digits: the broker multiplies the number by its unit's seconds.
  if (spec.size() < 2 || spec.size() > 19 || !all_digits(spec.substr(0, spec.size() - 1)) ||
      std::string_view("YMDhms").find(spec.back()) == std::string_view::npos) {
    throw std::invalid_argument("stream offset interval '" + std::string(spec) +
                                "' is not a number and one of the units Y, M, D, h, m, s "
                                "(e.g. 1h, 30m, 7D)");
  }
  stream_offset o(kind::interval);
  o.interval_ = std::string(spec);
  return o;
}

stream_offset stream_offset::parse(std::string_view v) {
  if (v == "first") return first();
  if (v == "last") return last();
  if (v == "next") return next();
  if (all_digits(v)) {
    const auto n = to_u64(v);
    if (!n) throw std::invalid_argument("stream offset '" + std::string(v) + "' is too large");
    return at(*n);
  }
  if (v.size() >= 2 && v.size() <= 19 && all_digits(v.substr(0, v.size() - 1)) &&
      std::string_view("YMDhms").find(v.back()) != std::string_view::npos) {
    return interval(v);
  }
  if (const auto t = parse_date_time(v)) {
    if (*t < 0) {
      throw std::invalid_argument("stream offset date-time '" + std::string(v) +
                                  "' is before 1970-01-01 (an AMQP timestamp is unsigned)");
    }
    return at_timestamp(static_cast<std::uint64_t>(*t));
  }
  throw std::invalid_argument("stream offset '" + std::string(v) +
                              "' is none of first, last, next, an offset, an interval (1h, 30m, "
                              "7D) or an ISO 8601 date-time with its zone (2022-06-03T07:45:54Z)");
}

codec::field_value stream_offset::to_field() const {
  switch (what_) {
    case kind::first:
      return codec::field_value::long_string("first");
    case kind::last:
      return codec::field_value::long_string("last");
    case kind::next:
      return codec::field_value::long_string("next");
    case kind::offset:
      return codec::field_value::i64(static_cast<std::int64_t>(value_));
    case kind::timestamp:
      return codec::field_value::timestamp(value_);
    case kind::interval:
      return codec::field_value::long_string(interval_);
  }
  return codec::field_value::long_string("next");
}

std::string stream_offset::to_string() const {
  switch (what_) {
    case kind::first:
      return "first";
    case kind::last:
      return "last";
    case kind::next:
      return "next";
    case kind::offset:
      return std::to_string(value_);
    case kind::interval:
      return interval_;
    case kind::timestamp: {
      const auto secs = static_cast<std::int64_t>(value_ / 86400);
      const auto rest = static_cast<unsigned>(value_ % 86400);
      std::int64_t y = 0;
      unsigned m = 0, d = 0;
      civil_from_days(secs, y, m, d);
      char buf[48];
      std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02u:%02u:%02uZ", static_cast<long long>(y),
                    m, d, rest / 3600, rest / 60 % 60, rest % 60);
      return buf;
    }
  }
  return "next";
}

std::optional<std::int64_t> header_integer(const codec::basic_properties& p,
                                           std::string_view name) noexcept {
  if ((p.flags & codec::basic_properties::headers_flag) == 0) return std::nullopt;
  codec::field_view v;
  codec::errc ec = codec::errc::ok;
  if (!codec::find_in_table(p.headers, name, v, ec)) return std::nullopt;
  return v.as_integer();
}

std::optional<std::int64_t> header_integer(const codec::field_table& headers,
                                           std::string_view name) noexcept {
  const codec::field_value* v = headers.find(name);
  if (v == nullptr) return std::nullopt;
  return v->as_integer();
}

std::optional<std::uint64_t> stream_offset_header(const codec::basic_properties& p) noexcept {
  return non_negative(header_integer(p, x_stream_offset));
}
std::optional<std::uint64_t> stream_offset_header(const codec::field_table& headers) noexcept {
  return non_negative(header_integer(headers, x_stream_offset));
}
std::optional<std::uint64_t> delivery_count_header(const codec::basic_properties& p) noexcept {
  return non_negative(header_integer(p, x_delivery_count));
}
std::optional<std::uint64_t> delivery_count_header(const codec::field_table& headers) noexcept {
  return non_negative(header_integer(headers, x_delivery_count));
}

namespace protocol {

void stream_progress::on_delivery(std::uint64_t delivery_tag, std::optional<std::uint64_t> offset) {
  if (!offset) return;
  // A tag not above the last one tracked belongs to an earlier life (tags restart at 1).
  if (!pending_.empty() && delivery_tag <= pending_.back().tag) pending_.clear();
  pending_.push_back({delivery_tag, *offset, false});
}

void stream_progress::on_settled(std::uint64_t delivery_tag, bool multiple) {
  if (pending_.empty() || delivery_tag < pending_.front().tag) return;
  if (multiple) {
    for (entry& e : pending_) {
      if (e.tag > delivery_tag) break;
      e.settled = true;
    }
  } else {
    auto it = std::lower_bound(pending_.begin(), pending_.end(), delivery_tag,
                               [](const entry& e, std::uint64_t t) { return e.tag < t; });
    if (it == pending_.end() || it->tag != delivery_tag) return;
    it->settled = true;
  }
  advance();
}

void stream_progress::advance() noexcept {
  while (!pending_.empty() && pending_.front().settled) {
    const std::uint64_t off = pending_.front().offset;
    if (!last_ || off > *last_) last_ = off;
    pending_.pop_front();
  }
}

std::optional<stream_offset> stream_progress::resume_from() const {
  if (!last_) return std::nullopt;
  return stream_offset::at(*last_ + 1);
}

}  // namespace protocol
}  // namespace warren
