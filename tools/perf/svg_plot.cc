#include "tools/perf/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>

namespace warren::perf {
namespace {

struct series {
  const char* name;
  const char* color;
  std::function<double(const interval_report&)> value;
};

struct panel {
  double left, top, width, height;
};

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string label(double v) {
  char buf[32];
  if (std::fabs(v) >= 1e6) {
    std::snprintf(buf, sizeof buf, "%gM", v / 1e6);
  } else if (std::fabs(v) >= 1e4) {
    std::snprintf(buf, sizeof buf, "%gk", v / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%g", v);
  }
  return buf;
}

// 1, 2 or 5 times a power of ten, so that about `target` steps cover `range`.
double nice_step(double range, int target) {
  if (range <= 0) return 1;
  const double raw = range / target;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0}) {
    if (m * p >= raw) return m * p;
  }
  return 10 * p;
}

class svg_writer {
 public:
  void text(double x, double y, std::string_view s, std::string_view extra = "") {
    out_ += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\"" +
            (extra.empty() ? "" : " " + std::string(extra)) + ">" + xml_escape(s) + "</text>\n";
  }
  void line(double x1, double y1, double x2, double y2, std::string_view style) {
    out_ += "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" +
            num(y2) + "\" " + std::string(style) + "/>\n";
  }
  void raw(std::string_view s) { out_ += s; }
  std::string& str() { return out_; }

 private:
  std::string out_;
};

// Draws one panel: frame, grid, ticks, axis titles, the series and their legend.
void draw_panel(svg_writer& w, const panel& p, const std::vector<interval_report>& iv,
                const std::vector<series>& list, std::string_view title, std::string_view unit,
                bool allow_log) {
  double x_max = 1;
  for (const interval_report& r : iv) x_max = std::max(x_max, r.elapsed_s);
  double y_min = 0, y_max = 0, positive_min = 0;
  for (const series& s : list) {
    for (const interval_report& r : iv) {
      const double v = s.value(r);
      if (!std::isfinite(v) || v < 0) continue;
      y_max = std::max(y_max, v);
      if (v > 0) positive_min = positive_min == 0 ? v : std::min(positive_min, v);
    }
  }
  const bool log_scale = allow_log && positive_min > 0 && y_max / positive_min > 10;
  double lo = 0, hi = 0;
  if (log_scale) {
    lo = std::floor(std::log10(positive_min));
    hi = std::max(lo + 1, std::ceil(std::log10(y_max)));
  } else {
    const double step = nice_step(y_max > 0 ? y_max : 1, 5);
    hi = std::max(step, std::ceil(y_max / step) * step);
  }
  auto x_of = [&](double x) { return p.left + x / x_max * p.width; };
  auto y_of = [&](double v) {
    const double f = log_scale ? (std::log10(std::max(v, std::pow(10.0, lo))) - lo) / (hi - lo)
                               : (v - y_min) / (hi - y_min);
    return p.top + p.height - f * p.height;
  };

  w.text(p.left, p.top - 12, title, "font-size=\"15\" font-weight=\"bold\"");
  w.raw("<rect x=\"" + num(p.left) + "\" y=\"" + num(p.top) + "\" width=\"" + num(p.width) +
        "\" height=\"" + num(p.height) + "\" fill=\"#ffffff\" stroke=\"#333333\"/>\n");
  // Horizontal grid and y tick labels.
  std::vector<double> ticks;
  if (log_scale) {
    for (double e = lo; e <= hi; ++e) ticks.push_back(std::pow(10.0, e));
  } else {
    const double step = nice_step(hi, 5);
    for (double v = 0; v <= hi + step / 2; v += step) ticks.push_back(v);
  }
  for (double v : ticks) {
    const double y = y_of(v);
    w.line(p.left, y, p.left + p.width, y, "stroke=\"#dddddd\"");
    w.text(p.left - 8, y + 4, label(v), "text-anchor=\"end\" font-size=\"12\"");
  }
  // Vertical grid and x tick labels.
  const double xstep = nice_step(x_max, 10);
  for (double x = 0; x <= x_max + xstep / 2; x += xstep) {
    const double px = x_of(std::min(x, x_max));
    if (x > x_max) break;
    w.line(px, p.top, px, p.top + p.height, "stroke=\"#eeeeee\"");
    w.text(px, p.top + p.height + 16, label(x), "text-anchor=\"middle\" font-size=\"12\"");
  }
  w.text(p.left + p.width / 2, p.top + p.height + 34, "elapsed time (s)",
         "text-anchor=\"middle\" font-size=\"13\"");
  const std::string ylabel = std::string(unit) + (log_scale ? " (log scale)" : "");
  w.text(p.left - 62, p.top + p.height / 2, ylabel,
         "text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 " + num(p.left - 62) +
             " " + num(p.top + p.height / 2) + ")\"");

  // Legend above the frame's top right corner, clear of the data.
  auto legend_width = [](const series& s) {
    return 40 + 7.5 * static_cast<double>(std::string_view(s.name).size());
  };
  double legend_x = p.left + p.width;
  for (const series& s : list) legend_x -= legend_width(s);
  for (const series& s : list) {
    std::string points;
    std::string markers;
    for (const interval_report& r : iv) {
      const double v = s.value(r);
      if (!std::isfinite(v) || v < 0 || (log_scale && v <= 0)) continue;
      const std::string xy = num(x_of(r.elapsed_s)) + "," + num(y_of(v));
      points += (points.empty() ? "" : " ") + xy;
      if (iv.size() <= 120) {
        markers += "<circle cx=\"" + num(x_of(r.elapsed_s)) + "\" cy=\"" + num(y_of(v)) +
                   "\" r=\"2.5\" fill=\"" + s.color + "\"/>\n";
      }
    }
    w.raw("<polyline data-series=\"" + std::string(s.name) + "\" fill=\"none\" stroke=\"" +
          s.color + "\" stroke-width=\"2\" points=\"" + points + "\"/>\n");
    w.raw(markers);
    w.line(legend_x, p.top - 16, legend_x + 22, p.top - 16,
           "stroke=\"" + std::string(s.color) + "\" stroke-width=\"3\"");
    w.text(legend_x + 28, p.top - 12, s.name, "font-size=\"12\" class=\"legend\"");
    legend_x += legend_width(s);
  }
}

}  // namespace

