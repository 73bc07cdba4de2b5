// End to end, each of PerfTest's options beyond the core (and the tool's own sequence check) as
// the built binary runs them against the broker on 127.0.0.1:5672, with both clients where the
// behaviour is the client's. Every run is short (a few seconds) and bounded by counts or -z;
// the broker's queues are checked with a connection of the test's own, and deleted after.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/broker_env.h"
#include "tests/tools/perf/perf_binary.h"

namespace warren::perf {
namespace {

using test::broker_probe;
using test::lines_of;
using test::outcome;
using test::perf;
using test::slurp;
using test::summary_of;
using test::temp_dir;
using test::unique_queue;

constexpr const char* clients[] = {"async", "blocking"};

std::uint64_t u64(const nlohmann::json& j, const char* key) {
  return j.at(key).get<std::uint64_t>();
}

// Runs perf with `args` and --json; the run must succeed. Returns the summary.
nlohmann::json run_ok(const std::string& args, const std::string& what) {
  const std::string json = temp_dir() + "/" + what + ".json";
  const outcome r = perf(args + " --json " + json);
  EXPECT_EQ(r.status, 0) << what << ": " << r.err << r.out;
  if (r.status != 0) return nlohmann::json::object();
  return summary_of(json);
}

// Deletes its queues however the test ends.
struct queues_to_delete {
  std::vector<std::string> names;
  ~queues_to_delete() {
    try {
      broker_probe probe;
      for (const std::string& q : names) probe.remove(q);
    } catch (const std::exception&) {
      // Already gone (auto-delete, expired): nothing left to clean.
    }
  }
  std::string add(const std::string& what) {
    names.push_back(unique_queue(what));
    return names.back();
  }
};

class perf_options_e2e : public ::warren::test::broker_test {};

// The default topology (one queue per consumer) with the sequence check: every consumer got
// every sequence number of every producer channel once, in order.
TEST_F(perf_options_e2e, the_sequence_check_finds_nothing_missing_in_a_clean_run) {
  for (const char* c : clients) {
    const auto s =
        run_ok(std::string("--client ") + c + " -x 2 -X 2 -y 2 -s 24 -C 300 -c 50 -D 600",
               std::string("seq.") + c);
    ASSERT_TRUE(s.at("sequence").is_object()) << c;
    const auto& q = s.at("sequence");
    EXPECT_EQ(u64(q, "streams"), 8u) << c;      // 4 producer channels x 2 consumer queues
    EXPECT_EQ(u64(q, "received"), 1200u) << c;  // 2 x 300 published, a copy each
    EXPECT_EQ(u64(q, "missing"), 0u) << c;
    EXPECT_EQ(u64(q, "duplicates"), 0u) << c;
    EXPECT_EQ(u64(q, "reordered"), 0u) << c;
  }
}

// A queue holding an earlier run's messages: its sequences are another run's (their own tag),
// so nothing is missing although this run's consumer sees numbers it did not publish.
TEST_F(perf_options_e2e, an_earlier_runs_messages_are_other_streams) {
  queues_to_delete queues;
  const std::string q = queues.add("earlier");
  run_ok("-x 1 -y 0 -s 24 -C 50 -c 10 -u " + q, "earlier.fill");
  const auto s = run_ok("-x 1 -y 1 -s 24 -C 50 -c 10 -D 100 -u " + q, "earlier.run");
  EXPECT_EQ(u64(s.at("sequence"), "streams"), 2u);
  EXPECT_EQ(u64(s.at("sequence"), "missing"), 0u);
  EXPECT_EQ(u64(s, "received"), 100u);
}

// --nack: the broker gets basic.nack; with --requeue false the messages are gone (the queue
// ends empty), with the default requeue they come back, counted as duplicates.
TEST_F(perf_options_e2e, nack_drops_or_requeues_as_asked) {
  queues_to_delete queues;
  for (const char* c : clients) {
    const std::string q = queues.add(std::string("nack-") + c);
    const auto dropped = run_ok(std::string("--client ") + c + " -x 1 -y 1 -s 24 -C 100 -D 100 " +
                                    "--nack --requeue false -c 10 --auto-delete false -u " + q,
                                std::string("nack.drop.") + c);
    EXPECT_EQ(u64(dropped, "received"), 100u) << c;
    EXPECT_EQ(u64(dropped.at("sequence"), "duplicates"), 0u) << c;
    EXPECT_EQ(broker_probe().message_count(q), 0u) << c;
    const auto requeued = run_ok(std::string("--client ") + c + " -x 1 -y 1 -s 24 -C 20 -D 200 " +
                                     "--nack -c 10 --auto-delete false -u " + q,
                                 std::string("nack.requeue.") + c);
    EXPECT_EQ(u64(requeued, "received"), 200u) << c;
    EXPECT_GE(u64(requeued.at("sequence"), "duplicates"), 180u) << c;
    broker_probe().take_all(q);
  }
}

// -m and -n: publishes and acks inside transactions, the last partial batch committed too.
TEST_F(perf_options_e2e, transactions_commit_every_message) {
  queues_to_delete queues;
  for (const char* c : clients) {
    const std::string q = queues.add(std::string("tx-") + c);
    const auto s = run_ok(std::string("--client ") + c + " -x 1 -y 1 -s 24 -m 10 -n 7 -C 95 " +
                              "-D 95 -q 20 --auto-delete false -u " + q,
                          std::string("tx.") + c);
    EXPECT_EQ(u64(s, "published"), 95u) << c;
    EXPECT_EQ(u64(s, "received"), 95u) << c;
    EXPECT_EQ(u64(s.at("sequence"), "missing"), 0u) << c;
    // Every ack committed (95 is not a multiple of 7): nothing goes back to the queue.
    EXPECT_EQ(broker_probe().message_count(q), 0u) << c;
  }
  // Producer transactions alone: 95 is not a multiple of 10, all 95 reach the queue.
  const std::string q = queues.add("tx-producer");
  run_ok("-x 1 -y 0 -m 10 -C 95 -u " + q, "tx.producer");
  EXPECT_EQ(broker_probe().message_count(q), 95u);
}

// --polling: basic.get in a loop; --polling-interval paces it (one get per 50 ms).
TEST_F(perf_options_e2e, polling_consumes_with_basic_get) {
  queues_to_delete queues;
  for (const char* c : clients) {
    const std::string q = queues.add(std::string("poll-") + c);
    const auto s = run_ok(std::string("--client ") + c + " -x 1 -y 1 -s 24 -C 200 -D 200 -c 20 " +
                              "--polling --auto-delete false -u " + q,
                          std::string("poll.") + c);
    EXPECT_EQ(u64(s, "received"), 200u) << c;
    EXPECT_EQ(u64(s.at("sequence"), "missing"), 0u) << c;
    const auto paced = run_ok(std::string("--client ") + c + " -x 1 -y 1 -r 100 -z 2 " +
                                  "--polling --polling-interval 50 --auto-delete false -u " + q,
                              std::string("poll.paced.") + c);
    // At most one message per 50 ms for about 2 s (plus a stop's last get).
    EXPECT_LE(u64(paced, "received"), 45u) << c;
    EXPECT_GE(u64(paced, "received"), 5u) << c;
    broker_probe().take_all(q);
  }
}

// -L: 20 ms of work per message holds a consumer to 50 msg/s.
TEST_F(perf_options_e2e, consumer_latency_slows_each_consumer) {
  for (const char* c : clients) {
    const auto s = run_ok(std::string("--client ") + c + " -x 1 -y 1 -r 200 -z 2 -L 20000 -q 5",
                          std::string("latency.") + c);
    EXPECT_LE(u64(s, "received"), 150u) << c;  // 2 s at most 50/s, and a second for the stop
    EXPECT_GT(u64(s, "received"), 10u) << c;
    EXPECT_GT(u64(s, "published"), 250u) << c;
  }
}

// --variable-rate: nothing for the first second (rate 0), then 300 msg/s for one, then nothing
// again until the run ends at 2.5 s: about 300 in all, whatever the skew between the
// producer's start and the run's clock (up to half a second falls in a pause).
TEST_F(perf_options_e2e, variable_rate_follows_its_steps) {
  for (const char* c : clients) {
    const std::string json = temp_dir() + "/vrate." + c + ".json";
    const outcome r =
        perf(std::string("--client ") + c +
             " -x 1 -y 0 --variable-rate 0:1 --variable-rate 300:1 -z 2.5 --json " + json);
    ASSERT_EQ(r.status, 0) << c << ": " << r.err;
    const auto doc = nlohmann::json::parse(slurp(json));
    const std::uint64_t published = u64(doc.at("summary"), "published");
    EXPECT_GE(published, 270u) << c;
    EXPECT_LE(published, 330u) << c;
    // The first interval is in the pause but for its end past 0.5 s (skew, a late tick).
    const auto& first = doc.at("intervals")[0];
    const double paced_s = std::max(0.0, first.at("elapsed").get<double>() - 0.5);
    EXPECT_LE(static_cast<double>(u64(first, "published")), 300 * paced_s + 10) << c;
  }
}

// --variable-size: bodies of 24 octets for a second, then 1000. The steps and the rate both
// run on the producer's clock, so 400 messages at 200/s span both steps whenever the producer
// starts (a fixed -z cut the second step short when the producer woke late under ASan).
TEST_F(perf_options_e2e, variable_size_follows_its_steps) {
  queues_to_delete queues;
  const std::string q = queues.add("vsize");
  run_ok("-x 1 -y 0 -r 200 -C 400 --variable-size 24:1 --variable-size 1000:1 -u " + q, "vsize");
  std::size_t small = 0, large = 0;
  for (const message& m : broker_probe().take_all(q)) {
    ASSERT_TRUE(m.body_size() == 24 || m.body_size() == 1000) << m.body_size();
    (m.body_size() == 24 ? small : large) += 1;
  }
  EXPECT_EQ(small + large, 400u);
  // About 200 each; a stall of the producer (a loaded machine) moves some across the boundary.
  EXPECT_GT(small, 100u);
  EXPECT_GT(large, 100u);
}

// -B: the files' bytes as bodies in turn, -T their content type, the stamp in a header; the
// consumer still measures latency and checks sequences.
TEST_F(perf_options_e2e, body_files_are_sent_as_they_are) {
  const std::string a = temp_dir() + "/body-a.json", b = temp_dir() + "/body-b.bin";
  std::ofstream(a) << "{\"a\": 1}";
  std::ofstream(b, std::ios::binary) << std::string("\0\1\2\3", 4);
  queues_to_delete queues;
  for (const char* c : clients) {
    const std::string q = queues.add(std::string("body-") + c);
    run_ok(std::string("--client ") + c + " -x 1 -y 0 -C 4 -c 4 -B " + a + "," + b +
               " -T application/x-test -u " + q,
           std::string("body.fill.") + c);
    const std::vector<message> got = broker_probe().take_all(q);
    ASSERT_EQ(got.size(), 4u) << c;
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].body(), i % 2 ? std::string_view("\0\1\2\3", 4) : "{\"a\": 1}") << c;
      EXPECT_EQ(got[i].content_type(), std::optional<std::string>("application/x-test")) << c;
      EXPECT_NE(got[i].headers().find("x-perf-stamp"), nullptr) << c;
    }
    const auto s =
        run_ok(std::string("--client ") + c + " -x 1 -y 1 -C 50 -D 50 -c 10 -B " + a + " -u " + q,
               std::string("body.run.") + c);
    EXPECT_EQ(u64(s, "latency_samples"), 50u) << c;
    EXPECT_EQ(u64(s.at("sequence"), "received"), 50u) << c;
  }
}

