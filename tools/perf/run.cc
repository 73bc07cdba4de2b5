#include "tools/perf/run.h"

#include <sys/resource.h>

#include <ctime>
#include <fstream>
#include <thread>

#include "engine/metrics/http_exporter.h"
#include "engine/metrics/prometheus.h"
#include "tools/perf/bodies.h"
#include "tools/perf/plan.h"
#include "tools/perf/report.h"
#include "tools/perf/svg_plot.h"
#include "tools/perf/workload.h"

namespace warren::perf {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

double seconds_between(clock::time_point a, clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.flush();
  if (!f) throw run_error("cannot write " + path);
}

// PerfTest's default test id: "test-" and the local time, HHMMSS-mmm.
std::string default_test_id() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm local{};
  ::localtime_r(&t, &local);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  char buf[32];
  std::snprintf(buf, sizeof buf, "test-%02d%02d%02d-%03d", local.tm_hour, local.tm_min,
                local.tm_sec, static_cast<int>(ms.count()));
  return buf;
}

// Enables the histograms the run fills: consumers' latency, producers' confirm latency, each
// also from the intended send time when publishing is paced.
void enable_histograms(const perf_options& o, run_stats& stats) {
  const report_style style = style_of(o);
  for (unsigned i = 0; i < o.producers; ++i) {
    if (!style.confirm_latency) break;
    stats.slot(i).confirm_latency.enable();
    if (style.intended) stats.slot(i).confirm_latency_intended.enable();
  }
  for (unsigned j = 0; j < o.consumers; ++j) {
    if (!style.latency) break;
    stats.slot(o.producers + j).latency.enable();
    if (style.intended) stats.slot(o.producers + j).latency_intended.enable();
  }
}

// When the run is over, apart from time, signals and failures.
class end_condition {
 public:
  explicit end_condition(const perf_options& o) : o_(o) {}

  bool reached(const workload& w, std::uint64_t received, clock::time_point now) {
    const bool producers_done =
        o_.producers == 0 || (o_.producer_message_count && w.producers_finished() == o_.producers);
    const bool consumers_limited = o_.consumer_message_count || o_.exit != exit_when::never;
    const bool consumers_done =
        o_.consumers == 0 || (consumers_limited && w.consumers_finished() == o_.consumers);
    if (consumers_limited && consumers_done) return true;
    if (!o_.producer_message_count || !producers_done) return false;
    if (consumers_done) return true;
    // Producers are done, consumers have no count: over once deliveries stop for a second.
    if (received != last_received_) {
      last_received_ = received;
      last_change_ = now;
    }
    return now - last_change_ >= std::chrono::seconds(1);
  }

 private:
  const perf_options& o_;
  std::uint64_t last_received_ = ~std::uint64_t{0};
  clock::time_point last_change_{};
};

}  // namespace

std::atomic<bool>& interrupted() noexcept {
  static std::atomic<bool> flag{false};
  return flag;
}

