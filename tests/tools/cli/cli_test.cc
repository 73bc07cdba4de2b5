// Integration tests: the built `warren` binary against the real broker on 127.0.0.1:5672, run
// through the shell as a user would. Fixture messages are published and checked with the
// library's own client, so the CLI is never its own witness.
#include "tools/cli/cli.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "engine/uri.h"
#include "tests/broker_env.h"
#include "tools/cli/message_json.h"

namespace warren::cli {
namespace {

using codec::field_table;
using codec::field_value;

struct result {
  int status = -1;
  std::string out;
  std::string err;
};

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string temp_path(const std::string& what) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + what + "." + std::to_string(::getpid());
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Runs `script` with /bin/sh; WARREN expands to the built binary. stdout is captured, stderr
// goes to a file read afterwards.
result shell(const std::string& script, const std::string& stdin_text = "") {
  const std::string in_path = temp_path("stdin"), err_path = temp_path("stderr");
  std::ofstream(in_path, std::ios::binary) << stdin_text;
  const std::string cmd =
      "WARREN=tools/cli/warren; { " + script + "; } <" + in_path + " 2>" + err_path;
  result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.err = read_file(err_path);
  return r;
}

result warren_cli(const std::vector<std::string>& args, const std::string& stdin_text = "") {
  std::string script = "\"$WARREN\"";
  for (const std::string& a : args) script += " " + shell_quote(a);
  return shell(script, stdin_text);
}

std::size_t count_lines(const std::string& s) {
  return std::count(s.begin(), s.end(), '\n');
}

class cli_test : public test::broker_test {
 protected:
  void SetUp() override {
    broker_test::SetUp();
    if (HasFatalFailure()) return;
    conn_ = std::make_unique<connection>(connection_options{.host = "127.0.0.1:5672"});
    conn_->connect();
  }
  void TearDown() override {
    if (!conn_) return;
    for (const std::string& q : queues_) {
      try {
        conn_->channel(1).queue_delete(q);
      } catch (const std::exception&) {
        // A failed delete closes channel 1; channel(1) reopens it for the next queue.
      }
    }
    conn_->close();
  }

  // A fresh, empty queue deleted after the test.
  std::string queue(const std::string& tag) {
    const std::string name = "warren-cli-" + tag + "-" + std::to_string(::getpid());
    conn_->channel(1).queue_declare(name, {.auto_delete = false});
    conn_->channel(1).queue_purge(name);
    queues_.push_back(name);
    return name;
  }
  warren::channel& ch() { return conn_->channel(1); }