TEST_F(perf_options_e2e, json_bodies_are_json_documents_of_the_size) {
  queues_to_delete queues;
  const std::string q = queues.add("json");
  run_ok("-x 1 -y 0 -C 20 -c 20 --json-body -s 2000 --body-count 5 -u " + q, "json.fill");
  const std::vector<message> got = broker_probe().take_all(q);
  ASSERT_EQ(got.size(), 20u);
  for (const message& m : got) {
    EXPECT_GE(m.body_size(), 2000u);
    EXPECT_TRUE(nlohmann::json::parse(m.body()).is_object());
    EXPECT_EQ(m.content_type(), std::optional<std::string>("application/json"));
  }
}

// --exit-when: the run ends by itself once the consumers have nothing more (a second idle).
TEST_F(perf_options_e2e, exit_when_ends_the_run_once_consumers_are_done) {
  queues_to_delete queues;
  for (const char* c : clients) {
    const auto idle =
        run_ok(std::string("--client ") + c + " -x 1 -y 2 -C 100 -c 20 --exit-when idle",
               std::string("exit.idle.") + c);
    EXPECT_EQ(u64(idle, "received"), 200u) << c;
    // A queue filled before: the consumer drains it, then finds it empty.
    const std::string q = queues.add(std::string("exit-") + c);
    run_ok("-x 1 -y 0 -C 300 -c 50 -u " + q, std::string("exit.fill.") + c);
    const std::string json = temp_dir() + "/exit.empty." + c + ".json";
    const outcome r = perf(std::string("--client ") + c + " -x 0 -y 1 --exit-when empty -u " + q +
                           " --json " + json);
    ASSERT_EQ(r.status, 0) << c << ": " << r.err;
    EXPECT_EQ(u64(summary_of(json), "received"), 300u) << c;
    EXPECT_LT(r.seconds, 30) << c;
  }
}

