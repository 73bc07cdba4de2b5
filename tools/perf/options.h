// Command-line options of the perf tool, named as in RabbitMQ's PerfTest where PerfTest has the
// option (`-x 2 -y 2 -c 1000`, `-qa x-max-length=1000`), so a PerfTest user's command lines work.
//
// Short options take their value as the next argument (`-x 2`); long ones also as `--name=value`.
// Several PerfTest long names are accepted as aliases (`--producers 2`). parse_options() checks
// every value and every combination; what it accepts can run.
//
// Pure string work: no I/O, any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/protocol/streams.h"

namespace warren::perf {

// Bad command line. what() is one line that names the option at fault, never a password.
class usage_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// What the run measures: a broker (RabbitMQ), or the null broker's client-ceiling modes (sink:
// producers only, publishes discarded; firehose: consumers only, deliveries flooded).
enum class run_mode { broker, sink, firehose };

// Which warren API drives the producers and consumers.
enum class client_kind { async, blocking };

// One `-qa` entry: integers and true/false are typed, everything else is a string.
using queue_argument_value = std::variant<std::int64_t, bool, std::string>;
struct queue_argument {
  std::string key;
  queue_argument_value value;
  bool operator==(const queue_argument&) const = default;
};

// No trailing slash: "/" would name the empty vhost (RabbitMQ URI spec); absent means "/".
inline constexpr std::string_view default_uri = "amqp://guest:guest@127.0.0.1:5672";
// What a published body carries (stamp.h has the layout): at least timestamp_octets, the publish
// time and how late it was against its rate's schedule (latency); at least sequence_octets, also
// the producer's stream and sequence number (gaps, duplicates, reordering).
inline constexpr std::int64_t timestamp_octets = 12;
inline constexpr std::int64_t sequence_octets = 24;

// One step of --variable-rate or --variable-size: `value` for `seconds`, then the next step;
// the steps repeat for the whole run.
struct variable_step {
  std::int64_t value = 0;
  unsigned seconds = 0;
  bool operator==(const variable_step&) const = default;
};

// --exit-when: PerfTest's consumer end conditions (besides -D): idle, no message for more than
// a second; empty, idle and its queue holds no message.
enum class exit_when { never, idle, empty };

// --connection-allocation: how connections take the -H URIs.
enum class connection_allocation { round_robin, random };

// --stream-consumer-offset, sent as the x-stream-offset consumer argument: the engine's type
// (engine/protocol/streams.h), which both faces send.
using stream_offset = warren::stream_offset;

struct perf_options {
  unsigned producers = 1;          // -x
  unsigned consumers = 1;          // -y
  unsigned producer_channels = 1;  // -X, per producer connection
  unsigned consumer_channels = 1;  // -Y, per consumer connection
  std::string queue;               // -u; empty: one exclusive server-named queue per consumer
  std::string exchange = "direct";
  std::string exchange_type = "direct";
  std::string routing_key;                      // -k; empty: a random one per run
  std::int64_t message_size = 12;               // -s; below timestamp_octets: no latency
  double producer_rate = 0;                     // -r, msg/s per producer; 0: unlimited
  double consumer_rate = 0;                     // -R, msg/s per consumer; 0: unlimited
  std::uint32_t confirm_window = 0;             // -c, outstanding per channel; 0: no confirms
  bool auto_ack = false;                        // -a
  std::uint32_t multi_ack_every = 0;            // -A; 0 or 1: one ack per message
  std::uint16_t prefetch = 0;                   // -q; 0: unlimited
  double duration_s = 0;                        // -z; 0: until the counts are reached, or Ctrl-C
  std::uint64_t producer_message_count = 0;     // -C per producer; 0: unlimited
  std::uint64_t consumer_message_count = 0;     // -D per consumer; 0: unlimited
  bool persistent = false;                      // -f persistent
  bool mandatory = false;                       // -f mandatory
  std::uint32_t frame_max = 0;                  // -M; 0: the client's default
  std::optional<std::uint16_t> heartbeat;       // -b, seconds
  std::vector<std::string> uris;                // -H; never empty after parsing
  std::vector<queue_argument> queue_arguments;  // -qa
  std::string queue_pattern;                    // --queue-pattern, one %d
  unsigned queue_pattern_from = 0, queue_pattern_to = 0;
  unsigned io_threads = 1;  // async engine only
  unsigned workers = 0;     // async engine only; 0: hardware concurrency
  // --rx-batch BYTES[:USEC], async engine only: engine_options::rx_batching (0 bytes: off)
  std::size_t rx_batch_bytes = 0;
  unsigned rx_batch_wait_us = 500;
  std::string tls_ca, tls_cert, tls_key;
  bool tls_no_verify = false;
  std::string json_path, csv_path, plot_path;
  run_mode mode = run_mode::broker;
  client_kind client = client_kind::async;  // --client

