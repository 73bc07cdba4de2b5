// Which client drives the workload: the one place to change when switching backends.
#include "tools/perf/workload.h"

#include <time.h>

#include <algorithm>
#include <thread>

#include "codec/field_table.h"
#include "engine/client/connection.h"

namespace warren::perf {

std::unique_ptr<workload> make_blocking_workload(const perf_options& o, const topology_plan& plan,
                                                 run_stats& stats,
                                                 std::shared_ptr<const body_source> bodies);

std::unique_ptr<workload> make_async_workload(const perf_options& o, const topology_plan& plan,
                                              run_stats& stats,
                                              std::shared_ptr<const body_source> bodies,
                                              std::shared_ptr<metrics::registry> registry);

std::unique_ptr<workload> make_workload(const perf_options& o, const topology_plan& plan,
                                        run_stats& stats, std::shared_ptr<const body_source> bodies,
                                        std::shared_ptr<metrics::registry> registry) {
  if (o.client == client_kind::blocking) {
    return make_blocking_workload(o, plan, stats, std::move(bodies));
  }
  return make_async_workload(o, plan, stats, std::move(bodies), std::move(registry));
}

publisher::publisher(const perf_options& o, const topology_plan& plan, unsigned producer_index,
                     std::shared_ptr<const body_source> bodies)
    : o_(o),
      run_tag_(plan.run_tag),
      producer_(producer_index),
      bodies_(std::move(bodies)),
      rates_(o.variable_rates, 0),
      sizes_(o.variable_sizes, o.message_size),
      limiter_(o.producer_rate),
      buffer_(static_cast<std::size_t>(o.max_message_size()), '\0'),
      measure_(o.mode != run_mode::sink),
      sequences_(o.producer_channels, 0),
      rng_(std::random_device{}() ^ (std::uint64_t{producer_index} << 32)) {
  if (bodies_) {
    header_stamp_ = true;
    codec::field_table t;
    t.set(std::string(stamp_header),
          codec::field_value::long_string(std::string(sequence_octets, '\0')));
    headers_ = codec::encode_table(t);
  }
}

const std::string& publisher::content_type() const noexcept {
  static const std::string none;
  return bodies_ ? bodies_->content_type() : none;
}

publisher::clock::duration publisher::start_delay() {
  if (o_.producer_random_start_delay_s == 0) return clock::duration::zero();
  std::uniform_int_distribution<std::int64_t> ms(
      1, std::int64_t{o_.producer_random_start_delay_s} * 1000);
  return std::chrono::milliseconds(ms(rng_));
}

publisher::message publisher::next(std::size_t channel) {
  message m;
  if (!measure_) {
    const auto size = sizes_.varies() ? sizes_.value_at(clock::now() - start_) : o_.message_size;
    m.body = bodies_ ? bodies_->body(bodies_->random_order() ? rng_() : published_)
                     : std::string_view(buffer_.data(), static_cast<std::size_t>(size));
    m.sequence = sequences_[channel]++;
    ++published_;
    return m;
  }
  const clock::time_point now = clock::now();
  m.sent_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  if (limiter_.limited()) {
    const std::int64_t intended =
        std::chrono::duration_cast<std::chrono::nanoseconds>(limiter_.intended().time_since_epoch())
            .count();
    m.lag_us = lag_us_between(intended, m.sent_ns);
  }
  m.sequence = sequences_[channel]++;
  stamp st;
  // The wall clock only when asked (-ms): the monotonic one is exact within a host.
  st.sent_ns = o_.use_millis ? stamp_clock_ns(true) : m.sent_ns;
  st.lag_us = m.lag_us;
  st.has_sequence = true;
  st.stream = (std::uint64_t{run_tag_} << 32) |
              (static_cast<std::uint64_t>(producer_) * o_.producer_channels + channel);
  st.sequence = m.sequence;
  if (bodies_) {
    const std::uint64_t n = bodies_->random_order() ? rng_() : published_;
    m.body = bodies_->body(n);
    write_stamp(headers_.data() + headers_.size() - sequence_octets, sequence_octets, st);
  } else {
    const auto size = static_cast<std::size_t>(sizes_.value_at(now - start_));
    write_stamp(buffer_.data(), size, st);
    m.body = std::string_view(buffer_.data(), size);
  }
  ++published_;
  return m;
}

void receiver::count(std::string_view body, std::optional<std::string_view> header_stamp) {
  std::optional<stamp> st;
  if (header_stamp) {
    st = read_stamp(*header_stamp);
  } else if (body_stamps_) {
    st = read_stamp(body);
  }
  if (st) {
    const std::int64_t now = stamp_clock_ns(wall_);
    auto since = [now](std::int64_t t) {
      return now > t ? static_cast<std::uint64_t>(now - t) : std::uint64_t{0};
    };
    slot_.latency.record(since(st->sent_ns));
    slot_.latency_intended.record(since(st->intended_ns()));
    if (st->has_sequence) tracker_.record(st->stream, st->sequence);
  }
  stats_slot::add(slot_.received);
}

void receiver::work() const noexcept {
  if (work_us_ == 0) return;
  if (work_us_ >= 1000) {
    // Sleeping gives the core away, as a consumer waiting on I/O would.
    const std::int64_t ns = std::int64_t{work_us_} * 1000;
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    while (::nanosleep(&ts, &ts) != 0) {
    }
    return;
  }
  // Below a millisecond a sleep overshoots by more than the work: spin, as CPU-bound work does.
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(work_us_);
  while (std::chrono::steady_clock::now() < until) {
  }
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\r', ' ');
  return s;
}

void declare_topology(const perf_options& o, const topology_plan& plan) {
  if (!plan.declare || (!plan.declare_exchange && plan.shared_queues.empty())) return;
  try {
    connection conn(connection_for(o, 0, (o.id.empty() ? std::string("perf") : o.id) + "-setup"));
    conn.connect();
    channel& ch = conn.channel();
    if (plan.declare_exchange) {
      exchange_declare_options x;
      x.durable = true;
      x.auto_delete = false;
      ch.exchange_declare(plan.exchange, plan.exchange_type, x);
    }
    const queue_declare_options q = shared_queue_options(o);
    for (const std::string& name : plan.shared_queues) {
      ch.queue_declare(name, q);
      if (plan.exchange.empty()) continue;
      ch.queue_bind(name, plan.exchange, plan.bind_shared_by_name ? name : plan.routing_key);
    }
    conn.close();
  } catch (const std::exception& e) {
    throw run_error(
        one_line(redact_uri(o.uris.front()) + " (declaring the topology): " + e.what()));
  }
}

}  // namespace warren::perf
