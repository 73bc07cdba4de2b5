#include "tools/perf/report.h"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace warren::perf {
namespace {

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// Microseconds: whole above 100, one decimal below (sub-100 us latencies are common on loopback).
std::string us(double v) {
  return fixed(v, v >= 100 ? 0 : 1);
}

nlohmann::ordered_json latency_json(const latency_summary& l) {
  return {{"min", l.min}, {"p50", l.p50},   {"p75", l.p75}, {"p95", l.p95},
          {"p99", l.p99}, {"p999", l.p999}, {"max", l.max}};
}

nlohmann::ordered_json queue_argument_json(const queue_argument_value& v) {
  return std::visit([](const auto& x) { return nlohmann::ordered_json(x); }, v);
}

const char* mode_name(run_mode m) {
  switch (m) {
    case run_mode::sink:
      return "sink";
    case run_mode::firehose:
      return "firehose";
    case run_mode::broker:
      break;
  }
  return "broker";
}

nlohmann::ordered_json options_json(const perf_options& o) {
  nlohmann::ordered_json uris = nlohmann::ordered_json::array();
  for (const std::string& u : o.uris) uris.push_back(redact_uri(u));
  nlohmann::ordered_json qa = nlohmann::ordered_json::object();
  for (const queue_argument& a : o.queue_arguments) qa[a.key] = queue_argument_json(a.value);
  return {
      {"producers", o.producers},
      {"consumers", o.consumers},
      {"producer_channels", o.producer_channels},
      {"consumer_channels", o.consumer_channels},
      {"queue", o.queue},
      {"exchange", o.exchange},
      {"exchange_type", o.exchange_type},
      {"routing_key", o.routing_key},
      {"message_size", o.message_size},
      {"producer_rate", o.producer_rate},
      {"consumer_rate", o.consumer_rate},
      {"confirm_window", o.confirm_window},
      {"auto_ack", o.auto_ack},
      {"multi_ack_every", o.multi_ack_every},
      {"prefetch", o.prefetch},
      {"duration_s", o.duration_s},
      {"producer_message_count", o.producer_message_count},
      {"consumer_message_count", o.consumer_message_count},
      {"persistent", o.persistent},
      {"mandatory", o.mandatory},
      {"frame_max", o.frame_max},
      {"heartbeat", o.heartbeat ? nlohmann::ordered_json(*o.heartbeat) : nlohmann::ordered_json()},
      {"uris", uris},
      {"queue_arguments", qa},
      {"queue_pattern", o.queue_pattern},
      {"queue_pattern_from", o.queue_pattern_from},
      {"queue_pattern_to", o.queue_pattern_to},
      {"io_threads", o.io_threads},
      {"workers", o.workers},
      {"rx_batch_bytes", o.rx_batch_bytes},
      {"rx_batch_wait_us", o.rx_batch_wait_us},
      {"tls", !o.tls_ca.empty() || !o.tls_cert.empty() || o.tls_no_verify},
      {"mode", mode_name(o.mode)},
      {"client", o.client == client_kind::blocking ? "blocking" : "async"},
  };
}

}  // namespace

run_summary make_summary(const interval_report& whole, double client_cpu_s) {
  run_summary s;
  s.totals = whole;
  s.client_cpu_s = client_cpu_s;
  const std::uint64_t messages = whole.published + whole.received;
  s.cpu_us_per_msg = messages ? client_cpu_s * 1e6 / static_cast<double>(messages) : 0;
  return s;
}

std::string format_interval(const interval_report& r, bool latency) {
  std::string line = "time " + fixed(r.elapsed_s, 1) + " s, published " + fixed(r.publish_rate, 0) +
                     " msg/s, confirmed " + fixed(r.confirm_rate, 0) + " msg/s, nacked " +
                     std::to_string(r.nacked) + ", in doubt " + std::to_string(r.in_doubt) +
                     ", returned " + std::to_string(r.returned) + ", received " +
                     fixed(r.receive_rate, 0) + " msg/s";
  if (latency) {
    line += ", latency median/95th/99th ";
    line += r.latency.count
                ? us(r.latency.p50) + "/" + us(r.latency.p95) + "/" + us(r.latency.p99) + " us"
                : "-";
  }
  return line;
}