  std::unique_ptr<connection> conn_;
  std::vector<std::string> queues_;
};

// Every property, and a header of every type letter (nested and at the edges).
std::vector<message> varied_messages() {
  properties full;
  full.content_type = "application/octet-stream";
  full.content_encoding = "binary";
  full.delivery_mode = 2;
  full.priority = 9;
  full.correlation_id = "corr-1";
  full.reply_to = "replies";
  full.expiration = "600000";
  full.message_id = "m-1";
  full.timestamp = 1700000000;
  full.type = "kind";
  full.user_id = "guest";
  full.app_id = "cli-test";
  full.cluster_id = "cl";
  full.headers = field_table{
      {"t", field_value::boolean(true)},
      {"b", field_value::i8(-128)},
      {"B", field_value::u8(255)},
      {"s", field_value::i16(-32768)},
      {"u", field_value::u16(65535)},
      {"I", field_value::i32(INT32_MIN)},
      {"i", field_value::u32(UINT32_MAX)},
      {"l", field_value::i64(INT64_MIN)},
      // Finite only: RabbitMQ cannot parse NaN or infinite floats (its channel crashes with
      // 541); message_json_test covers them.
      {"f", field_value::f32(-3.25e-30f)},
      {"d", field_value::f64(-1.0e300)},
      {"D", field_value::decimal(2, -314)},
      {"S", field_value::long_string(std::string("\xff\x00text", 6))},
      {"A", field_value::array(
                {field_value::i32(1), field_value::array({field_value::long_string("deep")})})},
      {"T", field_value::timestamp(UINT64_MAX)},
      {"F", field_value::table({{"k", field_value::bytes("\x01\x02")}, {"v", field_value()}})},
      {"V", field_value::void_value()},
      {"x", field_value::bytes(std::string("\x00\xff", 2))},
  };
  properties empty_headers;
  empty_headers.headers = field_table{};
  return {message("plain text \xe2\x9c\x93", full), message(std::string("\xff\xfe\x00\x01", 4)),
          message(""), message(std::string(300000, 'z'), empty_headers),
          message("{\"looks\": \"like json\"}\n")};
}

TEST_F(cli_test, publish_with_body_then_get_round_trips_properties_and_typed_headers) {
  const std::string q = queue("get");
  const result pub =
      warren_cli({"publish", "--routing-key", q, "--body", "héllo", "--property",
                  "content_type=text/plain", "--property", "priority=3", "--header", "n=I:-42",
                  "--header", "dec=D:3.14", "--header", R"(list=A:[{"type":"x","value":"AAE="}])"});
  ASSERT_EQ(pub.status, 0) << pub.err;
  const result got = warren_cli({"get", "--queue", q, "--json"});
  ASSERT_EQ(got.status, 0) << got.err;
  ASSERT_EQ(count_lines(got.out), 1u) << got.out;
  const json j = json::parse(got.out);
  EXPECT_EQ(j["body"], "héllo");
  EXPECT_EQ(j["properties"].dump(), R"({"content_type":"text/plain","priority":3})");
  EXPECT_EQ(j["headers"].dump(),
            R"({"n":{"type":"I","value":-42},"dec":{"type":"D","value":"3.14"},)"
            R"("list":{"type":"A","value":[{"type":"x","value":"AAE="}]}})");
  EXPECT_EQ(j["delivery"]["routing_key"], q);
  EXPECT_EQ(j["delivery"]["message_count"], 0);
  // get acknowledged it: the queue is empty now.
  EXPECT_FALSE(ch().basic_get(q, true));
}

TEST_F(cli_test, get_on_an_empty_queue_prints_nothing_and_exits_0) {
  const result r = warren_cli({"get", "--queue", queue("empty"), "--json"});
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("is empty"), std::string::npos) << r.err;
}

TEST_F(cli_test, consume_piped_into_publish_replays_messages_byte_exactly) {
  const std::string src = queue("src"), dst = queue("dst");
  const std::vector<message> originals = varied_messages();
  for (const message& m : originals) ch().basic_publish(m, "", src);
  const std::string status_file = temp_path("consume-status");
  const result r =
      shell("{ \"$WARREN\" consume --queue " + src + " --count " +
            std::to_string(originals.size()) + " --timeout 10 --json; echo $? >" + status_file +
            "; } | \"$WARREN\" publish --confirm --routing-key " + dst + " --message-json -");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_file(status_file), "0\n") << r.err;
  EXPECT_EQ(r.err, "");
  for (const message& want : originals) {
    std::optional<message> got = ch().basic_get(dst, true);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->body(), want.body());
    EXPECT_EQ(got->props(), want.props());
    EXPECT_EQ(got->delivery_info().routing_key, dst);
  }
  EXPECT_FALSE(ch().basic_get(dst, true));
  EXPECT_FALSE(ch().basic_get(src, true)) << "consume should have acked every message";
}

