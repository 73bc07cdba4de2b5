#include "tools/perf/report.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "engine/metrics/prometheus.h"

namespace warren::perf {
namespace {

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// A latency in the display unit (microseconds, or milliseconds with -ms): whole above 100,
// one decimal below (sub-100 us latencies are common on loopback).
std::string shown(double us, bool millis) {
  const double v = millis ? us / 1000 : us;
  return fixed(v, v >= 100 ? 0 : 1);
}

const char* unit(bool millis) {
  return millis ? "ms" : "us";
}

nlohmann::ordered_json latency_json(const latency_summary& l) {
  return {{"min", l.min}, {"p50", l.p50},   {"p75", l.p75}, {"p95", l.p95},
          {"p99", l.p99}, {"p999", l.p999}, {"max", l.max}};
}

// null when the run does not measure it.
nlohmann::ordered_json latency_json_if(bool measured, const latency_summary& l) {
  return measured ? latency_json(l) : nlohmann::ordered_json();
}

nlohmann::ordered_json queue_argument_json(const queue_argument_value& v) {
  return std::visit([](const auto& x) { return nlohmann::ordered_json(x); }, v);
}

nlohmann::ordered_json arguments_json(const std::vector<queue_argument>& args) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const queue_argument& a : args) out[a.key] = queue_argument_json(a.value);
  return out;
}

nlohmann::ordered_json steps_json(const std::vector<variable_step>& steps) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const variable_step& s : steps) out.push_back({{"value", s.value}, {"seconds", s.seconds}});
  return out;
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

const char* exit_name(exit_when e) {
  switch (e) {
    case exit_when::idle:
      return "idle";
    case exit_when::empty:
      return "empty";
    case exit_when::never:
      break;
  }
  return "never";
}

nlohmann::ordered_json stream_offset_json(const std::optional<stream_offset>& so) {
  if (!so) return nullptr;
  switch (so->what()) {
    case stream_offset::kind::first:
      return "first";
    case stream_offset::kind::last:
      return "last";
    case stream_offset::kind::next:
      return "next";
    case stream_offset::kind::offset:
      return {{"offset", so->value()}};
    case stream_offset::kind::timestamp:
      return {{"timestamp", so->value()}};
    case stream_offset::kind::interval:
      return {{"interval", so->interval_spec()}};
  }
  return nullptr;
}

nlohmann::ordered_json options_json(const perf_options& o) {
  nlohmann::ordered_json uris = nlohmann::ordered_json::array();
  for (const std::string& u : o.uris) uris.push_back(redact_uri(u));
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
      {"queue_arguments", arguments_json(o.queue_arguments)},
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
      {"id", o.id},
      {"variable_rates", steps_json(o.variable_rates)},
      {"variable_sizes", steps_json(o.variable_sizes)},
      {"consumer_latency_us", o.consumer_latency_us},
      {"producer_random_start_delay_s", o.producer_random_start_delay_s},
      {"exit_when", exit_name(o.exit)},
      {"producer_tx_size", o.producer_tx_size},
      {"consumer_tx_size", o.consumer_tx_size},
      {"connection_recovery", o.connection_recovery},
      {"polling", o.polling},
      {"polling_interval_ms", o.polling_interval_ms},
      {"nack", o.nack},
      {"requeue", o.requeue},
      {"body_files", o.body_files},
      {"body_content_type", o.body_content_type},
      {"json_body", o.json_body},
      {"use_millis", o.use_millis},
      {"quorum_queue", o.quorum_queue},
      {"stream_queue", o.stream_queue},
      {"stream_consumer_offset", stream_offset_json(o.consumer_offset)},
      {"connection_allocation",
       o.allocation == connection_allocation::random ? "random" : "round-robin"},
      {"consumer_arguments", arguments_json(o.consumer_arguments)},
      {"auto_delete", o.auto_delete},
  };
}

// " median/95th/99th a/b/c us", or " -" without samples.
std::string three(const latency_summary& l, bool millis) {
  if (l.count == 0) return " -";
  return " " + shown(l.p50, millis) + "/" + shown(l.p95, millis) + "/" + shown(l.p99, millis) +
         " " + unit(millis);
}

