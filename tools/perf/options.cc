#include "tools/perf/options.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <stdexcept>

#include "engine/uri.h"

namespace warren::perf {
namespace {

struct option_def {
  std::vector<std::string_view> names;  // the first is the one --help and errors use
  std::string_view value_name;          // empty: a flag
  bool repeatable = false;
  std::string_view help;
  std::function<void(perf_options&, const std::string& name, const std::string& value)> apply;
};

template <class T>
T parse_integer(const std::string& name, const std::string& value, T min, T max) {
  long long v = 0;
  const char* end = value.data() + value.size();
  auto [p, ec] = std::from_chars(value.data(), end, v);
  if ((ec != std::errc() && ec != std::errc::result_out_of_range) || p != end || value.empty()) {
    throw usage_error(name + " expects an integer, got '" + value + "'");
  }
  if (ec == std::errc::result_out_of_range || v < static_cast<long long>(min) ||
      (v > 0 && static_cast<unsigned long long>(v) > static_cast<unsigned long long>(max))) {
    throw usage_error(name + " must be between " + std::to_string(min) + " and " +
                      std::to_string(max) + ", got " + value);
  }
  return static_cast<T>(v);
}

double parse_rate(const std::string& name, const std::string& value) {
  double v = 0;
  const char* end = value.data() + value.size();
  auto [p, ec] = std::from_chars(value.data(), end, v);
  if (ec != std::errc() || p != end || value.empty() || !std::isfinite(v)) {
    throw usage_error(name + " expects a number, got '" + value + "'");
  }
  if (v < 0) throw usage_error(name + " must be at least 0, got " + value);
  return v;
}

queue_argument parse_queue_argument(const std::string& entry) {
  const auto eq = entry.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw usage_error("-qa expects key=value[,key=value...], got '" + entry + "'");
  }
  queue_argument a{entry.substr(0, eq), std::string(entry.substr(eq + 1))};
  const std::string& v = std::get<std::string>(a.value);
  std::int64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (!v.empty() && ec == std::errc() && p == v.data() + v.size()) {
    a.value = n;
  } else if (v == "true" || v == "false") {
    a.value = v == "true";
  }
  return a;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  for (std::size_t start = 0;;) {
    const auto end = s.find(sep, start);
    out.emplace_back(s.substr(start, end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

bool parse_bool(const std::string& name, const std::string& value) {
  if (value == "true") return true;
  if (value == "false") return false;
  throw usage_error(name + " expects true or false, got '" + value + "'");
}

// RATE:SECONDS or SIZE:SECONDS; the value at least `min_value`, the seconds at least 1 (as
// PerfTest: both integers).
variable_step parse_step(const std::string& name, const std::string& value,
                         std::int64_t min_value) {
  const auto colon = value.find(':');
  if (colon == std::string::npos) {
    throw usage_error(name + " expects VALUE:SECONDS, got '" + value + "'");
  }
  variable_step step;
  step.value =
      parse_integer<std::int64_t>(name, value.substr(0, colon), min_value, 512 * 1024 * 1024);
  step.seconds = parse_integer<unsigned>(name, value.substr(colon + 1), 1, 86400 * 365);
  return step;
}

stream_offset parse_stream_offset(const std::string& name, const std::string& v) {
  try {
    return stream_offset::parse(v);
  } catch (const std::invalid_argument&) {
    if (!v.empty() &&
        std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      throw usage_error(name + " must be between 0 and " +
                        std::to_string(std::numeric_limits<std::int64_t>::max()) + ", got '" + v +
                        "'");
    }
    throw usage_error(name +
                      " expects first, last, next, an offset, an ISO 8601 date-time with its "
                      "offset (2022-06-03T07:45:54Z) or an interval (1h, 30m, 7D), got '" +
                      v + "'");
  }
}

void parse_key_values(const std::string& name, const std::string& v,
                      std::vector<queue_argument>& out) {
  for (const std::string& e : split(v, ',')) {
    if (e.find('=') == std::string::npos || e.front() == '=') {
      throw usage_error(name + " expects key=value[,key=value...], got '" + e + "'");
    }
    out.push_back(parse_queue_argument(e));
  }
}

void set_mode(perf_options& o, run_mode m, const std::string& value) {
  if (o.mode != run_mode::broker && o.mode != m) {
    throw usage_error("--sink and --firehose cannot be combined");
  }
  o.mode = m;
  if (!value.empty()) o.uris.push_back(value);
}

const std::vector<option_def>& option_table() {
  static const std::vector<option_def> table = {
      {{"-x", "--producers"},
       "N",
       false,
       "producers, one connection each (default 1)",
       [](auto& o, auto& n, auto& v) { o.producers = parse_integer<unsigned>(n, v, 0, 10000); }},
      {{"-y", "--consumers"},
       "N",
       false,
       "consumers, one connection each (default 1)",
       [](auto& o, auto& n, auto& v) { o.consumers = parse_integer<unsigned>(n, v, 0, 10000); }},
      {{"-X", "--producer-channel-count"},
       "N",
       false,
       "channels per producer connection, used in turn (default 1)",
       [](auto& o, auto& n, auto& v) {
         o.producer_channels = parse_integer<unsigned>(n, v, 1, 2047);
       }},
      {{"-Y", "--consumer-channel-count"},
       "N",
       false,
       "channels per consumer connection, one consumer each (default 1)",
       [](auto& o, auto& n, auto& v) {
         o.consumer_channels = parse_integer<unsigned>(n, v, 1, 2047);
       }},
      {{"-u", "--queue"},
       "QUEUE",
       false,
       "one named queue shared by all consumers (default: an exclusive server-named queue "
       "per consumer channel, each bound with the routing key)",
       [](auto& o, auto& n, auto& v) {
         if (v.empty()) throw usage_error(n + " expects a queue name");
         o.queue = v;
       }},
      {{"-e", "--exchange"},
       "NAME",
       false,
       "exchange to publish to (default \"direct\"; \"\" is the default exchange)",
       [](auto& o, auto&, auto& v) { o.exchange = v; }},
      {{"-t", "--type"},
       "TYPE",
       false,
       "exchange type: direct, fanout, topic, headers (default direct)",
       [](auto& o, auto& n, auto& v) {
         if (v.empty()) throw usage_error(n + " expects an exchange type");
         o.exchange_type = v;
       }},
      {{"-k", "--routing-key"},
       "KEY",
       false,
       "routing key (default: a random one per run)",
       [](auto& o, auto&, auto& v) { o.routing_key = v; }},
      {{"-s", "--size"},
       "OCTETS",
       false,
       "message body size (default 12); at least 12 carries the publish time for latency, "
       "smaller sends no timestamp",
       [](auto& o, auto& n, auto& v) {
         o.message_size =
             parse_integer<std::int64_t>(n, v, std::numeric_limits<int>::min(), 512 * 1024 * 1024);
         if (o.message_size < 0) throw usage_error(n + " must be at least 0, got " + v);
       }},
      {{"-r", "--rate"},
       "MSG/S",
       false,
       "publish rate limit per producer (default 0: none)",
       [](auto& o, auto& n, auto& v) { o.producer_rate = parse_rate(n, v); }},
      {{"-R", "--consumer-rate"},
       "MSG/S",
       false,
       "consume rate limit per consumer (default 0: none)",
       [](auto& o, auto& n, auto& v) { o.consumer_rate = parse_rate(n, v); }},
      {{"-c", "--confirm"},
       "N",
       false,
       "publisher confirms with at most N unconfirmed messages per channel (default 0: no "
       "confirms)",
       [](auto& o, auto& n, auto& v) {
         o.confirm_window = parse_integer<std::uint32_t>(n, v, 0, 1u << 24);
       }},
      {{"-a", "--autoack"},
       "",
       false,
       "consume with no-ack (auto-ack)",
       [](auto& o, auto&, auto&) { o.auto_ack = true; }},
      {{"-A", "--multi-ack-every"},
       "N",
       false,
       "acknowledge every N messages at once (multiple=true); default: each message",
       [](auto& o, auto& n, auto& v) {
         o.multi_ack_every = parse_integer<std::uint32_t>(n, v, 0, 1u << 24);
       }},
      {{"-q", "--qos"},
       "N",
       false,
       "consumer prefetch count (default 0: unlimited)",
       [](auto& o, auto& n, auto& v) {
         o.prefetch = parse_integer<std::uint16_t>(n, v, 0, 65535);
       }},
      {{"-z", "--time"},
       "SECONDS",
       false,
       "run duration (default: until -C/-D counts are reached, else until Ctrl-C)",
       [](auto& o, auto& n, auto& v) { o.duration_s = parse_rate(n, v); }},
      {{"-C", "--pmessages"},
       "N",
       false,
       "messages per producer, then it stops (default: no limit)",
       [](auto& o, auto& n, auto& v) {
         o.producer_message_count =
             parse_integer<std::uint64_t>(n, v, 1, std::numeric_limits<std::int64_t>::max());
       }},
      {{"-D", "--cmessages"},
       "N",
       false,
       "messages per consumer, then it stops (default: no limit)",
       [](auto& o, auto& n, auto& v) {
         o.consumer_message_count =
             parse_integer<std::uint64_t>(n, v, 1, std::numeric_limits<std::int64_t>::max());
       }},
      {{"-f", "--flag"},
       "FLAG",
       true,
       "persistent (delivery mode 2) or mandatory; repeatable",
       [](auto& o, auto& n, auto& v) {
         for (const std::string& f : split(v, ',')) {
           if (f == "persistent") {
             o.persistent = true;
           } else if (f == "mandatory") {
             o.mandatory = true;
           } else {
             throw usage_error(n + " expects persistent or mandatory, got '" + f + "'");
           }
         }
       }},
      {{"-M", "--framemax"},
       "OCTETS",
       false,
       "frame max to negotiate (default: the client's, 131072)",
       [](auto& o, auto& n, auto& v) {
         o.frame_max =
             parse_integer<std::uint32_t>(n, v, 0, std::numeric_limits<std::uint32_t>::max());
         if (o.frame_max != 0 && o.frame_max < 4096) {
           throw usage_error(n + " must be 0 or at least 4096, got " + v);
         }
       }},
      {{"-b", "--heartbeat-interval"},
       "SECONDS",
       false,
       "heartbeat interval to ask for (default: none, unless a URI says so)",
       [](auto& o, auto& n, auto& v) {
         o.heartbeat = parse_integer<std::uint16_t>(n, v, 0, 65535);
       }},
      {{"-H", "--uri"},
       "URIS",
       true,
       "broker URIs, comma-separated or repeated; connections take them in turn (default "
       "amqp://guest:guest@127.0.0.1:5672, vhost /)",
       [](auto& o, auto&, auto& v) { o.uris.push_back(v); }},
      {{"-qa", "--queue-args"},
       "K=V,...",
       true,
       "queue arguments (x-max-length=1000,x-queue-type=quorum); integers and true/false typed",
       [](auto& o, auto&, auto& v) {
         for (const std::string& e : split(v, ','))
           o.queue_arguments.push_back(parse_queue_argument(e));
       }},
      {{"--queue-pattern"},
       "PATTERN",
       false,
       "queues named by a pattern with one %d (perf-%d), numbered --queue-pattern-from..to; "
       "producers and consumers spread over them",
       [](auto& o, auto&, auto& v) { o.queue_pattern = v; }},
      {{"--queue-pattern-from"},
       "N",
       false,
       "first number of --queue-pattern",
       [](auto& o, auto& n, auto& v) {
         o.queue_pattern_from = parse_integer<unsigned>(n, v, 0, 1000000);
       }},
      {{"--queue-pattern-to"},
       "N",
       false,
       "last number of --queue-pattern (inclusive)",
       [](auto& o, auto& n, auto& v) {
         o.queue_pattern_to = parse_integer<unsigned>(n, v, 0, 1000000);
       }},
      {{"--io-threads"},
       "N",
       false,
       "I/O threads of the async engine (default 1)",
       [](auto& o, auto& n, auto& v) { o.io_threads = parse_integer<unsigned>(n, v, 1, 256); }},
      {{"--workers"},
       "N",
       false,
       "consumer handler threads of the async engine (default 0: one per core)",
       [](auto& o, auto& n, auto& v) { o.workers = parse_integer<unsigned>(n, v, 0, 1024); }},
      {{"--rx-batch"},
       "BYTES[:USEC]",
       false,
       "receive batching of the async engine: a busy connection is read once BYTES wait in its "
       "socket, or USEC (default 500) after its previous read; up to USEC more latency for less "
       "CPU per message (default: off, every arrival read at once)",
       [](auto& o, auto& n, auto& v) {
         const auto colon = v.find(':');
         o.rx_batch_bytes = parse_integer<std::size_t>(n, v.substr(0, colon), 1, 16u << 20);
         if (colon != std::string::npos) {
           o.rx_batch_wait_us = parse_integer<unsigned>(n, v.substr(colon + 1), 1, 1000000);
         }
       }},
      {{"--tls-ca"},
       "FILE",
       false,
       "CA bundle (PEM) to verify the broker with; turns TLS on",
       [](auto& o, auto&, auto& v) { o.tls_ca = v; }},
      {{"--tls-cert"},
       "FILE",
       false,
       "client certificate (PEM); turns TLS on",
       [](auto& o, auto&, auto& v) { o.tls_cert = v; }},
      {{"--tls-key"},
       "FILE",
       false,
       "client key (PEM; default: in --tls-cert)",
       [](auto& o, auto&, auto& v) { o.tls_key = v; }},
      {{"--tls-no-verify"},
       "",
       false,
       "TLS without checking the broker's certificate",
       [](auto& o, auto&, auto&) { o.tls_no_verify = true; }},
      {{"--json"},
       "FILE",
       false,
       "write options, every interval and the summary as JSON",
       [](auto& o, auto&, auto& v) { o.json_path = v; }},
      {{"--csv"},
       "FILE",
       false,
       "write one row per interval and a summary row as CSV",
       [](auto& o, auto&, auto& v) { o.csv_path = v; }},
      {{"--plot"},
       "FILE.svg",
       false,
       "write an SVG plot of rates and latency over time",
       [](auto& o, auto&, auto& v) { o.plot_path = v; }},
      {{"--sink"},
       "[URI]",
       false,
       "client ceiling: producers only, against the null broker at URI (or at -H); "
       "declares nothing",
       [](auto& o, auto&, auto& v) { set_mode(o, run_mode::sink, v); }},
      {{"--firehose"},
       "[URI]",
       false,
       "client ceiling: consumers only, flooded by the null broker at URI (or at -H); no "
       "latency",
       [](auto& o, auto&, auto& v) { set_mode(o, run_mode::firehose, v); }},
      {{"--client"},
       "NAME",
       false,
       "async (default: the multithreaded engine) or blocking (warren's py-amqp-style API, a "
       "thread per connection)",
       [](auto& o, auto& n, auto& v) {
         if (v == "async") {
           o.client = client_kind::async;
         } else if (v == "blocking") {
           o.client = client_kind::blocking;
         } else {
           throw usage_error(n + " expects async or blocking, got '" + v + "'");
         }
       }},
      {{"--variable-rate", "-vr"},
       "RATE:SECONDS",
       true,
       "publish RATE msg/s per producer for SECONDS, then the next --variable-rate; the steps "
       "repeat (RATE 0 pauses publishing); repeatable; not with -r",
       [](auto& o, auto& n, auto& v) { o.variable_rates.push_back(parse_step(n, v, 0)); }},
      {{"--variable-size", "-vs"},
       "SIZE:SECONDS",
       true,
       "bodies of SIZE octets for SECONDS, then the next --variable-size; the steps repeat; "
       "repeatable; not with -s",
       [](auto& o, auto& n, auto& v) { o.variable_sizes.push_back(parse_step(n, v, 1)); }},
      {{"-L", "--consumer-latency"},
       "USEC",
       false,
       "simulated work per message in each consumer, in microseconds (default 0)",
       [](auto& o, auto& n, auto& v) {
         o.consumer_latency_us = parse_integer<std::uint32_t>(n, v, 0, 60'000'000);
       }},
      {{"--producer-random-start-delay", "-prsd"},
       "SECONDS",
       false,
       "each producer waits a random time of 1 ms to SECONDS before its first publish "
       "(default: none)",
       [](auto& o, auto& n, auto& v) {
         o.producer_random_start_delay_s = parse_integer<unsigned>(n, v, 1, 86400);
       }},
      {{"--exit-when", "-ew"},
       "empty|idle",
       false,
       "a consumer stops once it received nothing for a second (idle) and, for empty, its "
       "queue holds no message; the run ends when every consumer stopped",
       [](auto& o, auto& n, auto& v) {
         if (v == "idle") {
           o.exit = exit_when::idle;
         } else if (v == "empty") {
           o.exit = exit_when::empty;
         } else {
           throw usage_error(n + " expects empty or idle, got '" + v + "'");
         }
       }},
      {{"-m", "--ptxsize"},
       "N",
       false,
       "producer transactions: tx.commit every N publishes per channel (default 0: none; not "
       "with -c)",
       [](auto& o, auto& n, auto& v) {
         o.producer_tx_size = parse_integer<std::uint32_t>(n, v, 0, 1u << 24);
       }},
      {{"-n", "--ctxsize"},
       "N",
       false,
       "consumer transactions: tx.commit every N messages per channel (default 0: none)",
       [](auto& o, auto& n, auto& v) {
         o.consumer_tx_size = parse_integer<std::uint32_t>(n, v, 0, 1u << 24);
       }},
      {{"--disable-connection-recovery", "-dcr"},
       "",
       false,
       "do not recover a lost connection (async client; by default it reconnects, replays its "
       "channels, queues and consumers, and goes on, printing one line per recovery)",
       [](auto& o, auto&, auto&) { o.connection_recovery = false; }},
      {{"--polling", "-po"},
       "",
       false,
       "consume with basic.get in a loop instead of basic.consume",
       [](auto& o, auto&, auto&) { o.polling = true; }},
      {{"--polling-interval", "-pi"},
       "MSEC",
       false,
       "with --polling: pause after each basic.get, in milliseconds (default 0)",
       [](auto& o, auto& n, auto& v) {
         o.polling_interval_ms = parse_integer<std::uint32_t>(n, v, 0, 3'600'000);
       }},
      {{"--nack", "-na"},
       "",
       false,
       "consumers settle with basic.nack (requeued, see --requeue) instead of basic.ack",
       [](auto& o, auto&, auto&) { o.nack = true; }},
      {{"--requeue", "-re"},
       "true|false",
       false,
       "with --nack: whether nacked messages are requeued (default true)",
       [](auto& o, auto& n, auto& v) { o.requeue = parse_bool(n, v); }},
      {{"-B", "--body"},
       "FILES",
       true,
       "message bodies from these files (comma-separated or repeated), taken in turn; the "
       "latency stamp travels in a header",
       [](auto& o, auto& n, auto& v) {
         for (const std::string& f : split(v, ',')) {
           if (f.empty()) throw usage_error(n + " expects file names, got '" + v + "'");
           o.body_files.push_back(f);
         }
       }},
      {{"-T", "--body-content-type"},
       "TYPE",
       false,
       "content-type of the -B bodies",
       [](auto& o, auto&, auto& v) { o.body_content_type = v; }},
      {{"--json-body", "-jb"},
       "",
       false,
       "random JSON documents of about -s octets as bodies (content-type application/json); "
       "the latency stamp travels in a header",
       [](auto& o, auto&, auto&) { o.json_body = true; }},
      {{"--body-count", "-bc"},
       "N",
       false,
       "with --json-body: documents made before the run and used at random (default 100)",
       [](auto& o, auto& n, auto& v) { o.body_count = parse_integer<unsigned>(n, v, 1, 1000000); }},
      {{"--body-field-count", "-bfc"},
       "N",
       false,
       "with --json-body: random names and values the documents are made of (default 1000)",
       [](auto& o, auto& n, auto& v) {
         o.body_field_count = parse_integer<unsigned>(n, v, 1, 1000000);
       }},
      {{"--id", "-d"},
       "ID",
       false,
       "test id: starts every output line, names the -o rows and the connections "
       "(ID-producer-1) (default: test-HHMMSS-mmm in -o, unnamed elsewhere)",
       [](auto& o, auto& n, auto& v) {
         if (v.empty()) throw usage_error(n + " expects an id");
         o.id = v;
       }},
      {{"-ms", "--use-millis"},
       "",
       false,
       "stamp the wall clock instead of the monotonic one, so that producers and consumers in "
       "different processes or hosts (clocks in sync) measure latency; shown in milliseconds",
       [](auto& o, auto&, auto&) { o.use_millis = true; }},
      {{"-o", "--output-file"},
       "FILE",
       false,
       "write PerfTest's CSV (a row per second: rates, consumer and confirm latency)",
       [](auto& o, auto& n, auto& v) {
         if (v.empty()) throw usage_error(n + " expects a file name");
         o.perftest_csv_path = v;
       }},
      {{"--quorum-queue", "-qq"},
       "",
       false,
       "declare quorum queues (x-queue-type=quorum, durable, not auto-delete; adds -f "
       "persistent); needs -u or --queue-pattern",
       [](auto& o, auto&, auto&) { o.quorum_queue = true; }},
      {{"--stream-queue", "-sq"},
       "",
       false,
       "declare streams (x-queue-type=stream, x-max-length-bytes 20 GB, segments of 500 MB; "
       "adds -f persistent, prefetch 200 unless -q); needs -u or --queue-pattern",
       [](auto& o, auto&, auto&) { o.stream_queue = true; }},
      {{"--stream-consumer-offset", "-sco"},
       "OFFSET",
       false,
       "where stream consumers start: first, last, next, an offset, an ISO 8601 date-time "
       "(2022-06-03T07:45:54Z, sent as an AMQP timestamp) or an interval (1h, 30m, 7D)",
       [](auto& o, auto& n, auto& v) { o.consumer_offset = parse_stream_offset(n, v); }},
      {{"--connection-allocation", "-cal"},
       "round-robin|random",
       false,
       "how connections take the -H URIs: in turn (default) or each at random",
       [](auto& o, auto& n, auto& v) {
         if (v == "round-robin") {
           o.allocation = connection_allocation::round_robin;
         } else if (v == "random") {
           o.allocation = connection_allocation::random;
         } else {
           throw usage_error(n + " expects random or round-robin, got '" + v + "'");
         }
       }},
      {{"--auto-delete", "-ad"},
       "true|false",
       false,
       "whether the named queues (-u, --queue-pattern) are auto-delete (default true; quorum "
       "queues and streams never are)",
       [](auto& o, auto& n, auto& v) { o.auto_delete = parse_bool(n, v); }},
      {{"--consumer-args", "-ca"},
       "K=V,...",
       true,
       "consumer arguments (x-priority=5); integers and true/false typed",
       [](auto& o, auto& n, auto& v) { parse_key_values(n, v, o.consumer_arguments); }},
      {{"--metrics-prometheus", "-mpr"},
       "[PORT]",
       false,
       "serve Prometheus metrics at http://HOST:PORT/metrics during the run, on every interface "
       "(default port 8080, PerfTest's; 0: a free one, printed): the tool's counters "
       "(warren_perf_*) and, with the async client, warren's own (README, \"Metrics\")",
       [](auto& o, auto& n, auto& v) {
         o.metrics_prometheus_port =
             v.empty() ? std::uint16_t{8080} : parse_integer<std::uint16_t>(n, v, 0, 65535);
       }},
      {{"-h", "--help"}, "", false, "this text", [](auto& o, auto&, auto&) { o.help = true; }},
  };
  return table;
}

bool optional_value(const option_def& d) {
  return d.value_name.starts_with('[');
}

bool looks_like_uri(std::string_view s) {
  return s.starts_with("amqp://") || s.starts_with("amqps://");
}
// Whether `next` is the optional value of `d` rather than the next option: a URI for [URI], a
// number for [PORT].
bool takes_optional(const option_def& d, std::string_view next) {
  if (d.value_name == "[PORT]") {
    return !next.empty() &&
           std::all_of(next.begin(), next.end(), [](char c) { return c >= '0' && c <= '9'; });
  }
  return looks_like_uri(next);
}

void check_combinations(perf_options& o, const std::set<std::string_view>& given) {
  auto has = [&](std::string_view n) { return given.count(n) != 0; };
  if (o.auto_ack && has("-A"))
    throw usage_error("-a (auto-ack) and -A (multi-ack) exclude each other");
  if (o.mode == run_mode::sink) {
    if (has("-y") && o.consumers != 0)
      throw usage_error("--sink runs producers only: -y must be 0");
    o.consumers = 0;
  }
  if (o.mode == run_mode::firehose) {
    if (has("-x") && o.producers != 0) {
      throw usage_error("--firehose runs consumers only: -x must be 0");
    }
    o.producers = 0;
  }
  if (o.producers == 0 && o.consumers == 0) throw usage_error("-x 0 with -y 0: nothing to run");
  if (o.consumers == 0) {
    for (std::string_view n : {"-D", "-a", "-A", "-q", "-R", "-Y", "-L", "--exit-when", "-n",
                               "--polling", "--polling-interval", "--nack", "--requeue",
                               "--consumer-args", "--stream-consumer-offset"}) {
      if (has(n)) throw usage_error(std::string(n) + " needs consumers, but -y is 0");
    }
  }
  if (o.producers == 0) {
    for (std::string_view n : {"-C", "-c", "-r", "-X", "-f", "-s", "--variable-rate",
                               "--variable-size", "--producer-random-start-delay", "-m", "-B", "-T",
                               "--json-body", "--body-count", "--body-field-count"}) {
      if (has(n)) throw usage_error(std::string(n) + " needs producers, but -x is 0");
    }
  }
  auto exclusive = [&](std::string_view a, std::string_view b) {
    if (has(a) && has(b)) {
      throw usage_error(std::string(a) + " and " + std::string(b) + " exclude each other");
    }
  };
  exclusive("-r", "--variable-rate");
  exclusive("-s", "--variable-size");
  exclusive("-B", "-s");
  exclusive("-B", "--variable-size");
  exclusive("-B", "--json-body");
  exclusive("--json-body", "--variable-size");
  exclusive("--quorum-queue", "--stream-queue");
  if (has("-T") && !has("-B")) throw usage_error("-T (body content-type) needs -B");
  for (std::string_view n : {"--body-count", "--body-field-count"}) {
    if (has(n) && !o.json_body) throw usage_error(std::string(n) + " needs --json-body");
  }
  if (has("--polling-interval") && !o.polling) {
    throw usage_error("--polling-interval needs --polling");
  }
  if (has("--requeue") && !o.nack) throw usage_error("--requeue needs --nack");
  if (o.nack && o.auto_ack) {
    throw usage_error("--nack settles messages, but -a (auto-ack) consumes them unsettled");
  }
  if (o.producer_tx_size > 0 && o.confirms()) {
    throw usage_error(
        "-m (transactions) and -c (confirms) exclude each other: a channel is in one mode");
  }
  if (o.mode != run_mode::broker) {
    for (std::string_view n : {"-m", "-n", "--polling", "--quorum-queue", "--stream-queue",
                               "--stream-consumer-offset"}) {
      if (has(n)) {
        throw usage_error(std::string(n) +
                          " needs a broker: the null broker (--sink, --firehose) has no "
                          "transactions, basic.get or queue types");
      }
    }
  }
  if (o.quorum_queue || o.stream_queue) {
    const char* what = o.quorum_queue ? "--quorum-queue" : "--stream-queue";
    if (o.queue.empty() && !has("--queue-pattern")) {
      throw usage_error(std::string(what) +
                        " needs -u or --queue-pattern: such a queue cannot be server-named");
    }
    for (const queue_argument& a : o.queue_arguments) {
      if (a.key == "x-queue-type") {
        throw usage_error(std::string(what) + " sets x-queue-type: not also -qa x-queue-type");
      }
    }
    // As PerfTest: these queues are durable, so their messages are persistent.
    o.persistent = true;
    o.auto_delete = false;
    if (o.stream_queue) {
      o.queue_arguments.push_back({"x-queue-type", std::string("stream")});
      o.queue_arguments.push_back({"x-max-length-bytes", std::int64_t{20} << 30});
      o.queue_arguments.push_back({"x-stream-max-segment-size-bytes", std::int64_t{500} << 20});
      if (o.prefetch == 0) o.prefetch = 200;
    } else {
      o.queue_arguments.push_back({"x-queue-type", std::string("quorum")});
    }
  }
  if (o.stream() && o.consumers > 0) {
    // RabbitMQ refuses these, each after the connection is up: refuse them before it.
    if (o.auto_ack) {
      throw usage_error("a stream is consumed with acknowledgements: not with -a (auto-ack)");
    }
    if (o.prefetch == 0) {
      throw usage_error("a stream consumer needs a prefetch: give -q (1 to 65535)");
    }
    if (o.polling) throw usage_error("a stream cannot be read with basic.get: not with --polling");
  }
  if (o.consumer_offset && !o.stream()) {
    throw usage_error(
        "--stream-consumer-offset applies to streams: give --stream-queue or -qa "
        "x-queue-type=stream");
  }
  const bool pattern = has("--queue-pattern");
  if (pattern != has("--queue-pattern-from") || pattern != has("--queue-pattern-to")) {
    throw usage_error("--queue-pattern, --queue-pattern-from and --queue-pattern-to go together");
  }
  if (pattern) {
    const auto d = o.queue_pattern.find("%d");
    if (d == std::string::npos || o.queue_pattern.find('%', d + 2) != std::string::npos ||
        o.queue_pattern.find('%') < d) {
      throw usage_error("--queue-pattern needs exactly one %d and no other %, got '" +
                        o.queue_pattern + "'");
    }
    if (o.queue_pattern_from > o.queue_pattern_to) {
      throw usage_error("--queue-pattern-from is above --queue-pattern-to");
    }
    if (has("-u")) throw usage_error("-u and --queue-pattern exclude each other");
  }
  if (o.exchange.empty() && o.queue.empty() && !pattern && o.mode == run_mode::broker &&
      o.consumers > 0) {
    throw usage_error(
        "-e \"\" (the default exchange) routes by queue name: give -u or --queue-pattern");
  }
  if (o.exchange.empty() && has("-t")) throw usage_error("-t cannot apply to the default exchange");
  if (has("--tls-key") && !has("--tls-cert")) throw usage_error("--tls-key needs --tls-cert");
  if (o.uris.empty()) o.uris.emplace_back(default_uri);
  std::vector<std::string> uris;
  for (const std::string& list : o.uris) {
    std::vector<connection_uri> parsed;
    std::string error;
    if (!parse_uri_list(list, parsed, error)) throw usage_error("-H: " + error);
    for (const connection_uri& u : parsed) uris.push_back(to_string(u, false));
  }
  o.uris = std::move(uris);
}

}  // namespace

std::int64_t perf_options::max_message_size() const noexcept {
  std::int64_t m = variable_sizes.empty() ? message_size : 0;
  for (const variable_step& v : variable_sizes) m = std::max(m, v.value);
  return m;
}

bool perf_options::stream() const noexcept {
  for (const queue_argument& a : queue_arguments) {
    if (a.key == "x-queue-type" && a.value == queue_argument_value(std::string("stream"))) {
      return true;
    }
  }
  return false;
}

std::vector<std::string> perf_options::pattern_queues() const {
  std::vector<std::string> out;
  if (queue_pattern.empty()) return out;
  const auto d = queue_pattern.find("%d");
  for (unsigned i = queue_pattern_from; i <= queue_pattern_to; ++i) {
    out.push_back(queue_pattern.substr(0, d) + std::to_string(i) + queue_pattern.substr(d + 2));
  }
  return out;
}

perf_options parse_options(std::span<const std::string> args) {
  perf_options o;
  std::set<std::string_view> given;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    std::optional<std::string> inline_value;
    if (name.starts_with("--")) {
      if (auto eq = name.find('='); eq != std::string::npos) {
        inline_value = name.substr(eq + 1);
        name.resize(eq);
      }
    }
    const option_def* def = nullptr;
    for (const option_def& d : option_table()) {
      for (std::string_view n : d.names) {
        if (n == name) def = &d;
      }
    }
    if (def == nullptr) {
      if (!name.starts_with('-'))
        throw usage_error("unexpected argument '" + name + "' (see --help)");
      throw usage_error("unknown option " + name + " (see --help)");
    }
    const std::string_view canonical = def->names.front();
    if (!given.insert(canonical).second && !def->repeatable) {
      throw usage_error(std::string(canonical) + " given twice");
    }
    std::string value;
    if (def->value_name.empty()) {
      if (inline_value) throw usage_error(name + " takes no value");
    } else if (inline_value) {
      value = *inline_value;
    } else if (optional_value(*def)) {
      if (i + 1 < args.size() && takes_optional(*def, args[i + 1])) value = args[++i];
    } else {
      if (i + 1 >= args.size())
        throw usage_error(name + " needs a value (" + std::string(def->value_name) + ")");
      value = args[++i];
    }
    def->apply(o, std::string(canonical), value);
  }
  if (o.help) return o;
  check_combinations(o, given);
  return o;
}

std::string help_text() {
  constexpr std::size_t indent = 36, width = 100;
  std::string out =
      "usage: perf [OPTION]...\n"
      "A load generator for RabbitMQ with PerfTest's option names: producers publish\n"
      "timestamped messages, consumers measure the latency; one line per second and a\n"
      "summary. Exit status: 0 on success, 2 on bad usage, 1 when the run fails.\n\n";
  for (const option_def& d : option_table()) {
    std::string line = " ";
    for (std::string_view n : d.names) line += (line.size() > 1 ? ", " : " ") + std::string(n);
    if (!d.value_name.empty()) line += " " + std::string(d.value_name);
    if (line.size() + 2 > indent) {
      out += line + "\n";
      line.clear();
    }
    // Word-wrapped help, every line starting at `indent`.
    std::string_view words = d.help;
    while (!words.empty()) {
      line.resize(indent, ' ');
      std::size_t take = words.size();
      if (indent + take > width) {
        take = words.rfind(' ', width - indent);
        if (take == std::string_view::npos || take == 0) take = words.find(' ');
        if (take == std::string_view::npos) take = words.size();
      }
      out += line + std::string(words.substr(0, take)) + "\n";
      line.clear();
      words.remove_prefix(std::min(words.size(), take + 1));
    }
  }
  return out;
}

std::string redact_uri(std::string_view uri) {
  connection_uri u;
  std::string error;
  if (!parse_uri(uri, u, error)) return "(invalid URI)";
  return to_string(u, true);
}

}  // namespace warren::perf
