// A metrics::snapshot in Prometheus' text exposition format, version 0.0.4 (README, "Metrics",
// lists every family with its meaning and unit).
//
// Names follow Prometheus' conventions: the `warren_` prefix, `_total` on counters, base units
// (`_seconds`, `_bytes`). Every sample carries `connection` (the registry's id) and, when the
// application named it, `connection_name`; per-channel families (`warren_channel_*`) add
// `channel` (the channel id), per-consumer ones (`warren_consumer_*`) `channel` and `consumer`
// (the consumer tag). The connection-level families count every channel the connection has
// had, so sum them, not the per-channel ones, for totals across channel churn.
//
// Histograms are cumulative `_bucket{le="..."}`, `_sum` and `_count`. The bounds are the powers
// of two of nanoseconds from 2^10 ns (1.024 us) to 2^35 ns (34.4 s), written in seconds: every
// one is a bucket boundary of the engine's log-linear histograms, so each cumulative count is
// exact, never interpolated. Durations are recorded in whole nanoseconds, so `le` counts the
// values below the bound (a value exactly on it has measure zero).
//
// Label values are escaped (backslash, double quote, newline) and made valid UTF-8 (a consumer
// tag is any octet string; each invalid sequence becomes U+FFFD, which Prometheus requires).
// Families without a sample (no connection) are left out. Pure functions: any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/metrics/metrics.h"

namespace warren::metrics {

inline constexpr std::string_view prometheus_content_type =
    "text/plain; version=0.0.4; charset=utf-8";

struct exposition_options {
  bool channels = true;   // the warren_channel_* families
  bool consumers = true;  // the warren_consumer_* families
  // Added to every sample, before warren's own labels (e.g. {"role", "ingest"}). Names must
  // match [a-zA-Z_][a-zA-Z0-9_]*, must not start with "__" and must not be one of warren's
  // (connection, connection_name, channel, consumer, le): std::invalid_argument otherwise.
  std::vector<std::pair<std::string, std::string>> labels;
};

// Appends the exposition of `s` to `out`. Throws std::invalid_argument for a bad label name in
// `o.labels` (before writing anything).
void render_prometheus(const snapshot& s, const exposition_options& o, std::string& out);
std::string render_prometheus(const snapshot& s, const exposition_options& o = {});

// The histograms' bucket bounds in nanoseconds, ascending (+Inf not included).
std::span<const std::uint64_t> latency_bucket_bounds_ns() noexcept;

// A label value as the text format writes it between the quotes: valid UTF-8 (U+FFFD for each
// invalid sequence), with \ " and newline escaped.
std::string escape_label_value(std::string_view v);

// `ns` nanoseconds as exact decimal seconds, without trailing zeros: 1500 -> "0.0000015".
std::string seconds_text(std::uint64_t ns);

}  // namespace warren::metrics