TEST_F(perf_options_e2e, random_start_delay_still_publishes_every_message) {
  const auto s = run_ok("-x 4 -y 1 -C 10 -c 10 -D 40 --producer-random-start-delay 1", "prsd");
  EXPECT_EQ(u64(s, "published"), 40u);
  EXPECT_EQ(u64(s, "received"), 40u);
}

// --id starts every line; -o writes PerfTest's CSV; -ms shows milliseconds.
TEST_F(perf_options_e2e, id_perftest_csv_and_millis) {
  const std::string csv = temp_dir() + "/perftest.csv";
  const outcome r = perf("-x 1 -y 1 -r 100 -z 3.2 -c 10 --id e2e-run -ms -o " + csv);
  ASSERT_EQ(r.status, 0) << r.err;
  for (const std::string& l : lines_of(r.out)) EXPECT_TRUE(l.starts_with("id: e2e-run, ")) << l;
  EXPECT_NE(r.out.find("\nid: e2e-run, latency ms: min "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nid: e2e-run, confirm latency ms: min "), std::string::npos) << r.out;
  const std::vector<std::string> rows = lines_of(slurp(csv));
  ASSERT_GE(rows.size(), 3u);
  EXPECT_TRUE(rows[0].starts_with("id,time (s),published (msg/s),returned (msg/s),"));
  EXPECT_NE(rows[0].find("median consumer latency (ms)"), std::string::npos);
  for (std::size_t i = 1; i < rows.size(); ++i) {
    EXPECT_TRUE(rows[i].starts_with("e2e-run,")) << rows[i];
    EXPECT_EQ(std::count(rows[i].begin(), rows[i].end(), ','), 16) << rows[i];
  }
}

// The broker refuses an invalid consumer argument: proof that --consumer-args reach it.
TEST_F(perf_options_e2e, consumer_args_reach_the_broker) {
  for (const char* c : clients) {
    const auto s = run_ok(
        std::string("--client ") + c + " -x 1 -y 1 -C 50 -D 50 --consumer-args " + "x-priority=5",
        std::string("cargs.") + c);
    EXPECT_EQ(u64(s, "received"), 50u) << c;
    const outcome bad =
        perf(std::string("--client ") + c + " -x 1 -y 1 -z 5 --consumer-args x-priority=high");
    EXPECT_EQ(bad.status, 1) << c;
    EXPECT_NE(bad.err.find("x-priority"), std::string::npos) << c << ": " << bad.err;
  }
}

TEST_F(perf_options_e2e, random_connection_allocation_runs_over_every_uri) {
  const std::string json = temp_dir() + "/cal.json";
  const outcome r = perf(
      "-x 3 -y 3 -C 20 -c 10 -D 60 --connection-allocation random "
      "-H amqp://guest:guest@127.0.0.1:5672,amqp://guest:guest@localhost:5672 --json " +
      json);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto doc = nlohmann::json::parse(slurp(json));
  EXPECT_EQ(doc.at("options").at("connection_allocation"), "random");
  EXPECT_EQ(u64(doc.at("summary"), "received"), 180u);  // a copy each, 3 consumers
}

// --quorum-queue: a durable quorum queue, persistent messages, nothing lost.
TEST_F(perf_options_e2e, quorum_queue_is_declared_and_used) {
  queues_to_delete queues;
  for (const char* c : clients) {
    const std::string q = queues.add(std::string("quorum-") + c);
    const auto s = run_ok(std::string("--client ") + c + " -x 1 -y 1 -s 24 -C 200 -D 200 -c 50 " +
                              "--quorum-queue -u " + q,
                          std::string("quorum.") + c);
    EXPECT_EQ(u64(s, "confirmed"), 200u) << c;
    EXPECT_EQ(u64(s.at("sequence"), "missing"), 0u) << c;
    EXPECT_TRUE(broker_probe().is_durable_of_type(q, "quorum")) << c;
  }
}

std::string iso_time(std::time_t t) {
  char buf[32];
  std::tm utc{};
  ::gmtime_r(&t, &utc);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

// --stream-queue, then consumers from each kind of --stream-consumer-offset.
TEST_F(perf_options_e2e, stream_queue_is_read_from_the_offset_asked) {
  queues_to_delete queues;
  for (const char* c : clients) {
    const std::string q = queues.add(std::string("stream-") + c);
    const std::string client = std::string("--client ") + c;
    const auto fill = run_ok(client + " -x 1 -y 0 -s 24 -C 300 -c 50 --stream-queue -u " + q,
                             std::string("stream.fill.") + c);
    EXPECT_EQ(u64(fill, "confirmed"), 300u) << c;
    codec::field_table limits;
    limits.set("x-max-length-bytes", codec::field_value::i64(std::int64_t{20} << 30));
    limits.set("x-stream-max-segment-size-bytes", codec::field_value::i64(std::int64_t{500} << 20));
    EXPECT_TRUE(broker_probe().is_durable_of_type(q, "stream", limits)) << c;
    // A stream keeps its messages: each consumer reads them again from where it starts.
    const std::string consume = client + " -x 0 -y 1 --stream-queue -u " + q;
    const auto first = run_ok(consume + " --stream-consumer-offset first -D 300",
                              std::string("stream.first.") + c);
    EXPECT_EQ(u64(first, "received"), 300u) << c;
    EXPECT_EQ(u64(first.at("sequence"), "missing"), 0u) << c;
    const auto offset =
        run_ok(consume + " --stream-consumer-offset 200 -D 100", std::string("stream.offset.") + c);
    EXPECT_EQ(u64(offset, "received"), 100u) << c;
    const std::string hour_ago = iso_time(std::time(nullptr) - 3600);
    const auto since = run_ok(consume + " --stream-consumer-offset " + hour_ago + " -D 300",
                              std::string("stream.timestamp.") + c);
    EXPECT_EQ(u64(since, "received"), 300u) << c;
    const auto interval = run_ok(consume + " --stream-consumer-offset 1h -D 300",
                                 std::string("stream.interval.") + c);
    EXPECT_EQ(u64(interval, "received"), 300u) << c;
    // next: only what is published after the consumer started (nothing here).
    const auto next = run_ok(consume + " --stream-consumer-offset next --exit-when idle",
                             std::string("stream.next.") + c);
    EXPECT_EQ(u64(next, "received"), 0u) << c;
  }
}

// What RabbitMQ would refuse once connected is refused before: one line, status 2.
TEST(perf_options_errors, impossible_stream_and_transaction_combinations_exit_2) {
  for (const char* args :
       {"--stream-queue -u s -a", "--stream-queue -u s --polling", "-qa x-queue-type=stream -u s",
        "-m 5 -c 10", "--nack -a", "--quorum-queue", "-B /nonexistent/body"}) {
    const outcome r = perf(args);
    EXPECT_EQ(r.status, 2) << args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(r.err.starts_with("perf: ")) << r.err;
  }
}

}  // namespace
}  // namespace warren::perf
