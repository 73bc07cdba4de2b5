#include "tools/perf/options.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace warren::perf {
namespace {

perf_options parse(std::vector<std::string> args) {
  return parse_options(args);
}

// The message of the usage_error that parsing `args` throws ("" when it does not throw).
std::string error_of(std::vector<std::string> args) {
  try {
    parse_options(args);
  } catch (const usage_error& e) {
    return e.what();
  }
  return "";
}

TEST(options, defaults_are_one_producer_one_consumer_on_the_local_broker) {
  const perf_options o = parse({});
  EXPECT_EQ(o.producers, 1u);
  EXPECT_EQ(o.consumers, 1u);
  EXPECT_EQ(o.exchange, "direct");
  EXPECT_EQ(o.exchange_type, "direct");
  EXPECT_EQ(o.message_size, 12);
  EXPECT_FALSE(o.confirms());
  EXPECT_TRUE(o.timestamps());
  EXPECT_TRUE(o.queue.empty());
  EXPECT_EQ(o.client, client_kind::async);
  ASSERT_EQ(o.uris.size(), 1u);
  EXPECT_EQ(o.uris[0], "amqp://guest:guest@127.0.0.1:5672/%2F");
}

TEST(options, perftest_short_options_set_every_field) {
  const perf_options o =
      parse({"-x", "3",    "-y",           "4",          "-X",        "2",         "-Y", "5",
             "-u", "q1",   "-e",           "ex",         "-t",        "topic",     "-k", "rk",
             "-s", "100",  "-r",           "500",        "-R",        "250.5",     "-c", "1000",
             "-A", "10",   "-q",           "50",         "-z",        "7",         "-C", "9000",
             "-D", "8000", "-f",           "persistent", "-f",        "mandatory", "-M", "8192",
             "-b", "30",   "--io-threads", "2",          "--workers", "3"});
  EXPECT_EQ(o.producers, 3u);
  EXPECT_EQ(o.consumers, 4u);
  EXPECT_EQ(o.producer_channels, 2u);
  EXPECT_EQ(o.consumer_channels, 5u);
  EXPECT_EQ(o.queue, "q1");
  EXPECT_EQ(o.exchange, "ex");
  EXPECT_EQ(o.exchange_type, "topic");
  EXPECT_EQ(o.routing_key, "rk");
  EXPECT_EQ(o.message_size, 100);
  EXPECT_DOUBLE_EQ(o.producer_rate, 500);
  EXPECT_DOUBLE_EQ(o.consumer_rate, 250.5);
  EXPECT_EQ(o.confirm_window, 1000u);
  EXPECT_EQ(o.multi_ack_every, 10u);
  EXPECT_EQ(o.prefetch, 50);
  EXPECT_DOUBLE_EQ(o.duration_s, 7);
  EXPECT_EQ(o.producer_message_count, 9000u);
  EXPECT_EQ(o.consumer_message_count, 8000u);
  EXPECT_TRUE(o.persistent);
  EXPECT_TRUE(o.mandatory);
  EXPECT_EQ(o.frame_max, 8192u);
  EXPECT_EQ(o.heartbeat, std::optional<std::uint16_t>(30));
  EXPECT_EQ(o.io_threads, 2u);
  EXPECT_EQ(o.workers, 3u);
}

TEST(options, rx_batch_takes_bytes_and_an_optional_wait) {
  const perf_options off = parse({});
  EXPECT_EQ(off.rx_batch_bytes, 0u);
  const perf_options bytes_only = parse({"--rx-batch", "32768"});
  EXPECT_EQ(bytes_only.rx_batch_bytes, 32768u);
  EXPECT_EQ(bytes_only.rx_batch_wait_us, 500u);
  const perf_options both = parse({"--rx-batch=65536:2000"});
  EXPECT_EQ(both.rx_batch_bytes, 65536u);
  EXPECT_EQ(both.rx_batch_wait_us, 2000u);
}

TEST(options, metrics_prometheus_takes_an_optional_port_defaulting_to_perftests_8080) {
  EXPECT_FALSE(parse({}).metrics_prometheus_port.has_value());
  EXPECT_EQ(parse({"--metrics-prometheus"}).metrics_prometheus_port, 8080);
  EXPECT_EQ(parse({"--metrics-prometheus", "-x", "2"}).metrics_prometheus_port, 8080);
  EXPECT_EQ(parse({"--metrics-prometheus", "9419"}).metrics_prometheus_port, 9419);
  EXPECT_EQ(parse({"--metrics-prometheus=0"}).metrics_prometheus_port, 0);
  EXPECT_EQ(parse({"-mpr", "0"}).metrics_prometheus_port, 0);
  EXPECT_THROW(parse({"--metrics-prometheus=http"}), usage_error);
  EXPECT_THROW(parse({"--metrics-prometheus", "70000"}), usage_error);
}

TEST(options, perftest_long_names_and_equals_form_are_accepted) {
  const perf_options o = parse({"--producers", "2", "--consumers=3", "--autoack", "--qos=7",
                                "--flag", "persistent,mandatory", "--client", "blocking"});
  EXPECT_EQ(o.producers, 2u);
  EXPECT_EQ(o.consumers, 3u);
  EXPECT_TRUE(o.auto_ack);
  EXPECT_EQ(o.prefetch, 7);
  EXPECT_TRUE(o.persistent && o.mandatory);
  EXPECT_EQ(o.client, client_kind::blocking);
}

TEST(options, uris_split_on_commas_and_repeat) {
  const perf_options o =
      parse({"-H", "amqp://a:pw@h1:5672/v,amqp://h2", "-H", "amqps://h3?verify=verify_none"});
  ASSERT_EQ(o.uris.size(), 3u);
  EXPECT_EQ(o.uris[0], "amqp://a:pw@h1:5672/v");
  EXPECT_EQ(o.uris[1], "amqp://guest:guest@h2:5672/%2F");
  EXPECT_TRUE(o.uris[2].starts_with("amqps://"));
}

TEST(options, queue_arguments_are_typed) {
  const perf_options o = parse(
      {"-qa", "x-max-length=1000,x-queue-type=quorum", "-qa", "x-single-active-consumer=true"});
  ASSERT_EQ(o.queue_arguments.size(), 3u);
  EXPECT_EQ(o.queue_arguments[0], (queue_argument{"x-max-length", std::int64_t{1000}}));
  EXPECT_EQ(o.queue_arguments[1], (queue_argument{"x-queue-type", std::string("quorum")}));
  EXPECT_EQ(o.queue_arguments[2], (queue_argument{"x-single-active-consumer", true}));
}

TEST(options, queue_pattern_names_every_queue_in_range) {
  const perf_options o = parse(
      {"--queue-pattern", "perf-%d-q", "--queue-pattern-from", "3", "--queue-pattern-to", "5"});
  EXPECT_EQ(o.pattern_queues(), (std::vector<std::string>{"perf-3-q", "perf-4-q", "perf-5-q"}));
}

TEST(options, small_message_size_turns_latency_off) {
  EXPECT_FALSE(parse({"-s", "11"}).timestamps());
  EXPECT_TRUE(parse({"-s", "12"}).timestamps());
  EXPECT_FALSE(parse({"-s", "0"}).timestamps());
}

TEST(options, sink_and_firehose_take_an_optional_uri) {
  const perf_options sink = parse({"--sink", "amqp://127.0.0.1:5699", "-z", "1"});
  EXPECT_EQ(sink.mode, run_mode::sink);
  EXPECT_EQ(sink.consumers, 0u);
  EXPECT_EQ(sink.uris, (std::vector<std::string>{"amqp://guest:guest@127.0.0.1:5699/%2F"}));
  const perf_options fire = parse({"--firehose", "-H", "amqp://127.0.0.1:5698"});
  EXPECT_EQ(fire.mode, run_mode::firehose);
  EXPECT_EQ(fire.producers, 0u);
  EXPECT_FALSE(fire.timestamps());
  EXPECT_EQ(fire.uris, (std::vector<std::string>{"amqp://guest:guest@127.0.0.1:5698/%2F"}));
}

TEST(options, tls_options_are_kept) {
  const perf_options o = parse({"--tls-ca", "/ca.pem", "--tls-cert", "/c.pem", "--tls-key",
                                "/k.pem", "--tls-no-verify", "-H", "amqps://127.0.0.1:5671"});
  EXPECT_EQ(o.tls_ca, "/ca.pem");
  EXPECT_EQ(o.tls_cert, "/c.pem");
  EXPECT_EQ(o.tls_key, "/k.pem");
  EXPECT_TRUE(o.tls_no_verify);
}

TEST(options, perftest_options_beyond_the_core_set_their_fields) {
  const perf_options o = parse({"--variable-rate",
                                "100:60",
                                "-vr",
                                "0:5",
                                "--variable-size",
                                "1000:30",
                                "-L",
                                "250",
                                "--producer-random-start-delay",
                                "10",
                                "--exit-when",
                                "empty",
                                "-n",
                                "20",
                                "--polling",
                                "--polling-interval",
                                "5",
                                "--nack",
                                "--requeue",
                                "false",
                                "--id",
                                "run-1",
                                "-ms",
                                "-o",
                                "/tmp/out.csv",
                                "--connection-allocation",
                                "random",
                                "--consumer-args",
                                "x-priority=5,x-tag=a",
                                "-ca",
                                "x-flag=true"});
  EXPECT_EQ(o.variable_rates, (std::vector<variable_step>{{100, 60}, {0, 5}}));
  EXPECT_EQ(o.variable_sizes, (std::vector<variable_step>{{1000, 30}}));
  EXPECT_TRUE(o.rate_limited());
  EXPECT_EQ(o.max_message_size(), 1000);
  EXPECT_EQ(o.consumer_latency_us, 250u);
  EXPECT_EQ(o.producer_random_start_delay_s, 10u);
  EXPECT_EQ(o.exit, exit_when::empty);
  EXPECT_EQ(o.consumer_tx_size, 20u);
  EXPECT_TRUE(o.polling);
  EXPECT_EQ(o.polling_interval_ms, 5u);
  EXPECT_TRUE(o.nack);
  EXPECT_FALSE(o.requeue);
  EXPECT_EQ(o.id, "run-1");
  EXPECT_TRUE(o.use_millis);
  EXPECT_EQ(o.perftest_csv_path, "/tmp/out.csv");
  EXPECT_EQ(o.allocation, connection_allocation::random);
  EXPECT_EQ(o.consumer_arguments,
            (std::vector<queue_argument>{
                {"x-priority", std::int64_t{5}}, {"x-tag", std::string("a")}, {"x-flag", true}}));
  EXPECT_EQ(parse({}).allocation, connection_allocation::round_robin);
  EXPECT_EQ(parse({"-d", "x"}).id, "x");
  EXPECT_EQ(parse({"--exit-when", "idle"}).exit, exit_when::idle);
  EXPECT_EQ(parse({"-m", "10"}).producer_tx_size, 10u);
  EXPECT_TRUE(parse({}).auto_delete);
  EXPECT_FALSE(parse({"--auto-delete", "false"}).auto_delete);
  EXPECT_FALSE(parse({"--quorum-queue", "-u", "q"}).auto_delete);
}

TEST(options, bodies_from_files_or_json_put_the_stamp_in_a_header) {
  const perf_options files = parse({"-B", "a.json,b.json", "-B", "c.json", "-T", "text/plain"});
  EXPECT_EQ(files.body_files, (std::vector<std::string>{"a.json", "b.json", "c.json"}));
  EXPECT_EQ(files.body_content_type, "text/plain");
  EXPECT_TRUE(files.stamp_in_header());
  EXPECT_TRUE(files.timestamps());
  const perf_options json =
      parse({"--json-body", "-s", "4000", "--body-count", "7", "--body-field-count", "9"});
  EXPECT_TRUE(json.json_body);
  EXPECT_EQ(json.body_count, 7u);
  EXPECT_EQ(json.body_field_count, 9u);
  EXPECT_TRUE(json.stamp_in_header());
  EXPECT_FALSE(parse({}).stamp_in_header());
}

// PerfTest: --quorum-queue is --flag persistent --queue-args x-queue-type=quorum --auto-delete
// false; --stream-queue likewise, with prefetch 200 and its length and segment limits.
TEST(options, quorum_and_stream_queues_as_perftest_declares_them) {
  const perf_options q = parse({"--quorum-queue", "-u", "qq"});
  EXPECT_TRUE(q.persistent);
  EXPECT_EQ(q.queue_arguments,
            (std::vector<queue_argument>{{"x-queue-type", std::string("quorum")}}));
  EXPECT_FALSE(q.stream());
  const perf_options st = parse({"--stream-queue", "-u", "s"});
  EXPECT_TRUE(st.persistent);
  EXPECT_TRUE(st.stream());
  EXPECT_EQ(st.prefetch, 200);
  EXPECT_EQ(st.queue_arguments, (std::vector<queue_argument>{
                                    {"x-queue-type", std::string("stream")},
                                    {"x-max-length-bytes", std::int64_t{20} << 30},
                                    {"x-stream-max-segment-size-bytes", std::int64_t{500} << 20}}));
  EXPECT_EQ(parse({"--stream-queue", "-u", "s", "-q", "10"}).prefetch, 10);
  EXPECT_TRUE(parse({"-qa", "x-queue-type=stream", "-u", "s", "-q", "5"}).stream());
}

TEST(options, stream_consumer_offsets_in_every_form) {
  auto offset = [](const std::string& v) {
    return *parse({"--stream-queue", "-u", "s", "--stream-consumer-offset", v}).consumer_offset;
  };
  EXPECT_EQ(offset("first"), stream_offset::first());
  EXPECT_EQ(offset("last"), stream_offset::last());
  EXPECT_EQ(offset("next"), stream_offset::next());
  EXPECT_EQ(offset("12345"), stream_offset::at(12345));
  EXPECT_EQ(offset("1h"), stream_offset::interval("1h"));
  EXPECT_EQ(offset("7D"), stream_offset::interval("7D"));
  // 2022-06-03T07:45:54Z is 1654242354 s after the epoch.
  EXPECT_EQ(offset("2022-06-03T07:45:54Z"), stream_offset::at_timestamp(1654242354));
  EXPECT_EQ(offset("2022-06-03T09:45:54.750+02:00").value(), 1654242354u);
  EXPECT_EQ(offset("2022-06-03T02:45:54-05:00").value(), 1654242354u);
  EXPECT_EQ(offset("1970-01-01T00:00:00Z").value(), 0u);
  EXPECT_EQ(offset("2000-03-01T00:00:00Z").value(), 951868800u);  // after a leap day
}

TEST(options, help_stops_checking_and_documents_every_option) {
  EXPECT_TRUE(parse({"--help", "-a", "-A", "2"}).help);
  const std::string help = help_text();
  for (const char* name : {"-x",
                           "-y",
                           "-X",
                           "-Y",
                           "-u",
                           "-e",
                           "-t",
                           "-k",
                           "-s",
                           "-r",
                           "-R",
                           "-c",
                           "-a",
                           "-A",
                           "-q",
                           "-z",
                           "-C",
                           "-D",
                           "-f",
                           "-M",
                           "-b",
                           "-H",
                           "-qa",
                           "--queue-pattern",
                           "--queue-pattern-from",
                           "--queue-pattern-to",
                           "--io-threads",
                           "--workers",
                           "--rx-batch",
                           "--tls-ca",
                           "--tls-cert",
                           "--tls-key",
                           "--tls-no-verify",
                           "--json",
                           "--csv",
                           "--plot",
                           "--sink",
                           "--firehose",
                           "--client",
                           "--variable-rate",
                           "--variable-size",
                           "-L",
                           "--producer-random-start-delay",
                           "--exit-when",
                           "-m",
                           "-n",
                           "--polling",
                           "--polling-interval",
                           "--nack",
                           "--requeue",
                           "-B",
                           "-T",
                           "--json-body",
                           "--body-count",
                           "--body-field-count",
                           "--id",
                           "-ms",
                           "-o",
                           "--quorum-queue",
                           "--stream-queue",
                           "--stream-consumer-offset",
                           "--connection-allocation",
                           "--consumer-args",
                           "--auto-delete"}) {
    // At the start of a help entry: "  -x, --producers N" or "  --json FILE".
    const std::string at = std::string("\n  ") + name;
    const bool documented =
        help.find(at + " ") != std::string::npos || help.find(at + ",") != std::string::npos;
    EXPECT_TRUE(documented) << name;
  }
}

struct bad_case {
  std::vector<std::string> args;
  std::string message_part;
};

class bad_input : public ::testing::TestWithParam<bad_case> {};

TEST_P(bad_input, is_one_line_naming_the_problem) {
  const std::string e = error_of(GetParam().args);
  EXPECT_NE(e.find(GetParam().message_part), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    options, bad_input,
    ::testing::Values(
        bad_case{{"-Q"}, "unknown option -Q"}, bad_case{{"--nope"}, "unknown option --nope"},
        bad_case{{"stray"}, "unexpected argument 'stray'"}, bad_case{{"-x"}, "-x needs a value"},
        bad_case{{"-x", "two"}, "-x expects an integer"},
        bad_case{{"-x", "1", "-x", "2"}, "-x given twice"},
        bad_case{{"-a", "-A", "5"}, "-a (auto-ack) and -A (multi-ack) exclude each other"},
        bad_case{{"-y", "0", "-D", "5"}, "-D needs consumers, but -y is 0"},
        bad_case{{"-x", "0", "-C", "5"}, "-C needs producers, but -x is 0"},
        bad_case{{"-x", "0", "-y", "0"}, "nothing to run"},
        bad_case{{"-s", "-1"}, "-s must be at least 0"},
        bad_case{{"-r", "-5"}, "-r must be at least 0"},
        bad_case{{"-z", "soon"}, "-z expects a number"},
        bad_case{{"-q", "70000"}, "-q must be between 0 and 65535"},
        bad_case{{"-M", "100"}, "-M must be 0 or at least 4096"},
        bad_case{{"-f", "fast"}, "-f expects persistent or mandatory"},
        bad_case{{"-qa", "novalue"}, "-qa expects key=value"},
        bad_case{{"--queue-pattern", "q-%d"}, "go together"},
        bad_case{{"--queue-pattern", "q", "--queue-pattern-from", "1", "--queue-pattern-to", "2"},
                 "exactly one %d"},
        bad_case{
            {"--queue-pattern", "q-%d", "--queue-pattern-from", "3", "--queue-pattern-to", "2"},
            "above"},
        bad_case{{"-u", "q", "--queue-pattern", "q-%d", "--queue-pattern-from", "1",
                  "--queue-pattern-to", "2"},
                 "exclude each other"},
        bad_case{{"-e", ""}, "give -u or --queue-pattern"},
        bad_case{{"--tls-key", "/k.pem"}, "--tls-key needs --tls-cert"},
        bad_case{{"--sink", "-y", "2"}, "--sink runs producers only"},
        bad_case{{"--firehose", "-x", "1"}, "--firehose runs consumers only"},
        bad_case{{"--sink", "--firehose"}, "cannot be combined"},
        bad_case{{"--autoack=yes"}, "takes no value"},
        bad_case{{"--client", "fast"}, "--client expects async or blocking"},
        bad_case{{"--rx-batch", "0"}, "--rx-batch must be between 1 and"},
        bad_case{{"--rx-batch", "4096:x"}, "--rx-batch expects an integer, got 'x'"},
        bad_case{{"--rx-batch", "4096:0"}, "--rx-batch must be between 1 and 1000000"},
        bad_case{{"-H", "http://h"}, "-H: invalid AMQP URI"},
        bad_case{{"--variable-rate", "100"}, "--variable-rate expects VALUE:SECONDS"},
        bad_case{{"--variable-rate", "100:0"}, "--variable-rate must be between 1 and"},
        bad_case{{"--variable-rate", "-1:5"}, "--variable-rate must be between 0 and"},
        bad_case{{"--variable-rate", "a:5"}, "--variable-rate expects an integer, got 'a'"},
        bad_case{{"--variable-size", "0:5"}, "--variable-size must be between 1 and"},
        bad_case{{"-r", "10", "--variable-rate", "5:5"}, "-r and --variable-rate exclude"},
        bad_case{{"-s", "10", "--variable-size", "5:5"}, "-s and --variable-size exclude"},
        bad_case{{"-L", "-3"}, "-L must be between 0 and"},
        bad_case{{"--producer-random-start-delay", "0"}, "must be between 1 and"},
        bad_case{{"--exit-when", "done"}, "--exit-when expects empty or idle"},
        bad_case{{"-y", "0", "--exit-when", "idle"}, "--exit-when needs consumers"},
        bad_case{{"-m", "10", "-c", "100"}, "-m (transactions) and -c (confirms) exclude"},
        bad_case{{"--polling-interval", "5"}, "--polling-interval needs --polling"},
        bad_case{{"--requeue", "false"}, "--requeue needs --nack"},
        bad_case{{"--nack", "--requeue", "no"}, "--requeue expects true or false"},
        bad_case{{"--nack", "-a"}, "--nack settles messages, but -a"},
        bad_case{{"-x", "0", "-B", "f"}, "-B needs producers"},
        bad_case{{"-B", "f", "-s", "100"}, "-B and -s exclude"},
        bad_case{{"-B", "f", "--json-body"}, "-B and --json-body exclude"},
        bad_case{{"-T", "text/plain"}, "-T (body content-type) needs -B"},
        bad_case{{"--body-count", "5"}, "--body-count needs --json-body"},
        bad_case{{"--id", ""}, "--id expects an id"},
        bad_case{{"-o", ""}, "-o expects a file name"},
        bad_case{{"--quorum-queue"}, "--quorum-queue needs -u or --queue-pattern"},
        bad_case{{"--stream-queue"}, "--stream-queue needs -u or --queue-pattern"},
        bad_case{{"--quorum-queue", "--stream-queue", "-u", "q"}, "exclude each other"},
        bad_case{{"--quorum-queue", "-u", "q", "-qa", "x-queue-type=classic"},
                 "not also -qa x-queue-type"},
        bad_case{{"--stream-queue", "-u", "s", "-a"}, "not with -a (auto-ack)"},
        bad_case{{"-qa", "x-queue-type=stream", "-u", "s", "-a"}, "not with -a (auto-ack)"},
        bad_case{{"-qa", "x-queue-type=stream", "-u", "s"}, "needs a prefetch: give -q"},
        bad_case{{"--stream-queue", "-u", "s", "--polling"}, "not with --polling"},
        bad_case{{"--stream-consumer-offset", "first"}, "applies to streams"},
        bad_case{{"--stream-queue", "-u", "s", "--stream-consumer-offset", "yesterday"},
                 "--stream-consumer-offset expects first, last, next"},
        bad_case{{"--stream-queue", "-u", "s", "--stream-consumer-offset", "2022-06-03T07:45:54"},
                 "--stream-consumer-offset expects"},
        bad_case{{"--stream-queue", "-u", "s", "--stream-consumer-offset", "2022-13-03T07:45:54Z"},
                 "--stream-consumer-offset expects"},
        bad_case{{"--stream-queue", "-u", "s", "--stream-consumer-offset", "99999999999999999999"},
                 "--stream-consumer-offset must be between 0 and"},
        bad_case{{"--connection-allocation", "shuffle"}, "expects random or round-robin"},
        bad_case{{"--auto-delete", "yes"}, "--auto-delete expects true or false"},
        bad_case{{"--consumer-args", "x-priority"}, "--consumer-args expects key=value"},
        bad_case{{"--sink", "-m", "5"}, "-m needs a broker"},
        bad_case{{"--firehose", "--polling"}, "--polling needs a broker"}));

TEST(options, uri_errors_never_show_the_password) {
  const std::string e = error_of({"-H", "amqp://user:s3cret@host:99999"});
  EXPECT_FALSE(e.empty());
  EXPECT_EQ(e.find("s3cret"), std::string::npos) << e;
}

TEST(options, redact_uri_hides_the_password) {
  EXPECT_EQ(redact_uri("amqp://bob:s3cret@h:5672/v"), "amqp://bob:***@h:5672/v");
}

}  // namespace
}  // namespace warren::perf
