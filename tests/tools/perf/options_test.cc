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
                           "--client"}) {
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
        bad_case{{"-H", "http://h"}, "-H: invalid AMQP URI"}));

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
