// The --plot output: one self-contained SVG (no script, no external reference) with two
// panels over elapsed time: message rates (published, confirmed, received) and latency
// percentiles (median, 95th, 99th, 99.9th; log scale when they span more than a decade).
// Each series is a <polyline data-series="NAME">; axes have ticks and labels; a legend
// names every series. Pure string work; any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tools/perf/stats.h"

namespace warren::perf {

inline constexpr int plot_width = 1000;
inline constexpr int plot_height = 760;

std::string render_svg(const std::vector<interval_report>& intervals, std::string_view title,
                       bool latency);

// `s` with &, <, >, " and ' escaped for XML text and attribute values.
std::string xml_escape(std::string_view s);

}  // namespace warren::perf