  // PerfTest's options beyond the core (README, "The perf tool", has the table).
  std::vector<variable_step> variable_rates;     // --variable-rate RATE:SECONDS, msg/s per producer
  std::vector<variable_step> variable_sizes;     // --variable-size SIZE:SECONDS, octets
  std::uint32_t consumer_latency_us = 0;         // -L, simulated work per message
  unsigned producer_random_start_delay_s = 0;    // --producer-random-start-delay; 0: none
  exit_when exit = exit_when::never;             // --exit-when
  std::uint32_t producer_tx_size = 0;            // -m, publishes per commit; 0: no transactions
  std::uint32_t consumer_tx_size = 0;            // -n, messages per commit; 0: no transactions
  bool polling = false;                          // --polling: basic.get instead of basic.consume
  std::uint32_t polling_interval_ms = 0;         // --polling-interval, pause after each get
  bool nack = false;                             // --nack: basic.nack instead of basic.ack
  bool requeue = true;                           // --requeue, for --nack
  std::vector<std::string> body_files;           // -B, bodies taken in turn
  std::string body_content_type;                 // -T, with -B
  bool json_body = false;                        // --json-body, about -s octets of random JSON
  unsigned body_count = 100;                     // --body-count, --json-body documents made
  unsigned body_field_count = 1000;              // --body-field-count, names and values to use
  std::string id;                                // --id (-d); empty: not given
  bool use_millis = false;                       // -ms: wall-clock stamps, latency shown in ms
  std::string perftest_csv_path;                 // -o: PerfTest's CSV format
  bool quorum_queue = false;                     // --quorum-queue
  bool stream_queue = false;                     // --stream-queue
  std::optional<stream_offset> consumer_offset;  // --stream-consumer-offset
  connection_allocation allocation = connection_allocation::round_robin;
  std::vector<queue_argument> consumer_arguments;  // --consumer-args
  bool auto_delete = true;  // --auto-delete: the named queues (-u, --queue-pattern)
  // Automatic connection recovery of the async client (PerfTest's default too);
  // --disable-connection-recovery turns it off.
  bool connection_recovery = true;
  // --metrics-prometheus [PORT]: serve /metrics on this port during the run (0: a free one).
  std::optional<std::uint16_t> metrics_prometheus_port;
  bool help = false;

  bool confirms() const noexcept { return confirm_window > 0; }
  // Publishes are paced: -r or --variable-rate (latency from the intended send time applies).
  bool rate_limited() const noexcept { return producer_rate > 0 || !variable_rates.empty(); }
  // The largest body a producer sends (-s, or the largest --variable-size).
  std::int64_t max_message_size() const noexcept;
  // Bodies are not the tool's own (-B, --json-body): the stamp travels in a header instead.
  bool stamp_in_header() const noexcept { return !body_files.empty() || json_body; }
  // Consumers read stamps: latency is measured (the null broker's firehose sends none).
  bool timestamps() const noexcept {
    return mode != run_mode::firehose &&
           (stamp_in_header() || max_message_size() >= timestamp_octets);
  }
  // The queues are streams (--stream-queue, or -qa x-queue-type=stream).
  bool stream() const noexcept;
  // The queues of --queue-pattern, in order (empty without it).
  std::vector<std::string> pattern_queues() const;
};

// Parses the arguments after the program name. Throws usage_error for an unknown option, a
// missing or malformed value, an option given twice that may not be, and an impossible
// combination (-a with -A, -D without consumers, -C without producers, ...).
perf_options parse_options(std::span<const std::string> args);

// The --help text: every option with its meaning and default.
std::string help_text();

// A URI fit for output: the password replaced by "***".
std::string redact_uri(std::string_view uri);

}  // namespace warren::perf