std::string format_summary(const run_summary& s, bool latency) {
  const interval_report& t = s.totals;
  std::string out = "summary: " + fixed(t.seconds, 2) + " s, published " +
                    std::to_string(t.published) + " (" + fixed(t.publish_rate, 0) +
                    " msg/s), confirmed " + std::to_string(t.confirmed) + ", nacked " +
                    std::to_string(t.nacked) + ", in doubt " + std::to_string(t.in_doubt) +
                    ", returned " + std::to_string(t.returned) + ", received " +
                    std::to_string(t.received) + " (" + fixed(t.receive_rate, 0) + " msg/s)\n";
  if (latency) {
    const latency_summary& l = t.latency;
    out += "latency us: ";
    out += l.count ? "min " + us(l.min) + ", median " + us(l.p50) + ", 75th " + us(l.p75) +
                         ", 95th " + us(l.p95) + ", 99th " + us(l.p99) + ", 99.9th " + us(l.p999) +
                         ", max " + us(l.max) + " (" + std::to_string(l.count) + " samples)\n"
                   : "no samples\n";
  }
  out += "client cpu: " + fixed(s.cpu_us_per_msg, 2) + " us/msg (" + fixed(s.client_cpu_s, 2) +
         " s user+system for " + std::to_string(t.published + t.received) +
         " messages published or received)\n";
  return out;
}

std::string to_json(const perf_options& o, const std::vector<interval_report>& intervals,
                    const run_summary& s) {
  nlohmann::ordered_json out;
  out["options"] = options_json(o);
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const interval_report& r : intervals) {
    list.push_back({{"elapsed", r.elapsed_s},
                    {"seconds", r.seconds},
                    {"published", r.published},
                    {"confirmed", r.confirmed},
                    {"nacked", r.nacked},
                    {"in_doubt", r.in_doubt},
                    {"returned", r.returned},
                    {"received", r.received},
                    {"publish_rate", r.publish_rate},
                    {"confirm_rate", r.confirm_rate},
                    {"receive_rate", r.receive_rate},
                    {"latency_us", latency_json(r.latency)}});
  }
  out["intervals"] = std::move(list);
  const interval_report& t = s.totals;
  out["summary"] = {{"published", t.published},
                    {"confirmed", t.confirmed},
                    {"nacked", t.nacked},
                    {"in_doubt", t.in_doubt},
                    {"returned", t.returned},
                    {"received", t.received},
                    {"seconds", t.seconds},
                    {"publish_rate", t.publish_rate},
                    {"confirm_rate", t.confirm_rate},
                    {"receive_rate", t.receive_rate},
                    {"client_cpu_s", s.client_cpu_s},
                    {"client_cpu_us_per_msg", s.cpu_us_per_msg},
                    {"latency_samples", t.latency.count},
                    {"latency_us", latency_json(t.latency)}};
  return out.dump(2) + "\n";
}

std::string to_csv(const std::vector<interval_report>& intervals, const run_summary& s) {
  std::string out =
      "kind,elapsed_s,seconds,published,confirmed,nacked,in_doubt,returned,received,publish_rate,"
      "confirm_rate,receive_rate,latency_min_us,latency_p50_us,latency_p75_us,latency_p95_us,"
      "latency_p99_us,latency_p999_us,latency_max_us,client_cpu_us_per_msg\n";
  auto row = [&](const char* kind, const interval_report& r, const std::string& cpu) {
    const latency_summary& l = r.latency;
    out += std::string(kind) + "," + fixed(r.elapsed_s, 3) + "," + fixed(r.seconds, 3) + "," +
           std::to_string(r.published) + "," + std::to_string(r.confirmed) + "," +
           std::to_string(r.nacked) + "," + std::to_string(r.in_doubt) + "," +
           std::to_string(r.returned) + "," + std::to_string(r.received) + "," +
           fixed(r.publish_rate, 1) + "," + fixed(r.confirm_rate, 1) + "," +
           fixed(r.receive_rate, 1) + "," + fixed(l.min, 1) + "," + fixed(l.p50, 1) + "," +
           fixed(l.p75, 1) + "," + fixed(l.p95, 1) + "," + fixed(l.p99, 1) + "," +
           fixed(l.p999, 1) + "," + fixed(l.max, 1) + "," + cpu + "\n";
  };
  for (const interval_report& r : intervals) row("interval", r, "");
  row("summary", s.totals, fixed(s.cpu_us_per_msg, 3));
  return out;
}

}  // namespace warren::perf