// "min 1, median 2, ..., max 9 (N samples)"
std::string all_percentiles(const latency_summary& l, bool millis) {
  if (l.count == 0) return "no samples";
  return "min " + shown(l.min, millis) + ", median " + shown(l.p50, millis) + ", 75th " +
         shown(l.p75, millis) + ", 95th " + shown(l.p95, millis) + ", 99th " +
         shown(l.p99, millis) + ", 99.9th " + shown(l.p999, millis) + ", max " +
         shown(l.max, millis) + " (" + std::to_string(l.count) + " samples)";
}

std::string id_prefix(const report_style& style) {
  return style.id.empty() ? "" : "id: " + style.id + ", ";
}

}  // namespace

report_style style_of(const perf_options& o) {
  report_style s;
  s.latency = o.timestamps() && o.consumers > 0;
  s.confirm_latency = o.confirms() && o.producers > 0 && o.mode != run_mode::sink;
  s.intended = o.rate_limited();
  s.millis = o.use_millis;
  s.id = o.id;
  return s;
}

run_summary make_summary(const interval_report& whole, double client_cpu_s) {
  run_summary s;
  s.totals = whole;
  s.client_cpu_s = client_cpu_s;
  const std::uint64_t messages = whole.published + whole.received;
  s.cpu_us_per_msg = messages ? client_cpu_s * 1e6 / static_cast<double>(messages) : 0;
  return s;
}

std::string format_interval(const interval_report& r, const report_style& style) {
  std::string line = id_prefix(style) + "time " + fixed(r.elapsed_s, 1) + " s, published " +
                     fixed(r.publish_rate, 0) + " msg/s, confirmed " + fixed(r.confirm_rate, 0) +
                     " msg/s, nacked " + std::to_string(r.nacked) + ", in doubt " +
                     std::to_string(r.in_doubt) + ", returned " + std::to_string(r.returned) +
                     ", received " + fixed(r.receive_rate, 0) + " msg/s";
  if (r.recoveries != 0 || r.unpublished_ms > 0) {
    line += ", recoveries " + std::to_string(r.recoveries) + ", not publishing " +
            fixed(r.unpublished_ms, 0) + " ms";
  }
  if (style.latency) {
    line += ", latency median/95th/99th" + three(r.latency, style.millis);
    if (style.intended) line += " (from intended" + three(r.latency_intended, style.millis) + ")";
  }
  if (style.confirm_latency) {
    line += ", confirm latency median/95th/99th" + three(r.confirm_latency, style.millis);
    if (style.intended) {
      line += " (from intended" + three(r.confirm_latency_intended, style.millis) + ")";
    }
  }
  return line;
}

std::string format_summary(const run_summary& s, const report_style& style) {
  const interval_report& t = s.totals;
  const std::string id = id_prefix(style);
  const std::string u = unit(style.millis);
  std::string out = id + "summary: " + fixed(t.seconds, 2) + " s, published " +
                    std::to_string(t.published) + " (" + fixed(t.publish_rate, 0) +
                    " msg/s), confirmed " + std::to_string(t.confirmed) + ", nacked " +
                    std::to_string(t.nacked) + ", in doubt " + std::to_string(t.in_doubt) +
                    ", returned " + std::to_string(t.returned) + ", received " +
                    std::to_string(t.received) + " (" + fixed(t.receive_rate, 0) + " msg/s)\n";
  if (t.recoveries != 0) {
    out += id + "recoveries: " + std::to_string(t.recoveries) + ", republished " +
           std::to_string(t.republished) + ", not publishing " + fixed(t.unpublished_ms, 0) +
           " ms (summed over producers)\n";
  }
  // Percentiles over the whole run, every sample of every interval.
  if (style.latency) {
    out += id + "latency " + u + ": " + all_percentiles(t.latency, style.millis) + "\n";
    if (style.intended) {
      out += id + "latency from intended send time " + u + ": " +
             all_percentiles(t.latency_intended, style.millis) + "\n";
    }
  }
  if (style.confirm_latency) {
    out += id + "confirm latency " + u + ": " + all_percentiles(t.confirm_latency, style.millis) +
           "\n";
    if (style.intended) {
      out += id + "confirm latency from intended send time " + u + ": " +
             all_percentiles(t.confirm_latency_intended, style.millis) + "\n";
    }
  }
  if (s.sequence) {
    const sequence_summary& q = *s.sequence;
    out += id + "sequence: " + std::to_string(q.streams) + " streams, " +
           std::to_string(q.received) + " received, " + std::to_string(q.missing) + " missing in " +
           std::to_string(q.gaps) + " gaps, " + std::to_string(q.duplicates) + " duplicates, " +
           std::to_string(q.reordered) + " reordered\n";
  }
  out += id + "client cpu: " + fixed(s.cpu_us_per_msg, 2) + " us/msg (" + fixed(s.client_cpu_s, 2) +
         " s user+system for " + std::to_string(t.published + t.received) +
         " messages published or received)\n";
  return out;
}