int run(const perf_options& o, std::ostream& out, std::ostream& err, bool live) {
  std::shared_ptr<const body_source> bodies;
  try {
    bodies = body_source::for_options(o);
  } catch (const usage_error& e) {
    err << "perf: " << one_line(e.what()) << "\n";
    return 2;
  }
  const topology_plan plan = make_plan(o, random_routing_key(), random_seed());
  run_stats stats(o.producers + o.consumers);
  enable_histograms(o, stats);
  const report_style style = style_of(o);
  // PerfTest's CSV is written as the run goes, so that a run cut short leaves its rows.
  std::ofstream perftest_csv;
  const std::string test_id = o.id.empty() ? default_test_id() : o.id;
  if (!o.perftest_csv_path.empty()) {
    perftest_csv.open(o.perftest_csv_path, std::ios::binary | std::ios::trunc);
    perftest_csv << perftest_csv_header(o) << std::flush;
    if (!perftest_csv) {
      err << "perf: cannot write " << o.perftest_csv_path << "\n";
      return 1;
    }
  }
  // --metrics-prometheus: /metrics from the start of the workload to the end of the run.
  std::shared_ptr<metrics::registry> registry;
  std::unique_ptr<metrics::http_exporter> exporter;
  if (o.metrics_prometheus_port) {
    // Producers that reached -C close their connections: their counters stay listed.
    registry = std::make_shared<metrics::registry>(true);
    try {
      exporter = std::make_unique<metrics::http_exporter>(
          [registry, &stats, test_id] {
            return metrics::render_prometheus(registry->take()) +
                   prometheus_counters(stats.snapshot(), test_id);
          },
          metrics::http_exporter_options{.host = "0.0.0.0", .port = *o.metrics_prometheus_port});
    } catch (const std::exception& e) {
      err << "perf: " << one_line(e.what()) << "\n";
      return 1;
    }
    out << "metrics: http://0.0.0.0:" << exporter->port() << "/metrics\n" << std::flush;
  }
  std::unique_ptr<workload> w;
  try {
    declare_topology(o, plan);
    w = make_workload(o, plan, stats, bodies, registry);
    w->start();
  } catch (const std::exception& e) {
    err << "perf: " << one_line(e.what()) << "\n";
    return 1;
  }
  // CPU is counted over the same span as the rates (from here to the end of stop()): the
  // engine's start-up, connects and declares are left out, as the peers' drivers leave out
  // theirs.
  const double cpu0 = cpu_seconds();
  const clock::time_point t0 = clock::now();
  std::optional<clock::time_point> end_at;
  if (o.duration_s > 0) {
    end_at = t0 + std::chrono::duration_cast<clock::duration>(
                      std::chrono::duration<double>(o.duration_s));
  }
  interval_meter meter;
  std::vector<interval_report> intervals;
  end_condition ended(o);
  auto show = [&](const interval_report& r) {
    if (live) {
      out << "\r" << format_interval(r, style) << "\033[K" << std::flush;
    } else {
      out << format_interval(r, style) << "\n" << std::flush;
    }
    if (perftest_csv.is_open()) perftest_csv << perftest_csv_row(o, test_id, r) << std::flush;
  };
  std::optional<std::string> failure;
  for (clock::time_point next_tick = t0 + std::chrono::seconds(1);;) {
    std::this_thread::sleep_for(milliseconds(20));
    const clock::time_point now = clock::now();
    if (now >= next_tick) {
      intervals.push_back(meter.next(stats.snapshot(), seconds_between(t0, now)));
      show(intervals.back());
      next_tick += std::chrono::seconds(1);
      if (next_tick <= now) next_tick = now + std::chrono::seconds(1);
    }
    if ((failure = w->failure())) break;
    if (interrupted().load() || (end_at && now >= *end_at)) break;
    if (ended.reached(*w, stats.snapshot().received, now)) break;
  }
  w->stop(milliseconds(5000));
  if (!failure) failure = w->failure();
  const clock::time_point t_end = clock::now();
  const totals final_totals = stats.snapshot();
  // The tail since the last full second, so that the intervals add up to the summary; under
  // half a second it joins the last interval (PerfTest's CSV has its row already: it gets one
  // for the tail only when the tail is a line of its own).
  const double t_end_s = seconds_between(t0, t_end);
  if (!intervals.empty() && t_end_s - intervals.back().elapsed_s < 0.5) {
    intervals.back() = meter.extend_last(final_totals, t_end_s);
  } else {
    intervals.push_back(meter.next(final_totals, t_end_s));
    show(intervals.back());
  }
  if (live) out << "\n";
  run_summary summary =
      make_summary(whole_run(final_totals, seconds_between(t0, t_end)), cpu_seconds() - cpu0);
  const sequence_summary sequence = summarize(w->sequence_records(), plan.run_tag);
  if (sequence.received > 0) summary.sequence = sequence;
  out << format_summary(summary, style) << std::flush;
  try {
    if (perftest_csv.is_open()) {
      perftest_csv.close();
      if (!perftest_csv) throw run_error("cannot write " + o.perftest_csv_path);
    }
    if (!o.json_path.empty()) {
      perf_options shown = o;
      shown.routing_key = plan.routing_key;  // the random one, when -k was not given
      write_file(o.json_path, to_json(shown, intervals, summary));
    }
    if (!o.csv_path.empty()) write_file(o.csv_path, to_csv(intervals, summary));
    if (!o.plot_path.empty()) {
      const std::string title =
          "warren perf: " + std::to_string(o.producers) + " producers, " +
          std::to_string(o.consumers) + " consumers, " + std::to_string(o.message_size) + " B" +
          (o.confirms() ? ", confirm window " + std::to_string(o.confirm_window) : "");
      write_file(o.plot_path, render_svg(intervals, title, style.latency));
    }
  } catch (const std::exception& e) {
    err << "perf: " << one_line(e.what()) << "\n";
    return 1;
  }
  if (failure) {
    err << "perf: " << *failure << "\n";
    return 1;
  }
  return 0;
}

int perf_main(std::span<const std::string> args, std::ostream& out, std::ostream& err, bool live) {
  perf_options o;
  try {
    o = parse_options(args);
  } catch (const usage_error& e) {
    err << "perf: " << one_line(e.what()) << "\n";
    return 2;
  }
  if (o.help) {
    out << help_text();
    return 0;
  }
  return run(o, out, err, live);
}

}  // namespace warren::perf
