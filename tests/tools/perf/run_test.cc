// End to end: the built perf binary against the real broker on 127.0.0.1:5672 (and against
// sockets that refuse or never answer), run as a user would, outputs checked by other parsers
// (nlohmann::json, python3's xml.etree).
#include "tools/perf/run.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/broker_env.h"
#include "tests/engine/io/test_support.h"
#include "tests/tools/perf/freeze_proxy.h"
#include "tests/tools/perf/perf_binary.h"
#include "tests/tools/perf/svg_check.h"
#include "tools/null_broker/server.h"

namespace warren::perf {
namespace {

using test::lines_of;
using test::outcome;
using test::perf;
using test::slurp;
using test::summary_of;
using test::temp_dir;

class perf_run : public ::warren::test::broker_test {};

TEST_F(perf_run, two_by_two_with_confirms_writes_json_csv_and_svg) {
  const std::string dir = temp_dir() + "/e2e." + std::to_string(::getpid());
  ASSERT_EQ(::system(("mkdir -p " + dir).c_str()), 0);
  const outcome r = perf("-x 2 -y 2 -z 3 -c 1000 --json " + dir + "/out.json --csv " + dir +
                         "/out.csv --plot " + dir + "/out.svg");
  ASSERT_EQ(r.status, 0) << r.err << r.out;
  EXPECT_EQ(r.err, "");
  // Per-second lines (stdout is a pipe, not a terminal), then the summary.
  // About one line a second (a loaded machine may print "time 1.2 s"), at least two of them.
  int per_second = 0;
  for (const std::string& l : lines_of(r.out)) {
    if (l.starts_with("time ") && l.find(" s, published ") != std::string::npos) ++per_second;
  }
  EXPECT_GE(per_second, 2) << r.out;
  EXPECT_NE(r.out.find("\nsummary: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nlatency us: min "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nclient cpu: "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\r'), std::string::npos);

  const auto doc = nlohmann::json::parse(slurp(dir + "/out.json"));
  const auto& s = doc.at("summary");
  EXPECT_GT(s.at("published").get<std::uint64_t>(), 0u);
  EXPECT_EQ(s.at("published").get<std::uint64_t>(), s.at("confirmed").get<std::uint64_t>());
  EXPECT_EQ(s.at("nacked").get<std::uint64_t>(), 0u);
  EXPECT_GT(s.at("received").get<std::uint64_t>(), 0u);
  // Each consumer has its own queue bound with the run's key: a copy of every message each.
  EXPECT_LE(s.at("received").get<std::uint64_t>(), 2 * s.at("published").get<std::uint64_t>());
  EXPECT_GT(s.at("latency_us").at("p50").get<double>(), 0);
  EXPECT_LE(s.at("latency_us").at("min").get<double>(), s.at("latency_us").at("p50").get<double>());
  EXPECT_LE(s.at("latency_us").at("p99").get<double>(), s.at("latency_us").at("max").get<double>());
  EXPECT_GT(s.at("client_cpu_us_per_msg").get<double>(), 0);
  EXPECT_GE(doc.at("intervals").size(), 3u);
  std::uint64_t sum = 0;
  for (const auto& i : doc.at("intervals")) sum += i.at("published").get<std::uint64_t>();
  EXPECT_EQ(sum, s.at("published").get<std::uint64_t>());

  const std::vector<std::string> csv = lines_of(slurp(dir + "/out.csv"));
  ASSERT_EQ(csv.size(), doc.at("intervals").size() + 2);
  EXPECT_TRUE(csv.front().starts_with("kind,"));
  EXPECT_TRUE(csv[1].starts_with("interval,"));
  EXPECT_TRUE(csv.back().starts_with("summary,"));

  const test::svg_facts svg = test::check_svg(dir + "/out.svg");
  ASSERT_TRUE(svg.parsed) << svg.error;
  EXPECT_EQ(svg.root, "svg");
  EXPECT_FALSE(svg.width.empty());
  EXPECT_FALSE(svg.height.empty());
  EXPECT_EQ(svg.series_points.at("published"), static_cast<int>(doc.at("intervals").size()));
  EXPECT_GT(svg.series_points.at("median"), 0);
}

TEST_F(perf_run, blocking_client_runs_the_same_workload) {
  const std::string json = temp_dir() + "/blocking.json";
  const outcome r = perf("--client blocking -x 1 -y 2 -Y 2 -z 2 -c 100 -q 50 -A 10 --json " + json);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto s = summary_of(json);
  EXPECT_EQ(s.at("published").get<std::uint64_t>(), s.at("confirmed").get<std::uint64_t>());
  EXPECT_GT(s.at("received").get<std::uint64_t>(), 0u);
}

TEST_F(perf_run, message_counts_end_the_run_when_reached) {
  for (const char* client : {"async", "blocking"}) {
    const std::string json = temp_dir() + "/counts." + client + ".json";
    const outcome r =
        perf(std::string("--client ") + client +
             // One queue per client and test process: the first run's queue may still be
             // going away when the second declares it, and runs may share the broker.
             " -x 2 -y 1 -u perf-counts-test-" + client + "-" + std::to_string(::getpid()) +
             " -qa x-expires=60000 -C 500 -D 1000 "
             "-c 50 -q 100 --json " +
             json);
    ASSERT_EQ(r.status, 0) << client << ": " << r.err;
    const auto s = summary_of(json);
    EXPECT_EQ(s.at("published").get<std::uint64_t>(), 1000u) << client;
    EXPECT_EQ(s.at("confirmed").get<std::uint64_t>(), 1000u) << client;
    EXPECT_EQ(s.at("received").get<std::uint64_t>(), 1000u) << client;
    EXPECT_LT(r.seconds, 30) << client;
  }
}

TEST_F(perf_run, consumer_rate_limit_holds_for_each_consumer) {
  for (const char* client : {"async", "blocking"}) {
    const std::string json = temp_dir() + "/consumer_rate." + client + ".json";
    const outcome r =
        perf(std::string("--client ") + client + " -x 1 -y 2 -r 400 -R 50 -z 2 --json " + json);
    ASSERT_EQ(r.status, 0) << client << ": " << r.err;
    const auto s = summary_of(json);
    // 2 consumers at 50 msg/s, although 2 x 400 msg/s reach their queues; the backlog a stop
    // would drain is not counted. The run lasts 2 s plus its stop (which took over a second on
    // the loaded machine: 310 received in one of 20 runs against a fixed bound of 300), and the
    // consumers may start half a second before the run's clock.
    const auto received = s.at("received").get<std::uint64_t>();
    EXPECT_GT(received, 120u) << client;
    EXPECT_LE(static_cast<double>(received), 2 * (50 * (s.at("seconds").get<double>() + 0.5) + 1))
        << client;
    EXPECT_LT(received, 700u) << client;  // far below the unlimited 2 x 400 msg/s
    EXPECT_GT(s.at("published").get<std::uint64_t>(), 600u) << client;
  }
}

TEST_F(perf_run, unroutable_mandatory_messages_are_counted_as_returned) {
  const std::string json = temp_dir() + "/returned.json";
  const outcome r = perf("-x 1 -y 0 -f mandatory -c 100 -C 300 --json " + json);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto s = summary_of(json);
  EXPECT_EQ(s.at("published").get<std::uint64_t>(), 300u);
  EXPECT_EQ(s.at("returned").get<std::uint64_t>(), 300u);
  EXPECT_EQ(s.at("confirmed").get<std::uint64_t>(), 300u);  // returned, then acked
  EXPECT_EQ(s.at("received").get<std::uint64_t>(), 0u);
}

// The broker's refusal is a nack, and only that: a full queue with x-overflow=reject-publish
// nacks every publish routed to it.
TEST_F(perf_run, publishes_the_broker_refuses_are_nacked_not_in_doubt) {
  for (const char* client : {"async", "blocking"}) {
    const std::string json = temp_dir() + "/nacked." + client + ".json";
    const outcome r = perf(std::string("--client ") + client + " -x 1 -y 0 -u perf-nack-test-" +
                           client + "-" + std::to_string(::getpid()) +
                           " -qa x-max-length=0,x-overflow=reject-publish,x-expires=60000"
                           " -c 50 -C 200 --json " +
                           json);
    ASSERT_EQ(r.status, 0) << client << ": " << r.err;
    const auto s = summary_of(json);
    EXPECT_EQ(s.at("published").get<std::uint64_t>(), 200u) << client;
    EXPECT_EQ(s.at("nacked").get<std::uint64_t>(), 200u) << client;
    EXPECT_EQ(s.at("confirmed").get<std::uint64_t>(), 0u) << client;
    EXPECT_EQ(s.at("in_doubt").get<std::uint64_t>(), 0u) << client;
  }
}

TEST_F(perf_run, queue_pattern_with_rate_limit_and_small_messages) {
  const std::string json = temp_dir() + "/pattern.json";
  const outcome r = perf("-x 2 -y 2 -s 8 -r 200 -z 2 --queue-pattern perf-pattern-test-" +
                         std::to_string(::getpid()) +
                         "-%d --queue-pattern-from 1 "
                         "--queue-pattern-to 2 -qa x-expires=60000 --json " +
                         json);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto s = summary_of(json);
  // Two producers at 200 msg/s for about 2 s.
  EXPECT_GT(s.at("published").get<std::uint64_t>(), 500u);
  EXPECT_LT(s.at("published").get<std::uint64_t>(), 1000u);
  EXPECT_GT(s.at("received").get<std::uint64_t>(), 0u);
  // 8-octet bodies carry no timestamp: no latency samples.
  EXPECT_EQ(s.at("latency_samples").get<std::uint64_t>(), 0u);
  EXPECT_EQ(r.out.find("latency us:"), std::string::npos);
}

// The null broker (in this process) is the witness: it counts what actually arrived.
TEST(perf_null_broker, sink_publishes_exactly_what_the_null_broker_counts) {
  null_broker::server_options so;
  so.session.mode = null_broker::mode::sink;
  null_broker::server sink(so);
  const std::string json = temp_dir() + "/sink.json";
  const std::string uri = "amqp://127.0.0.1:" + std::to_string(sink.port());
  const outcome r = perf("--sink " + uri + " -z 2 -c 500 --json " + json);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto s = summary_of(json);
  EXPECT_GT(s.at("published").get<std::uint64_t>(), 1000u);
  EXPECT_EQ(s.at("confirmed").get<std::uint64_t>(), s.at("published").get<std::uint64_t>());
  EXPECT_EQ(s.at("received").get<std::uint64_t>(), 0u);
  sink.stop();
  EXPECT_EQ(sink.totals().sessions.published, s.at("published").get<std::uint64_t>());
  // Producers only: no latency line.
  EXPECT_EQ(r.out.find("latency"), std::string::npos) << r.out;
}

TEST(perf_null_broker, firehose_receives_the_flood_without_latency) {
  null_broker::server_options so;
  so.session.mode = null_broker::mode::firehose;
  null_broker::server firehose(so);
  const std::string json = temp_dir() + "/firehose.json";
  const outcome r = perf("--firehose -H amqp://127.0.0.1:" + std::to_string(firehose.port()) +
                         " -z 2 -a --json " + json);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto s = summary_of(json);
  EXPECT_GT(s.at("received").get<std::uint64_t>(), 1000u);
  EXPECT_EQ(s.at("published").get<std::uint64_t>(), 0u);
  EXPECT_EQ(s.at("latency_samples").get<std::uint64_t>(), 0u);
  firehose.stop();
  EXPECT_LE(s.at("received").get<std::uint64_t>(), firehose.totals().sessions.delivered);
}

TEST(perf_null_broker, a_connection_lost_mid_run_ends_the_run_with_one_line) {
  for (const char* client : {"async", "blocking"}) {
    null_broker::server_options so;
    so.session.mode = null_broker::mode::sink;
    null_broker::server sink(so);
    // Stopped once the run is under way (the sink has taken publishes), not after a fixed
    // second: a tool slow to start (sanitizers, a busy machine) would otherwise connect to a
    // sink that no longer serves, and wait for its handshake instead of losing a run.
    std::thread stopper([&sink] {
      // Mid-run: once publishes arrive (connecting can take seconds under a sanitizer).
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (sink.totals().sessions.published < 1000 &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      sink.stop();
    });
    // Without recovery (on by default for the async client, which would reconnect instead).
    const outcome r = perf(std::string("--client ") + client +
                           " --sink amqp://127.0.0.1:" + std::to_string(sink.port()) +
                           " -z 20 -c 100 --disable-connection-recovery");
    stopper.join();
    EXPECT_EQ(r.status, 1) << client << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("producer 1"), std::string::npos) << r.err;
    EXPECT_LT(r.seconds, 10) << client;
    // What was measured until then is still reported.
    EXPECT_NE(r.out.find("summary: "), std::string::npos) << r.out;
  }
}

// Issue 9 item 7: publishes whose confirm never came because the connection died were reported
// as "nacked", as if the broker had refused them. The proxy withholds every confirm after
// freeze() and then cuts the connection. Once it has withheld a whole basic.ack frame (21
// octets; the null broker sends nothing else), at least one publish is unconfirmed for the
// client: in doubt, and nothing nacked (the null broker never nacks).
TEST(perf_null_broker, publishes_whose_outcome_was_lost_are_in_doubt_not_nacked) {
  constexpr std::uint64_t ack_frame = 21;
  for (const char* client : {"async", "blocking"}) {
    null_broker::server_options so;
    so.session.mode = null_broker::mode::sink;
    null_broker::server sink(so);
    test::freeze_proxy proxy(sink.port());
    const std::string json = temp_dir() + "/in_doubt." + client + ".json";
    std::thread driver([&proxy] {
      using namespace std::chrono;
      // Every wait is for a condition, bounded by a deadline far above what it needs.
      const auto deadline = steady_clock::now() + seconds(20);
      while (proxy.client_bytes() < 64 * 1024 && steady_clock::now() < deadline) {
        std::this_thread::sleep_for(milliseconds(5));
      }
      proxy.freeze();
      while (proxy.withheld_bytes() < ack_frame && steady_clock::now() < deadline) {
        std::this_thread::sleep_for(milliseconds(5));
      }
      proxy.cut();
    });
    const outcome r = perf(std::string("--client ") + client +
                           " --sink amqp://127.0.0.1:" + std::to_string(proxy.port()) +
                           " -z 30 -c 1000 --disable-connection-recovery --json " + json +
                           " --csv " + json + ".csv");
    driver.join();
    ASSERT_GE(proxy.withheld_bytes(), ack_frame) << client;
    EXPECT_EQ(r.status, 1) << client << ": " << r.err;
    const auto s = summary_of(json);
    const auto published = s.at("published").get<std::uint64_t>();
    const auto confirmed = s.at("confirmed").get<std::uint64_t>();
    const auto in_doubt = s.at("in_doubt").get<std::uint64_t>();
    EXPECT_EQ(s.at("nacked").get<std::uint64_t>(), 0u) << client;
    EXPECT_GE(in_doubt, 1u) << client;
    // Every publish has exactly one outcome.
    EXPECT_EQ(published, confirmed + in_doubt) << client;
    EXPECT_NE(r.out.find(", in doubt " + std::to_string(in_doubt)), std::string::npos) << r.out;
    const std::vector<std::string> csv = lines_of(slurp(json + ".csv"));
    ASSERT_GE(csv.size(), 2u);
    EXPECT_NE(csv.front().find(",nacked,in_doubt,"), std::string::npos) << csv.front();
    EXPECT_NE(csv.back().find("," + std::to_string(in_doubt) + ","), std::string::npos)
        << csv.back();
  }
}

// One stderr line, "perf: ...", non-zero status, nothing that looks like the password.
void expect_one_line_error(const outcome& r, int status, const std::string& part) {
  EXPECT_EQ(r.status, status) << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(r.err.starts_with("perf: ")) << r.err;
  EXPECT_NE(r.err.find(part), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("s3cret"), std::string::npos) << r.err;
}

TEST(perf_errors, bad_usage_is_one_line_and_status_2) {
  expect_one_line_error(perf("-Q"), 2, "unknown option -Q");
  expect_one_line_error(perf("-a -A 3"), 2, "exclude each other");
  expect_one_line_error(perf("-y 0 -D 10"), 2, "-D needs consumers");
  expect_one_line_error(perf("-s -5"), 2, "-s must be at least 0");
  expect_one_line_error(perf("-H amqp://u:s3cret@h:99999"), 2, "invalid AMQP URI");
  EXPECT_EQ(perf("-Q").out, "");
}

TEST(perf_errors, help_documents_the_options_and_exits_0) {
  const outcome r = perf("--help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("-qa, --queue-args K=V"), std::string::npos);
  EXPECT_EQ(r.err, "");
}

TEST(perf_errors, unreachable_broker_fails_fast_with_one_line) {
  // Port 1 on loopback: nothing listens, the connect is refused at once.
  const outcome r = perf("-H amqp://guest:s3cret@127.0.0.1:1 -z 5");
  expect_one_line_error(r, 1, "127.0.0.1:1");
  EXPECT_NE(r.err.find("amqp://guest:***@127.0.0.1:1"), std::string::npos) << r.err;
  EXPECT_LT(r.seconds, 10);
}

TEST(perf_errors, a_peer_that_never_answers_times_out_instead_of_hanging) {
  // A listener that accepts (in the kernel's backlog) and never speaks AMQP.
  io::test::listener silent;
  ASSERT_TRUE(silent.ok());
  const std::string port = std::to_string(silent.port());
  const outcome r =
      perf("-H amqp://guest:s3cret@127.0.0.1:" + port + "?connection_timeout=1000 -z 5");
  expect_one_line_error(r, 1, "127.0.0.1:" + port);
  EXPECT_LT(r.seconds, 10);
}

TEST_F(perf_run, refused_login_is_one_line_without_the_password) {
  const outcome r = perf("-H amqp://guest:s3cret-wrong@127.0.0.1:5672 -z 5");
  expect_one_line_error(r, 1, "ACCESS_REFUSED");
  EXPECT_LT(r.seconds, 10);
}

TEST_F(perf_run, refused_login_of_a_worker_connection_is_reported_too) {
  // The setup connection is skipped (no topology to declare against amq.direct without -u),
  // so the failure comes from a producer's or consumer's own connection.
  const outcome r = perf("-e amq.direct -y 0 -H amqp://nobody:s3cret@127.0.0.1:5672 -z 5");
  expect_one_line_error(r, 1, "ACCESS_REFUSED");
  EXPECT_NE(r.err.find("producer 1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace warren::perf