std::string to_json(const perf_options& o, const std::vector<interval_report>& intervals,
                    const run_summary& s) {
  const report_style style = style_of(o);
  const bool intended_latency = style.latency && style.intended;
  const bool intended_confirm = style.confirm_latency && style.intended;
  nlohmann::ordered_json out;
  out["options"] = options_json(o);
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const interval_report& r : intervals) {
    list.push_back(
        {{"elapsed", r.elapsed_s},
         {"seconds", r.seconds},
         {"published", r.published},
         {"confirmed", r.confirmed},
         {"nacked", r.nacked},
         {"in_doubt", r.in_doubt},
         {"returned", r.returned},
         {"received", r.received},
         {"recoveries", r.recoveries},
         {"republished", r.republished},
         {"unpublished_ms", r.unpublished_ms},
         {"publish_rate", r.publish_rate},
         {"confirm_rate", r.confirm_rate},
         {"receive_rate", r.receive_rate},
         {"latency_us", latency_json(r.latency)},
         {"latency_intended_us", latency_json_if(intended_latency, r.latency_intended)},
         {"confirm_latency_us", latency_json_if(style.confirm_latency, r.confirm_latency)},
         {"confirm_latency_intended_us",
          latency_json_if(intended_confirm, r.confirm_latency_intended)}});
  }
  out["intervals"] = std::move(list);
  const interval_report& t = s.totals;
  nlohmann::ordered_json sequence;
  if (s.sequence) {
    sequence = {{"streams", s.sequence->streams},       {"received", s.sequence->received},
                {"missing", s.sequence->missing},       {"gaps", s.sequence->gaps},
                {"duplicates", s.sequence->duplicates}, {"reordered", s.sequence->reordered}};
  }
  out["summary"] = {
      {"published", t.published},
      {"confirmed", t.confirmed},
      {"nacked", t.nacked},
      {"in_doubt", t.in_doubt},
      {"returned", t.returned},
      {"received", t.received},
      {"recoveries", t.recoveries},
      {"republished", t.republished},
      {"unpublished_ms", t.unpublished_ms},
      {"seconds", t.seconds},
      {"publish_rate", t.publish_rate},
      {"confirm_rate", t.confirm_rate},
      {"receive_rate", t.receive_rate},
      {"client_cpu_s", s.client_cpu_s},
      {"client_cpu_us_per_msg", s.cpu_us_per_msg},
      {"latency_samples", t.latency.count},
      {"latency_us", latency_json(t.latency)},
      {"latency_intended_us", latency_json_if(intended_latency, t.latency_intended)},
      {"confirm_latency_samples", t.confirm_latency.count},
      {"confirm_latency_us", latency_json_if(style.confirm_latency, t.confirm_latency)},
      {"confirm_latency_intended_us",
       latency_json_if(intended_confirm, t.confirm_latency_intended)},
      {"sequence", sequence}};
  return out.dump(2) + "\n";
}

std::string to_csv(const std::vector<interval_report>& intervals, const run_summary& s) {
  std::string out =
      "kind,elapsed_s,seconds,published,confirmed,nacked,in_doubt,returned,received,publish_rate,"
      "confirm_rate,receive_rate";
  for (const char* h :
       {"latency", "latency_intended", "confirm_latency", "confirm_latency_intended"}) {
    for (const char* p : {"min", "p50", "p75", "p95", "p99", "p999", "max"}) {
      out += std::string(",") + h + "_" + p + "_us";
    }
  }
  out += ",client_cpu_us_per_msg,missing,gaps,duplicates,reordered\n";
  auto row = [&](const char* kind, const interval_report& r, const std::string& tail) {
    out += std::string(kind) + "," + fixed(r.elapsed_s, 3) + "," + fixed(r.seconds, 3) + "," +
           std::to_string(r.published) + "," + std::to_string(r.confirmed) + "," +
           std::to_string(r.nacked) + "," + std::to_string(r.in_doubt) + "," +
           std::to_string(r.returned) + "," + std::to_string(r.received) + "," +
           fixed(r.publish_rate, 1) + "," + fixed(r.confirm_rate, 1) + "," +
           fixed(r.receive_rate, 1);
    for (const latency_summary* l :
         {&r.latency, &r.latency_intended, &r.confirm_latency, &r.confirm_latency_intended}) {
      for (double v : {l->min, l->p50, l->p75, l->p95, l->p99, l->p999, l->max}) {
        out += "," + fixed(v, 1);
      }
    }
    out += "," + tail + "\n";
  };
  for (const interval_report& r : intervals) row("interval", r, ",,,,");
  std::string tail = fixed(s.cpu_us_per_msg, 3) + ",";
  if (s.sequence) {
    tail += std::to_string(s.sequence->missing) + "," + std::to_string(s.sequence->gaps) + "," +
            std::to_string(s.sequence->duplicates) + "," + std::to_string(s.sequence->reordered);
  } else {
    tail += ",,,";
  }
  row("summary", s.totals, tail);
  return out;
}