std::string xml_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // Control characters are not allowed in XML 1.0 text.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string render_svg(const std::vector<interval_report>& intervals, std::string_view title,
                       bool latency) {
  svg_writer w;
  w.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  w.raw("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(plot_width) +
        "\" height=\"" + std::to_string(plot_height) + "\" viewBox=\"0 0 " +
        std::to_string(plot_width) + " " + std::to_string(plot_height) +
        "\" font-family=\"sans-serif\">\n");
  w.raw("<title>" + xml_escape(title) + "</title>\n");
  w.raw("<rect width=\"100%\" height=\"100%\" fill=\"#fafafa\"/>\n");
  w.text(plot_width / 2.0, 26, title, "text-anchor=\"middle\" font-size=\"17\"");

  const std::vector<series> rates = {
      {"published", "#1f77b4", [](const interval_report& r) { return r.publish_rate; }},
      {"confirmed", "#2ca02c", [](const interval_report& r) { return r.confirm_rate; }},
      {"received", "#d62728", [](const interval_report& r) { return r.receive_rate; }},
  };
  draw_panel(w, {90, 70, 870, 260}, intervals, rates, "Message rates", "msg/s", false);

  if (latency) {
    // Intervals without samples have no latency: left out rather than drawn as zero.
    // Milliseconds once latencies reach 10 ms: "250" reads better than "250k".
    double top = 0;
    for (const interval_report& r : intervals) {
      if (r.latency.count) top = std::max(top, r.latency.p999);
    }
    const double scale = top >= 10'000 ? 1e-3 : 1;
    auto l = [scale](double latency_summary::*m) {
      return [m, scale](const interval_report& r) {
        return r.latency.count ? r.latency.*m * scale : -1.0;
      };
    };
    const std::vector<series> percentiles = {
        {"median", "#1f77b4", l(&latency_summary::p50)},
        {"95th", "#ff7f0e", l(&latency_summary::p95)},
        {"99th", "#d62728", l(&latency_summary::p99)},
        {"99.9th", "#9467bd", l(&latency_summary::p999)},
    };
    draw_panel(w, {90, 430, 870, 260}, intervals, percentiles, "Latency percentiles",
               scale == 1 ? "latency (us)" : "latency (ms)", true);
  } else {
    w.text(plot_width / 2.0, 520, "no latency: messages carry no timestamp (-s below 12)",
           "text-anchor=\"middle\" font-size=\"14\"");
  }
  w.raw("</svg>\n");
  return std::move(w.str());
}

}  // namespace warren::perf
