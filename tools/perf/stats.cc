#include "tools/perf/stats.h"

#include <algorithm>

namespace warren::perf {

run_stats::run_stats(std::size_t slot_count)
    : count_(slot_count), slots_(std::make_unique<stats_slot[]>(slot_count)) {}

totals run_stats::snapshot() const {
  totals t;
  for (std::size_t i = 0; i < count_; ++i) {
    const stats_slot& s = slots_[i];
    // A producer counts a publish once it is made, and its confirm may be counted (on an I/O
    // thread) before that: a publish with an outcome is published, so that no snapshot has
    // more outcomes than publishes. Both counts only grow, and so does their maximum: every
    // interval is a difference of growing totals, and the intervals add up to the summary.
    const std::uint64_t confirmed = s.confirmed.load(std::memory_order_acquire);
    const std::uint64_t nacked = s.nacked.load(std::memory_order_acquire);
    const std::uint64_t in_doubt = s.in_doubt.load(std::memory_order_acquire);
    t.confirmed += confirmed;
    t.nacked += nacked;
    t.in_doubt += in_doubt;
    t.returned += s.returned.load(std::memory_order_acquire);
    t.received += s.received.load(std::memory_order_acquire);
    t.recoveries += s.recoveries.load(std::memory_order_acquire);
    t.republished += s.republished.load(std::memory_order_acquire);
    t.unpublished_ns += s.unpublished_ns.load(std::memory_order_acquire);
    t.published +=
        std::max(s.published.load(std::memory_order_acquire), confirmed + nacked + in_doubt);
    auto merge = [](const optional_histogram& from, histogram& into) {
      if (!from.enabled()) return;
      histogram h;
      from.snapshot_into(h);
      into.merge(h);
    };
    merge(s.latency, t.latency);
    merge(s.latency_intended, t.latency_intended);
    merge(s.confirm_latency, t.confirm_latency);
    merge(s.confirm_latency_intended, t.confirm_latency_intended);
  }
  return t;
}

namespace {

// `t`'s counts, and its histograms as they are (the interval's, or the whole run's).
interval_report make_report(const totals& t, double elapsed_s, double seconds) {
  interval_report r;
  r.elapsed_s = elapsed_s;
  r.seconds = seconds;
  r.published = t.published;
  r.confirmed = t.confirmed;
  r.nacked = t.nacked;
  r.in_doubt = t.in_doubt;
  r.returned = t.returned;
  r.received = t.received;
  r.recoveries = t.recoveries;
  r.republished = t.republished;
  r.unpublished_ms = static_cast<double>(t.unpublished_ns) / 1e6;
  if (seconds > 0) {
    r.publish_rate = static_cast<double>(r.published) / seconds;
    r.confirm_rate = static_cast<double>(r.confirmed) / seconds;
    r.receive_rate = static_cast<double>(r.received) / seconds;
  }
  r.latency = t.latency.summary();
  r.latency_intended = t.latency_intended.summary();
  r.confirm_latency = t.confirm_latency.summary();
  r.confirm_latency_intended = t.confirm_latency_intended.summary();
  return r;
}

}  // namespace

interval_report interval_meter::extend_last(const totals& now, double elapsed_s) {
  prev_ = before_prev_;
  prev_elapsed_s_ = before_prev_elapsed_s_;
  return next(now, elapsed_s);
}

namespace {
// A producer counts a publish before making it and takes it back when the publish is refused
// (at stop, say), so a total can go down by what an earlier interval already counted: such an
// interval shows 0, not an unsigned wrap-around (a rate of 1e19 msg/s).
std::uint64_t since(std::uint64_t now, std::uint64_t before) noexcept {
  return now >= before ? now - before : 0;
}

// What `now` recorded since `before` (an earlier snapshot of the same recorders).
histogram histogram_since(const histogram& now, const histogram& before) {
  histogram h = now;
  h.subtract(before);
  // Bucket bounds can overshoot the exact extremes of the whole run by the bucket error.
  if (h.count()) h.set_extremes(std::max(h.min(), now.min()), std::min(h.max(), now.max()));
  return h;
}
}  // namespace

interval_report interval_meter::next(const totals& now, double elapsed_s) {
  totals d;
  d.published = since(now.published, prev_.published);
  d.confirmed = since(now.confirmed, prev_.confirmed);
  d.nacked = since(now.nacked, prev_.nacked);
  d.in_doubt = since(now.in_doubt, prev_.in_doubt);
  d.returned = since(now.returned, prev_.returned);
  d.received = since(now.received, prev_.received);
  d.recoveries = since(now.recoveries, prev_.recoveries);
  d.republished = since(now.republished, prev_.republished);
  d.unpublished_ns = since(now.unpublished_ns, prev_.unpublished_ns);
  d.latency = histogram_since(now.latency, prev_.latency);
  d.latency_intended = histogram_since(now.latency_intended, prev_.latency_intended);
  d.confirm_latency = histogram_since(now.confirm_latency, prev_.confirm_latency);
  d.confirm_latency_intended =
      histogram_since(now.confirm_latency_intended, prev_.confirm_latency_intended);
  interval_report r = make_report(d, elapsed_s, elapsed_s - prev_elapsed_s_);
  before_prev_ = std::move(prev_);
  before_prev_elapsed_s_ = prev_elapsed_s_;
  prev_ = now;
  prev_elapsed_s_ = elapsed_s;
  return r;
}

interval_report whole_run(const totals& final_totals, double elapsed_s) {
  return make_report(final_totals, elapsed_s, elapsed_s);
}

}  // namespace warren::perf