std::string perftest_rate(double rate) {
  char buf[64];
  if (rate == 0) return "0";
  if (rate < 1) {
    std::snprintf(buf, sizeof buf, "%1.2f", rate);
  } else if (rate < 10) {
    std::snprintf(buf, sizeof buf, "%1.1f", rate);
  } else {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(rate));
  }
  return buf;
}

std::string perftest_csv_header(const perf_options& o) {
  const std::string u = o.use_millis ? "ms" : "\xc2\xb5s";  // PerfTest writes µs in UTF-8
  std::string out =
      "id,time (s),published (msg/s),returned (msg/s),confirmed (msg/s),"
      "nacked (msg/s),received (msg/s)";
  for (const char* what : {"consumer", "confirm"}) {
    for (const char* p : {"min", "median", "75th p.", "95th p.", "99th p."}) {
      out += std::string(",") + p + " " + what + " latency (" + u + ")";
    }
  }
  return out + "\n";
}

std::string perftest_csv_row(const perf_options& o, const std::string& id,
                             const interval_report& r) {
  const bool published = o.producers > 0;
  const bool received = o.consumers > 0;
  const bool confirmed = published && o.confirms();
  auto rate = [](double v, bool shown) { return shown ? perftest_rate(v) : std::string(); };
  // Whole units, truncated, as PerfTest's long values.
  auto whole = [&](double us) {
    return std::to_string(static_cast<long long>(o.use_millis ? us / 1000 : us));
  };
  auto five = [&](const latency_summary& l, bool shown) {
    if (!shown) return std::string(",,,,");
    return whole(l.min) + "," + whole(l.p50) + "," + whole(l.p75) + "," + whole(l.p95) + "," +
           whole(l.p99);
  };
  return id + "," + fixed(r.elapsed_s, 3) + "," + rate(r.publish_rate, published) + "," +
         rate(static_cast<double>(r.returned) / (r.seconds > 0 ? r.seconds : 1),
              published && o.mandatory) +
         "," + rate(r.confirm_rate, confirmed) + "," +
         rate(static_cast<double>(r.nacked) / (r.seconds > 0 ? r.seconds : 1), confirmed) + "," +
         rate(r.receive_rate, received) + "," + five(r.latency, received) + "," +
         five(r.confirm_latency, confirmed) + "\n";
}

std::string prometheus_counters(const totals& t, const std::string& id) {
  // The id is the tool's own or the user's (--id): escaped as a label value must be.
  const std::string labels = "{id=\"" + metrics::escape_label_value(id) + "\"}";
  std::string out;
  auto counter = [&](const char* name, const char* help, std::uint64_t v) {
    out += "# HELP warren_perf_";
    out += name;
    out += "_total ";
    out += help;
    out += "\n# TYPE warren_perf_";
    out += name;
    out += "_total counter\nwarren_perf_";
    out += name;
    out += "_total";
    out += labels;
    out += ' ';
    out += std::to_string(v);
    out += '\n';
  };
  counter("published", "Messages the producers published (accepted by the client).", t.published);
  counter("confirmed", "Publishes the broker confirmed (basic.ack).", t.confirmed);
  counter("nacked", "Publishes the broker refused (basic.nack).", t.nacked);
  counter("in_doubt", "Publishes whose outcome is unknown (connection or channel lost, timeout).",
          t.in_doubt);
  counter("returned", "Mandatory publishes returned unroutable.", t.returned);
  counter("consumed", "Messages the consumers received.", t.received);
  return out;
}

}  // namespace warren::perf