TEST_F(cli_test, consume_stops_after_count_and_leaves_the_rest_queued) {
  const std::string q = queue("count");
  for (int i = 0; i < 5; ++i) ch().basic_publish(message("m" + std::to_string(i)), "", q);
  const result r = warren_cli({"consume", "--queue", q, "--count", "2", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(count_lines(r.out), 2u) << r.out;
  std::istringstream lines(r.out);
  std::string line;
  for (int i = 0; std::getline(lines, line); ++i) {
    EXPECT_EQ(json::parse(line)["body"], "m" + std::to_string(i));
  }
  EXPECT_EQ(ch().queue_declare(q, {.passive = true}).message_count, 3u);
}

TEST_F(cli_test, declare_queue_type_stream_and_consume_from_a_stream_offset) {
  const std::string q = "warren-cli-stream-" + std::to_string(::getpid());
  queues_.push_back(q);
  const result decl = warren_cli({"declare-queue", "--queue", q, "--type", "stream"});
  ASSERT_EQ(decl.status, 0) << decl.err;
  ch().confirm_select();
  for (int i = 0; i < 4; ++i) ch().basic_publish(message("s" + std::to_string(i)), "", q);
  ch().wait_for_confirms(seconds_f(10));
  const result r =
      warren_cli({"consume", "--queue", q, "--stream-offset", "2", "--count", "2", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(count_lines(r.out), 2u) << r.out;
  std::istringstream lines(r.out);
  std::string line;
  for (int i = 2; std::getline(lines, line); ++i) {
    EXPECT_EQ(json::parse(line)["body"], "s" + std::to_string(i)) << "from offset 2 on";
  }
  const result bad = warren_cli({"consume", "--queue", q, "--stream-offset", "yesterday"});
  EXPECT_EQ(bad.status, 2) << bad.err;
  EXPECT_NE(bad.err.find("yesterday"), std::string::npos) << bad.err;
}

TEST_F(cli_test, declare_queue_type_quorum_declares_a_durable_quorum_queue) {
  const std::string q = "warren-cli-quorum-" + std::to_string(::getpid());
  queues_.push_back(q);
  const result decl = warren_cli({"declare-queue", "--queue", q, "--type", "quorum"});
  ASSERT_EQ(decl.status, 0) << decl.err;
  // The same name as a classic queue is inequivalent: the broker refuses it with 406.
  EXPECT_THROW(conn_->channel(2).queue_declare(q, {.durable = true, .auto_delete = false}),
               precondition_failed);
  const result excl =
      warren_cli({"declare-queue", "--queue", q, "--type", "quorum", "--exclusive"});
  EXPECT_EQ(excl.status, 2) << excl.err;
  const result typo = warren_cli({"declare-queue", "--queue", q, "--type", "quorom"});
  EXPECT_EQ(typo.status, 2) << typo.err;
}

TEST_F(cli_test, consume_returns_after_timeout_seconds_without_messages) {
  const auto start = std::chrono::steady_clock::now();
  const result r = warren_cli({"consume", "--queue", queue("idle"), "--timeout", "1"});
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_GE(took, std::chrono::milliseconds(900));
  EXPECT_LT(took, std::chrono::seconds(8));
}

TEST_F(cli_test, consume_without_json_prints_a_readable_form) {
  const std::string q = queue("human");
  ch().basic_publish(message("hi there", {.content_type = "text/plain"}), "", q);
  const result r = warren_cli({"consume", "--queue", q, "--count", "1", "--no-ack"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("content_type: text/plain\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("body (8 bytes): hi there\n"), std::string::npos) << r.out;
  EXPECT_EQ(ch().queue_declare(q, {.passive = true}).message_count, 0u);
}

TEST_F(cli_test, missing_queue_fails_with_one_404_line_and_status_1) {
  const result r = warren_cli({"get", "--queue", "warren-cli-no-such-queue"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_EQ(r.err.rfind("warren: 404 NOT_FOUND - no queue 'warren-cli-no-such-queue'", 0), 0u)
      << r.err;
  const result purge = warren_cli({"purge", "--queue", "warren-cli-no-such-queue"});
  EXPECT_EQ(purge.status, 1);
  EXPECT_NE(purge.err.find("404 NOT_FOUND"), std::string::npos) << purge.err;
}

TEST_F(cli_test, bad_usage_exits_2_with_one_line) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {},
           {"frobnicate"},
           {"get"},
           {"get", "--queue"},
           {"publish", "--body", "x", "--header", "n=B:300"},
           {"publish"},
           {"consume", "--queue", "q", "--count", "zero"},
           {"declare-queue", "--arguments", "{not json"},
           {"--uri", "http://x/", "purge", "--queue", "q"},
       }) {
    const result r = warren_cli(args);
    EXPECT_EQ(r.status, 2) << ::testing::PrintToString(args) << r.err;
    EXPECT_EQ(count_lines(r.err), 1u) << r.err;
    EXPECT_EQ(r.out, "");
  }
}

TEST_F(cli_test, help_is_printed_for_the_tool_and_each_command) {
  const result all = warren_cli({"--help"});
  EXPECT_EQ(all.status, 0);
  for (const char* cmd : {"publish", "consume", "get", "declare-exchange", "declare-queue", "bind",
                          "unbind", "delete-queue", "delete-exchange", "purge"}) {
    EXPECT_NE(all.out.find(std::string("  ") + cmd + " "), std::string::npos) << cmd;
    const result one = warren_cli({cmd, "--help"});
    EXPECT_EQ(one.status, 0);
    EXPECT_EQ(one.out.rfind(std::string("usage: warren ") + cmd, 0), 0u) << one.out;
    EXPECT_NE(one.out.find("--uri"), std::string::npos);
  }
}

TEST_F(cli_test, confirm_succeeds_when_acked_and_fails_on_a_nack) {
  const std::string q = "warren-cli-nack-" + std::to_string(::getpid());
  queues_.push_back(q);
  const result decl = warren_cli({"declare-queue", "--queue", q, "--json", "--arguments",
                                  R"({"x-max-length": 1, "x-overflow": "reject-publish"})"});
  ASSERT_EQ(decl.status, 0) << decl.err;
  EXPECT_EQ(decl.out, "{\"queue\":\"" + q + "\",\"message_count\":0,\"consumer_count\":0}\n");
  const result ok = warren_cli({"publish", "--confirm", "--routing-key", q, "--body", "one"});
  EXPECT_EQ(ok.status, 0) << ok.err;
  // The queue is full and rejects further publishes: the broker nacks.
  const result nacked = warren_cli({"publish", "--confirm", "--routing-key", q, "--body", "two"});
  EXPECT_EQ(nacked.status, 1);
  EXPECT_EQ(count_lines(nacked.err), 1u) << nacked.err;
  EXPECT_NE(nacked.err.find("nack"), std::string::npos) << nacked.err;
}

TEST_F(cli_test, mandatory_publish_of_an_unroutable_message_fails_with_312) {
  const std::string nowhere = "warren-cli-unroutable-" + std::to_string(::getpid());
  const result r = warren_cli({"publish", "--mandatory", "--routing-key", nowhere, "--body", "x"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_EQ(r.err.rfind("warren: 312 NO_ROUTE", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(nowhere), std::string::npos) << r.err;
  const result plain = warren_cli({"publish", "--routing-key", nowhere, "--body", "x"});
  EXPECT_EQ(plain.status, 0) << plain.err;
  const result routed =
      warren_cli({"publish", "--mandatory", "--routing-key", queue("routed"), "--body", "x"});
  EXPECT_EQ(routed.status, 0) << routed.err;
}

TEST_F(cli_test, exchanges_bindings_purge_and_delete) {
  const std::string ex = "warren-cli-ex-" + std::to_string(::getpid());
  const std::string ex2 = ex + "-2";
  const std::string q = queue("bound");
  ASSERT_EQ(warren_cli({"declare-exchange", "--exchange", ex, "--type", "fanout"}).status, 0);
  ASSERT_EQ(warren_cli({"declare-exchange", "--exchange", ex2, "--type", "fanout"}).status, 0);
  ASSERT_EQ(warren_cli({"bind", "--exchange", ex, "--to-exchange", ex2}).status, 0);
  ASSERT_EQ(warren_cli({"bind", "--exchange", ex2, "--queue", q}).status, 0);
  ASSERT_EQ(warren_cli({"publish", "--exchange", ex, "--body", "via two exchanges"}).status, 0);
  ASSERT_EQ(warren_cli({"publish", "--exchange", ex, "--body", "again"}).status, 0);
  const result purged = warren_cli({"purge", "--queue", q});
  EXPECT_EQ(purged.status, 0) << purged.err;
  EXPECT_EQ(purged.out, "purged 2 messages from '" + q + "'\n");
  ASSERT_EQ(warren_cli({"unbind", "--exchange", ex, "--to-exchange", ex2}).status, 0);
  ASSERT_EQ(warren_cli({"publish", "--exchange", ex, "--body", "dropped"}).status, 0);
  ASSERT_EQ(warren_cli({"unbind", "--exchange", ex2, "--queue", q}).status, 0);
  ASSERT_EQ(warren_cli({"publish", "--exchange", ex2, "--body", "dropped"}).status, 0);
  EXPECT_EQ(ch().queue_declare(q, {.passive = true}).message_count, 0u);
  EXPECT_EQ(warren_cli({"delete-exchange", "--exchange", ex}).status, 0);
  EXPECT_EQ(warren_cli({"delete-exchange", "--exchange", ex2}).status, 0);
  EXPECT_THROW(ch().exchange_declare(ex, "fanout", {.passive = true}), not_found);
  ASSERT_EQ(warren_cli({"publish", "--confirm", "--routing-key", q, "--body", "left"}).status, 0);
  const result del = warren_cli({"delete-queue", "--queue", q});
  EXPECT_EQ(del.status, 0) << del.err;
  EXPECT_EQ(del.out, "deleted queue '" + q + "' with 1 messages\n");
}

TEST_F(cli_test, unreachable_broker_is_one_line_quickly) {
  const auto start = std::chrono::steady_clock::now();
  const result r = warren_cli({"--uri", "amqp://guest:guest@127.0.0.1:1/", "get", "--queue", "q"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(cli_test, refused_login_is_one_line_without_the_password) {
  const std::string secret = "not-the-password-8d1f";
  const result r =
      warren_cli({"get", "--queue", "q", "--uri",
                  "amqp://guest:" + secret + "@127.0.0.1:5672/%2F?connection_timeout=5000"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("ACCESS_REFUSED"), std::string::npos) << r.err;
  EXPECT_EQ((r.out + r.err).find(secret), std::string::npos);
  const result bad_uri =
      warren_cli({"--uri", "amqp://guest:" + secret + "@[::1/", "purge", "--queue", "q"});
  EXPECT_EQ(bad_uri.status, 2);
  EXPECT_EQ((bad_uri.out + bad_uri.err).find(secret), std::string::npos) << bad_uri.err;
}

TEST(options_from_uri, fills_connection_options) {
  const connection_options o = options_from_uri(
      "amqps://bob:pw@[::1]:5673/vh?heartbeat=7&frame_max=8192&connection_timeout=2500"
      "&cacertfile=/ca.pem&verify=verify_none&server_name_indication=disable"
      "&auth_mechanism=external");
  EXPECT_EQ(o.host, "[::1]:5673");
  EXPECT_EQ(o.userid, "bob");
  EXPECT_EQ(o.password, "pw");
  EXPECT_EQ(o.virtual_host, "vh");
  EXPECT_EQ(o.heartbeat, 7);
  EXPECT_EQ(o.frame_max, 8192u);
  EXPECT_EQ(o.connect_timeout, seconds_f(2.5));
  ASSERT_TRUE(o.ssl);
  EXPECT_EQ(o.ssl->ca_file, "/ca.pem");
  EXPECT_FALSE(o.ssl->verify_peer);
  EXPECT_EQ(o.ssl->server_name, "");
  ASSERT_EQ(o.authentication.size(), 1u);
  EXPECT_EQ(o.authentication[0].mechanism, "EXTERNAL");
}

TEST(options_from_uri, default_uri_means_vhost_slash_and_a_bounded_connect) {
  const connection_options o = options_from_uri(default_uri);
  EXPECT_EQ(o.host, "127.0.0.1:5672");
  EXPECT_EQ(o.virtual_host, "/");
  EXPECT_EQ(o.connect_timeout, seconds_f(10));
  EXPECT_FALSE(o.ssl);
  EXPECT_THROW(options_from_uri("amqp://h?auth_mechanism=gssapi"), uri_error);
}

TEST(options_from_uri, differs_from_the_engine_only_in_empty_vhost_and_connect_timeout) {
  for (const char* uri : {"amqp://u:p@h:1234/%2f?heartbeat=3&channel_max=9",
                          "amqp://h/vh?auth_mechanism=plain&auth_mechanism=amqplain",
                          "amqps://h?certfile=/c.pem&keyfile=/k.pem&connection_timeout=40"}) {
    SCOPED_TRACE(uri);
    const connection_options tool = options_from_uri(uri);
    const connection_options engine = connection_options::from_uri(uri);
    EXPECT_EQ(tool.host, engine.host);
    EXPECT_EQ(tool.userid, engine.userid);
    EXPECT_EQ(tool.password, engine.password);
    EXPECT_EQ(tool.virtual_host, engine.virtual_host);
    EXPECT_EQ(tool.heartbeat, engine.heartbeat);
    EXPECT_EQ(tool.channel_max, engine.channel_max);
    EXPECT_EQ(tool.frame_max, engine.frame_max);
    ASSERT_EQ(tool.authentication.size(), engine.authentication.size());
    for (std::size_t i = 0; i < tool.authentication.size(); ++i)
      EXPECT_EQ(tool.authentication[i].mechanism, engine.authentication[i].mechanism);
    ASSERT_EQ(tool.ssl.has_value(), engine.ssl.has_value());
    if (tool.ssl) {
      EXPECT_EQ(tool.ssl->cert_file, engine.ssl->cert_file);
      EXPECT_EQ(tool.ssl->key_file, engine.ssl->key_file);
      EXPECT_EQ(tool.ssl->verify_peer, engine.ssl->verify_peer);
    }
    EXPECT_EQ(tool.connect_timeout, engine.connect_timeout.value_or(seconds_f(10)));
  }
  EXPECT_EQ(connection_options::from_uri("amqp://h/").virtual_host, "");
  EXPECT_EQ(options_from_uri("amqp://h/").virtual_host, "/");
  EXPECT_EQ(options_from_uri("amqp://h").virtual_host, "/");
}

}  // namespace
}  // namespace warren::cli
