#include "engine/protocol/connection_machine.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tests/engine/protocol/scripted_peer.h"

namespace warren::protocol {
namespace {

using namespace std::chrono_literals;
using namespace std::string_literals;
using test::client_frame;
using test::client_output;
using test::parse_client_output;
using test::scripted_peer;

std::string hex(std::string_view s) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string describe(const close_reason& r) {
  return std::to_string(r.reply_code) + " '" + r.reply_text + "' " + std::to_string(r.class_id) +
         "." + std::to_string(r.method_id) + (r.by_peer ? " by peer" : " by client");
}

// True when `view` lies inside the bytes of `buffer`: the view is not a copy.
bool points_into(std::string_view view, const rx_ref& buffer) {
  if (!buffer) return false;
  const char* begin = buffer->data();
  return view.data() >= begin && view.data() + view.size() <= begin + buffer->capacity();
}

// Records every handler event, in order, both structured and as one line of text each (the
// text lets two runs be compared event for event).
struct event_log final : connection_handler {
  int opened = 0;
  int tuned = 0;
  std::vector<command> commands;  // copies: they keep their buffers alive
  std::vector<std::pair<std::uint16_t, close_reason>> channel_closes;
  std::vector<close_reason> closes;
  std::vector<std::string> blocked;
  int unblocked = 0;
  std::vector<std::string> trace;
  std::function<void()> after_open;  // runs inside on_open, like an API layer would

  void on_open() override {
    ++opened;
    trace.push_back("open");
    if (after_open) after_open();
  }
  void on_tuned() override {
    ++tuned;
    trace.push_back("tuned");
  }
  void on_command(command& c) override {
    commands.push_back(c);
    std::string line = "command " + std::to_string(c.channel) + " " + std::to_string(c.class_id) +
                       "." + std::to_string(c.method_id) + " " + hex(c.args);
    if (c.has_content) {
      line += " content " + std::to_string(c.header.body_size) + " " +
              std::string(c.header.properties.content_type) + " " + hex(c.body);
    }
    trace.push_back(std::move(line));
  }
  void on_channel_closed(std::uint16_t channel, const close_reason& why) override {
    channel_closes.emplace_back(channel, why);
    trace.push_back("channel closed " + std::to_string(channel) + " " + describe(why));
  }
  void on_blocked(std::string_view reason) override {
    blocked.emplace_back(reason);
    trace.push_back("blocked " + std::string(reason));
  }
  void on_unblocked() override {
    ++unblocked;
    trace.push_back("unblocked");
  }
  void on_closed(const close_reason& why) override {
    closes.push_back(why);
    trace.push_back("closed " + describe(why));
  }
};

connection_config plain_config() {
  connection_config c;
  c.authentication = {sasl_plain("guest", "guest")};
  return c;
}

// A machine, its event log, a fake clock, and a caller that feeds bytes the way the I/O layer
// does: each read lands in a fresh buffer after the unconsumed tail of the previous one.
struct harness {
  time_point now = time_point{} + 1h;
  event_log log;
  std::unique_ptr<connection_machine> m;
  std::string tail;
  rx_ref last_buffer;  // the buffer of the latest feed (tests release it to check lifetimes)

  void make(connection_config c = plain_config()) {
    m = std::make_unique<connection_machine>(std::move(c), log);
    m->start(now);
  }

  std::size_t feed(std::string_view bytes) {
    const std::string all = tail + std::string(bytes);
    last_buffer = rx_ref::allocate(all.size());
    if (!all.empty()) std::memcpy(last_buffer->data(), all.data(), all.size());
    const std::size_t used =
        m->feed(std::string_view(last_buffer->data(), all.size()), last_buffer, now);
    EXPECT_LE(used, all.size());
    tail = all.substr(std::min(used, all.size()));
    return used;
  }
  std::size_t feed(scripted_peer& p) {
    EXPECT_EQ(p.encode_status(), codec::errc::ok) << "the script itself did not encode";
    return feed(p.take());
  }

  // What the client wrote since the last call; the transport "writes" all of it at `now`.
  client_output written() {
    client_output out = parse_client_output(m->output());
    EXPECT_EQ(out.error, codec::errc::ok) << "the client wrote a malformed stream";
    m->consume_output(m->output().size(), now);
    return out;
  }
};

template <class M>
const client_frame* find(const client_output& out) {
  for (const auto& f : out.frames) {
    if (f.is<M>()) return &f;
  }
  return nullptr;
}

class connection_machine_test : public ::testing::Test, protected harness {
 protected:
  // The whole handshake (start, tune with `server_heartbeat`, open-ok), output consumed.
  void open(connection_config c = plain_config(), std::uint16_t server_heartbeat = 0) {
    make(std::move(c));
    feed(peer.start().tune(2047, 131072, server_heartbeat).open_ok());
    ASSERT_TRUE(m->is_open());
    written();
  }
  void open_with_heartbeat(std::uint16_t heartbeat) {
    connection_config c = plain_config();
    c.heartbeat = heartbeat;
    open(std::move(c), heartbeat);
    ASSERT_EQ(m->heartbeat(), heartbeat);
  }
  void open_channel(std::uint16_t channel) {
    m->open_channel(channel);
    feed(peer.channel_open_ok(channel));
    ASSERT_EQ(m->state_of(channel), channel_state::open);
    written();
    log.commands.clear();
    log.trace.clear();
  }
  // Open, with channel 1 open, refusing bodies above `limit` octets.
  void open_with_body_limit(std::uint64_t limit) {
    connection_config c = plain_config();
    c.max_body_size = limit;
    open(std::move(c));
    open_channel(1);
  }
  // The start-ok the client answered `start` with (mechanisms offered by the broker).
  std::string start_ok_for(connection_config c, std::string_view mechanisms,
                           const codec::field_table& caps = {}) {
    make(std::move(c));
    written();
    feed(peer.start(mechanisms, caps));
    return std::string(m->output());
  }
  void expect_closed_with(std::uint16_t code) {
    ASSERT_EQ(log.closes.size(), 1u) << "on_closed must be called exactly once";
    EXPECT_EQ(log.closes[0].reply_code, code) << log.closes[0].reply_text;
  }
  // The connection.close the client queued, checked to carry `code`.
  void expect_close_queued(std::uint16_t code) {
    const client_output out = written();
    const client_frame* f = find<codec::connection_close>(out);
    ASSERT_NE(f, nullptr) << "no connection.close queued";
    EXPECT_EQ(f->channel, 0);
    EXPECT_EQ(f->as<codec::connection_close>()->reply_code, code);
  }

  // With nothing sent since `now`: the timer is due after `idle`, and on_timer queues a
  // heartbeat then and not a millisecond earlier. Leaves `now` at the heartbeat.
  void expect_heartbeat_due_after(std::chrono::milliseconds idle) {
    const time_point t0 = now;
    EXPECT_EQ(m->next_timer(), t0 + idle);
    now = t0 + idle - 1ms;
    m->on_timer(now);
    EXPECT_FALSE(m->has_output());
    now = t0 + idle;
    m->on_timer(now);
    EXPECT_EQ(m->output(), codec::heartbeat_frame);
  }

  // The broker's close-ok completes a channel close the client started; it is the only
  // command the channel delivered since open_channel().
  void finish_channel_close(std::uint16_t channel) {
    feed(peer.channel_close_ok(channel));
    ASSERT_EQ(log.commands.size(), 1u);
    EXPECT_TRUE(log.commands[0].is<codec::channel_close_ok>());
    EXPECT_EQ(m->state_of(channel), channel_state::closed);
  }

  scripted_peer peer;
};

// Decodes the client_properties table of a start-ok frame.
codec::field_table client_properties_of(const client_frame& f) {
  codec::field_table t;
  const auto ok = f.as<codec::connection_start_ok>();
  EXPECT_TRUE(ok.has_value());
  if (ok) {
    EXPECT_EQ(codec::decode_table(ok->client_properties, t), codec::errc::ok);
  }
  return t;
}

std::vector<std::string> claimed_capabilities(const codec::field_table& props) {
  std::vector<std::string> names;
  const codec::field_value* v = props.find("capabilities");
  if (v == nullptr || v->as_table() == nullptr) return names;
  for (const auto& e : *v->as_table()) {
    if (e.value.as_boolean() != nullptr && *e.value.as_boolean()) names.push_back(e.name);
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// Handshake.

TEST_F(connection_machine_test, start_queues_protocol_header_first) {
  make();
  EXPECT_EQ(m->output(), test::amqp_0_9_1_header);
  EXPECT_EQ(m->state(), connection_state::awaiting_start);
  EXPECT_TRUE(log.trace.empty());
}

TEST_F(connection_machine_test, start_ok_carries_plain_response) {
  connection_config c;
  c.authentication = {sasl_plain("user", "pass")};
  const client_output out = parse_client_output(start_ok_for(std::move(c), "PLAIN AMQPLAIN"));
  ASSERT_EQ(out.frames.size(), 1u);
  const auto ok = out.frames[0].as<codec::connection_start_ok>();
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(out.frames[0].channel, 0);
  EXPECT_EQ(ok->mechanism, "PLAIN");
  EXPECT_EQ(ok->response, "\0user\0pass"s);
  EXPECT_EQ(ok->locale, "en_US");
  EXPECT_EQ(m->state(), connection_state::awaiting_tune);
  EXPECT_EQ(m->chosen_mechanism(), "PLAIN");
  EXPECT_EQ(m->mechanisms(), (std::vector<std::string>{"PLAIN", "AMQPLAIN"}));
}

TEST_F(connection_machine_test, amqplain_response_is_table_entries_without_length) {
  connection_config c;
  c.authentication = {sasl_amqplain("user", "pass")};
  const client_output out = parse_client_output(start_ok_for(std::move(c), "AMQPLAIN PLAIN"));
  ASSERT_EQ(out.frames.size(), 1u);
  const auto ok = out.frames[0].as<codec::connection_start_ok>();
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->mechanism, "AMQPLAIN");
  // Entries start with the first name's length octet, not a 4-octet table length.
  ASSERT_FALSE(ok->response.empty());
  EXPECT_EQ(ok->response[0], '\x05');
  codec::field_table t;
  ASSERT_EQ(codec::decode_table(codec::table_view{ok->response}, t), codec::errc::ok);
  ASSERT_EQ(t.size(), 2u);
  ASSERT_NE(t.find("LOGIN"), nullptr);
  ASSERT_NE(t.find("PASSWORD"), nullptr);
  EXPECT_EQ(*t.find("LOGIN")->as_long_string(), "user");
  EXPECT_EQ(*t.find("PASSWORD")->as_long_string(), "pass");
}

TEST_F(connection_machine_test, external_response_is_empty) {
  connection_config c;
  c.authentication = {sasl_external()};
  const client_output out = parse_client_output(start_ok_for(std::move(c), "PLAIN EXTERNAL"));
  ASSERT_EQ(out.frames.size(), 1u);
  const auto ok = out.frames[0].as<codec::connection_start_ok>();
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->mechanism, "EXTERNAL");
  EXPECT_TRUE(ok->response.empty());
}

TEST_F(connection_machine_test, raw_mechanism_sends_given_bytes) {
  connection_config c;
  c.authentication = {sasl_raw("RABBIT-CR-DEMO", "user\xff\x00x"s)};
  const client_output out = parse_client_output(start_ok_for(std::move(c), "PLAIN RABBIT-CR-DEMO"));
  ASSERT_EQ(out.frames.size(), 1u);
  const auto ok = out.frames[0].as<codec::connection_start_ok>();
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->mechanism, "RABBIT-CR-DEMO");
  EXPECT_EQ(ok->response, "user\xff\x00x"s);
}

TEST_F(connection_machine_test, client_preference_order_wins_over_broker_order) {
  connection_config c;
  c.authentication = {sasl_amqplain("u", "p"), sasl_plain("u", "p")};
  const client_output out = parse_client_output(start_ok_for(std::move(c), "PLAIN AMQPLAIN"));
  ASSERT_EQ(out.frames.size(), 1u);
  EXPECT_EQ(out.frames[0].as<codec::connection_start_ok>()->mechanism, "AMQPLAIN");
}

TEST_F(connection_machine_test, falls_back_to_next_mechanism_the_broker_offers) {
  connection_config c;
  c.authentication = {sasl_external(), sasl_plain("u", "p")};
  const client_output out = parse_client_output(start_ok_for(std::move(c), "AMQPLAIN PLAIN"));
  ASSERT_EQ(out.frames.size(), 1u);
  const auto ok = out.frames[0].as<codec::connection_start_ok>();
  EXPECT_EQ(ok->mechanism, "PLAIN");
  EXPECT_EQ(ok->response, "\0u\0p"s);
}

TEST_F(connection_machine_test, no_common_mechanism_fails_naming_both_lists) {
  connection_config c;
  c.authentication = {sasl_external(), sasl_amqplain("u", "p")};
  const client_output out = parse_client_output(start_ok_for(std::move(c), "PLAIN  CR-DEMO"));
  EXPECT_EQ(find<codec::connection_start_ok>(out), nullptr);
  expect_closed_with(403);
  const std::string& text = log.closes[0].reply_text;
  EXPECT_NE(text.find("EXTERNAL, AMQPLAIN"), std::string::npos) << text;
  EXPECT_NE(text.find("PLAIN, CR-DEMO"), std::string::npos) << text;
}

TEST_F(connection_machine_test, claims_only_capabilities_offered_and_handled) {
  const codec::field_table caps = scripted_peer::capabilities(
      {"publisher_confirms", "basic.nack", "direct_reply_to", "made_up_feature"},
      {"consumer_cancel_notify"});
  const client_output out = parse_client_output(start_ok_for(plain_config(), "PLAIN", caps));
  ASSERT_EQ(out.frames.size(), 1u);
  // direct_reply_to: offered, not handled; consumer_cancel_notify: handled, offered as false;
  // connection.blocked: handled, not offered.
  EXPECT_EQ(claimed_capabilities(client_properties_of(out.frames[0])),
            (std::vector<std::string>{"publisher_confirms", "basic.nack"}));
}

TEST_F(connection_machine_test, configured_capabilities_narrow_the_claim) {
  connection_config c = plain_config();
  c.capabilities = {"basic.nack", "direct_reply_to", "connection.blocked"};
  const codec::field_table caps = scripted_peer::capabilities(
      {"publisher_confirms", "basic.nack", "direct_reply_to", "connection.blocked"});
  const client_output out = parse_client_output(start_ok_for(std::move(c), "PLAIN", caps));
  ASSERT_EQ(out.frames.size(), 1u);
  EXPECT_EQ(claimed_capabilities(client_properties_of(out.frames[0])),
            (std::vector<std::string>{"basic.nack", "connection.blocked"}));
}

TEST_F(connection_machine_test, client_properties_merged_over_library_defaults) {
  connection_config c = plain_config();
  c.client_properties.set("product", codec::field_value::long_string("my-app"));
  c.client_properties.set("connection_name", codec::field_value::long_string("orders-1"));
  const client_output out = parse_client_output(
      start_ok_for(std::move(c), "PLAIN", scripted_peer::capabilities({"basic.nack"})));
  ASSERT_EQ(out.frames.size(), 1u);
  const codec::field_table props = client_properties_of(out.frames[0]);
  ASSERT_NE(props.find("product"), nullptr);
  EXPECT_EQ(*props.find("product")->as_long_string(), "my-app");
  ASSERT_NE(props.find("connection_name"), nullptr);
  EXPECT_EQ(*props.find("connection_name")->as_long_string(), "orders-1");
  EXPECT_NE(props.find("version"), nullptr);
  EXPECT_NE(props.find("platform"), nullptr);
  EXPECT_EQ(claimed_capabilities(props), (std::vector<std::string>{"basic.nack"}));
  EXPECT_EQ(props, m->client_properties());
}

// Regression: a "capabilities" entry in the configured client properties was sent unfiltered
// whenever negotiation claimed nothing, so the client claimed what the broker never offered.
TEST_F(connection_machine_test, configured_capabilities_property_never_bypasses_negotiation) {
  connection_config c = plain_config();
  c.client_properties.set(
      "capabilities",
      codec::field_value::table(scripted_peer::capabilities({"direct_reply_to", "basic.nack"})));
  const client_output out = parse_client_output(start_ok_for(std::move(c), "PLAIN"));
  ASSERT_EQ(out.frames.size(), 1u);
  EXPECT_TRUE(claimed_capabilities(client_properties_of(out.frames[0])).empty());
}

TEST_F(connection_machine_test, secure_challenge_answered_by_on_challenge) {
  connection_config c;
  c.authentication = {sasl_raw("RABBIT-CR-DEMO", "user")};
  std::vector<std::string> challenges;
  c.on_challenge = [&](std::string_view ch) {
    challenges.emplace_back(ch);
    return "My password is pass"s;
  };
  make(std::move(c));
  written();
  feed(peer.start("RABBIT-CR-DEMO").secure("please tell me your password"));
  const client_output out = written();
  ASSERT_EQ(out.frames.size(), 2u);
  EXPECT_TRUE(out.frames[0].is<codec::connection_start_ok>());
  const auto ok = out.frames[1].as<codec::connection_secure_ok>();
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->response, "My password is pass");
  EXPECT_EQ(challenges, (std::vector<std::string>{"please tell me your password"}));
  feed(peer.tune(0, 0, 0).open_ok());
  EXPECT_TRUE(m->is_open());
  EXPECT_TRUE(log.closes.empty());
}

TEST_F(connection_machine_test, secure_challenge_without_on_challenge_fails_540) {
  make();
  written();
  feed(peer.start("PLAIN").secure("x"));
  expect_closed_with(540);
  EXPECT_EQ(log.closes[0].class_id, 10);
  EXPECT_EQ(log.closes[0].method_id, 20);
  const client_output out = written();
  EXPECT_EQ(find<codec::connection_secure_ok>(out), nullptr);
  ASSERT_NE(find<codec::connection_close>(out), nullptr);
}

struct limit_case {
  std::uint16_t client_channel_max, server_channel_max, channel_max;
  std::uint32_t client_frame_max, server_frame_max, frame_max;
};

TEST_F(connection_machine_test, tune_takes_smaller_nonzero_limits_and_zero_as_unlimited) {
  const limit_case cases[] = {
      {100, 2047, 100, 65536, 131072, 65536},   // client smaller
      {65535, 2047, 2047, 131072, 8192, 8192},  // broker smaller
      {0, 2047, 2047, 0, 131072, 131072},       // client 0: broker's value
      {100, 0, 100, 65536, 0, 65536},           // broker 0: client's value
      {0, 0, 65535, 0, 0, 131072},              // both unlimited: the defaults
      {1, 1, 1, 4096, 4096, 4096},              // the minimum frame-max is allowed
  };
  for (const limit_case& k : cases) {
    SCOPED_TRACE(std::to_string(k.client_channel_max) + "/" + std::to_string(k.server_channel_max) +
                 " " + std::to_string(k.client_frame_max) + "/" +
                 std::to_string(k.server_frame_max));
    log = {};
    connection_config c = plain_config();
    c.channel_max = k.client_channel_max;
    c.frame_max = k.client_frame_max;
    make(std::move(c));
    written();
    feed(peer.start().tune(k.server_channel_max, k.server_frame_max, 0));
    EXPECT_EQ(m->channel_max(), k.channel_max);
    EXPECT_EQ(m->frame_max(), k.frame_max);
    const client_output out = written();
    const client_frame* f = find<codec::connection_tune_ok>(out);
    ASSERT_NE(f, nullptr);
    const auto ok = f->as<codec::connection_tune_ok>();
    EXPECT_EQ(ok->channel_max, k.channel_max);
    EXPECT_EQ(ok->frame_max, k.frame_max);
    EXPECT_EQ(log.tuned, 1);
    EXPECT_TRUE(log.closes.empty());
  }
}

TEST_F(connection_machine_test, frame_max_below_minimum_is_rejected) {
  make();
  written();
  feed(peer.start().tune(0, 4095, 0));
  expect_closed_with(530);
  const client_output out = written();
  EXPECT_EQ(find<codec::connection_tune_ok>(out), nullptr);
  EXPECT_EQ(find<codec::connection_open>(out), nullptr);
  EXPECT_EQ(log.tuned, 0);
}

TEST_F(connection_machine_test, heartbeat_follows_py_amqp_rule) {
  struct hb_case {
    std::uint16_t client, server, result;
  };
  const hb_case cases[] = {
      {0, 60, 0},    // a client asking for 0 disables heartbeats, whatever the broker says
      {0, 0, 0},     //
      {30, 0, 30},   // the non-zero one
      {30, 60, 30},  // the smaller of two non-zero values
      {60, 30, 30},  //
  };
  for (const hb_case& k : cases) {
    SCOPED_TRACE(std::to_string(k.client) + "/" + std::to_string(k.server));
    connection_config c = plain_config();
    c.heartbeat = k.client;
    make(std::move(c));
    written();
    feed(peer.start().tune(0, 0, k.server));
    EXPECT_EQ(m->heartbeat(), k.result);
    EXPECT_EQ(m->server_heartbeat(), k.server);
    const client_output out = written();
    const client_frame* f = find<codec::connection_tune_ok>(out);
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->as<codec::connection_tune_ok>()->heartbeat, k.result);
  }
}

TEST_F(connection_machine_test, open_carries_virtual_host_and_open_ok_emits_on_open) {
  connection_config c = plain_config();
  c.virtual_host = "orders/eu";
  make(std::move(c));
  written();
  feed(peer.start().tune(0, 0, 0));
  const client_output out = written();
  ASSERT_EQ(out.frames.size(), 3u);  // start-ok, tune-ok, open: in this order
  EXPECT_TRUE(out.frames[0].is<codec::connection_start_ok>());
  EXPECT_TRUE(out.frames[1].is<codec::connection_tune_ok>());
  const auto open = out.frames[2].as<codec::connection_open>();
  ASSERT_TRUE(open.has_value());
  EXPECT_EQ(open->virtual_host, "orders/eu");
  EXPECT_EQ(m->state(), connection_state::awaiting_open_ok);
  EXPECT_EQ(log.opened, 0);
  feed(peer.open_ok());
  EXPECT_EQ(log.opened, 1);
  EXPECT_TRUE(m->is_open());
  EXPECT_EQ(log.trace, (std::vector<std::string>{"tuned", "open"}));
}

TEST_F(connection_machine_test, broker_answering_with_other_protocol_header_closes) {
  make();
  written();
  // A partial header is not judged yet.
  EXPECT_EQ(feed("AMQ"), 0u);
  EXPECT_TRUE(log.closes.empty());
  feed("P\x01\x01\x00\x0a"s);
  expect_closed_with(540);
  EXPECT_TRUE(log.closes[0].by_peer);
  EXPECT_NE(log.closes[0].reply_text.find("1-0-10"), std::string::npos) << log.closes[0].reply_text;
  EXPECT_EQ(m->state(), connection_state::closed);
  EXPECT_FALSE(m->has_output()) << "the broker is closing the socket: nothing to answer";
}

// Regression: any input starting with 'A' was read as a protocol header, so garbage such as
// "ABCDEFGH" was reported as "AMQP 70-71-72" instead of as a framing error.
TEST_F(connection_machine_test, garbage_starting_with_a_is_not_a_protocol_header) {
  make();
  written();
  feed("ABCDEFGHIJKL");
  expect_closed_with(505);
  EXPECT_EQ(log.closes[0].reply_text.find("does not speak"), std::string::npos);
}

TEST_F(connection_machine_test, login_refused_with_connection_close_403) {
  make();
  written();
  feed(peer.start().connection_close(403, "ACCESS_REFUSED - Login was refused", 10, 11));
  expect_closed_with(403);
  EXPECT_EQ(log.closes[0].reply_text, "ACCESS_REFUSED - Login was refused");
  EXPECT_TRUE(log.closes[0].by_peer);
  const client_output out = written();
  ASSERT_EQ(out.frames.size(), 2u);
  EXPECT_TRUE(out.frames[0].is<codec::connection_start_ok>());
  EXPECT_TRUE(out.frames[1].is<codec::connection_close_ok>());
  EXPECT_EQ(m->state(), connection_state::closed);
}

TEST_F(connection_machine_test, transport_closed_while_awaiting_tune_reports_access_refused) {
  make();
  written();
  feed(peer.start("PLAIN"));
  m->transport_closed("end of file");
  expect_closed_with(403);
  EXPECT_NE(log.closes[0].reply_text.find("ACCESS_REFUSED"), std::string::npos);
  EXPECT_NE(log.closes[0].reply_text.find("PLAIN"), std::string::npos);
  m->transport_closed("again");
  EXPECT_EQ(log.closes.size(), 1u);
}

TEST_F(connection_machine_test, transport_closed_when_open_reports_connection_forced) {
  open();
  m->transport_closed("connection reset by peer");
  expect_closed_with(320);
  EXPECT_NE(log.closes[0].reply_text.find("connection reset by peer"), std::string::npos);
  EXPECT_EQ(m->state(), connection_state::closed);
}

// ---------------------------------------------------------------------------------------------
// Heartbeats, with the fake clock.

TEST_F(connection_machine_test, no_timer_without_heartbeat) {
  open();
  EXPECT_EQ(m->next_timer(), time_point::max());
  now += 1h;
  m->on_timer(now);
  EXPECT_FALSE(m->has_output());
  EXPECT_TRUE(log.closes.empty());
}

TEST_F(connection_machine_test, heartbeat_queued_after_half_interval_of_send_idleness) {
  open_with_heartbeat(10);
  const time_point t0 = now;
  expect_heartbeat_due_after(5s);
  // Queued output already counts as traffic: no second heartbeat behind it.
  m->on_timer(now + 1s);
  EXPECT_EQ(m->output(), codec::heartbeat_frame);
  written();
  EXPECT_EQ(m->next_timer(), t0 + 10s);
  EXPECT_TRUE(log.closes.empty());
}

TEST_F(connection_machine_test, nothing_due_while_traffic_flows) {
  open_with_heartbeat(4);
  open_channel(1);
  for (int i = 0; i < 60; ++i) {
    now += 1s;
    feed(peer.heartbeat());
    ASSERT_EQ(m->send(1, codec::basic_ack{static_cast<std::uint64_t>(i + 1), false}),
              codec::errc::ok);
    written();
    EXPECT_EQ(m->next_timer(), now + 2s);
    m->on_timer(now);
    ASSERT_FALSE(m->has_output()) << "at second " << i;
  }
  EXPECT_TRUE(log.closes.empty());
}

TEST_F(connection_machine_test, dead_peer_after_two_intervals_of_silence) {
  open_with_heartbeat(10);
  const time_point t0 = now;
  EXPECT_EQ(m->last_received(), t0);
  // The client keeps sending heartbeats; the broker says nothing.
  for (int s = 5; s < 20; s += 5) {
    now = t0 + std::chrono::seconds(s);
    m->on_timer(now);
    EXPECT_EQ(m->output(), codec::heartbeat_frame);
    written();
  }
  EXPECT_EQ(m->next_timer(), t0 + 20s);
  now = t0 + 19999ms;
  m->on_timer(now);
  EXPECT_TRUE(log.closes.empty());
  now = t0 + 20s;
  m->on_timer(now);
  expect_closed_with(320);
  EXPECT_FALSE(log.closes[0].by_peer);
  expect_close_queued(320);
}

// Regression: after a dead peer was declared, next_timer() stayed in the past, so an I/O loop
// polling with it spun until the close handshake timed out.
TEST_F(connection_machine_test, no_timer_after_connection_failed) {
  open_with_heartbeat(10);
  now += 20s;
  m->on_timer(now);
  expect_closed_with(320);
  EXPECT_EQ(m->next_timer(), time_point::max());
}

// Regression: half the interval was computed in whole seconds, so a 1 s heartbeat was due at
// once, always: a heartbeat frame on every timer call and a busy I/O loop.
TEST_F(connection_machine_test, one_second_heartbeat_waits_half_a_second) {
  open_with_heartbeat(1);
  expect_heartbeat_due_after(500ms);
}

TEST_F(connection_machine_test, next_timer_is_earlier_of_send_and_receive_deadlines) {
  open_with_heartbeat(10);
  const time_point t0 = now;
  now = t0 + 8s;
  m->send_heartbeat();
  written();  // sent at t0 + 8 s: send deadline t0 + 13 s, receive deadline t0 + 20 s
  EXPECT_EQ(m->next_timer(), t0 + 13s);
  now = t0 + 18s;
  m->send_heartbeat();
  written();  // send deadline t0 + 23 s: the receive deadline comes first
  EXPECT_EQ(m->next_timer(), t0 + 20s);
  now = t0 + 19s;
  feed(peer.heartbeat());  // receive deadline t0 + 39 s
  EXPECT_EQ(m->next_timer(), t0 + 23s);
}

TEST_F(connection_machine_test, send_heartbeat_if_idle_never_judges_the_peer) {
  open_with_heartbeat(10);
  now += 1h;
  m->send_heartbeat_if_idle(now);
  EXPECT_EQ(m->output(), codec::heartbeat_frame);
  EXPECT_TRUE(log.closes.empty());
}

// ---------------------------------------------------------------------------------------------
// Close handshakes.

TEST_F(connection_machine_test, client_close_discards_frames_until_close_ok) {
  open();
  open_channel(1);
  m->close(200, "bye");
  {
    const client_output out = written();
    ASSERT_EQ(out.frames.size(), 1u);
    const auto close = out.frames[0].as<codec::connection_close>();
    ASSERT_TRUE(close.has_value());
    EXPECT_EQ(close->reply_code, 200);
    EXPECT_EQ(close->reply_text, "bye");
  }
  EXPECT_EQ(m->state(), connection_state::closing);
  feed(peer.deliver(1, 1, "late", 1)
           .channel_close(1, 406, "PRECONDITION_FAILED")
           .method(0, codec::connection_blocked{"low on memory"})
           .heartbeat());
  EXPECT_TRUE(log.trace.empty()) << log.trace.front();
  EXPECT_FALSE(m->has_output()) << "nothing is answered while closing";
  feed(peer.connection_close_ok());
  expect_closed_with(200);
  EXPECT_EQ(log.closes[0].reply_text, "bye");
  EXPECT_FALSE(log.closes[0].by_peer);
  EXPECT_EQ(m->state(), connection_state::closed);
}

TEST_F(connection_machine_test, broker_close_queues_close_ok_and_reports_broker_reason) {
  open();
  open_channel(1);
  feed(peer.connection_close(504, "CHANNEL_ERROR - expected 'channel.open'", 60, 40));
  expect_closed_with(504);
  const close_reason& why = log.closes[0];
  EXPECT_EQ(why.reply_text, "CHANNEL_ERROR - expected 'channel.open'");
  EXPECT_EQ(why.class_id, 60);
  EXPECT_EQ(why.method_id, 40);
  EXPECT_TRUE(why.by_peer);
  const client_output out = written();
  ASSERT_EQ(out.frames.size(), 1u);
  EXPECT_TRUE(out.frames[0].is<codec::connection_close_ok>());
  EXPECT_EQ(m->state(), connection_state::closed);
  // Whatever follows is ignored, and the transport's end does not report a second close.
  const std::string more = peer.deliver(1, 2, "x").take();
  EXPECT_EQ(feed(more), more.size());
  m->transport_closed("eof");
  EXPECT_EQ(log.closes.size(), 1u);
  EXPECT_TRUE(log.commands.empty());
}

TEST_F(connection_machine_test, simultaneous_close_completes_on_the_broker_close) {
  open();
  m->close(200, "bye");
  written();
  feed(peer.connection_close(320, "CONNECTION_FORCED - shutdown"));
  expect_closed_with(320);
  EXPECT_TRUE(log.closes[0].by_peer);
  EXPECT_TRUE(written().frames[0].is<codec::connection_close_ok>());
  EXPECT_EQ(m->state(), connection_state::closed);
}

// ---------------------------------------------------------------------------------------------
// Channels.

TEST_F(connection_machine_test, channel_open_then_open_ok_opens) {
  open();
  m->open_channel(3);
  const client_output out = written();
  ASSERT_EQ(out.frames.size(), 1u);
  EXPECT_EQ(out.frames[0].channel, 3);
  EXPECT_TRUE(out.frames[0].is<codec::channel_open>());
  EXPECT_EQ(m->state_of(3), channel_state::opening);
  feed(peer.channel_open_ok(3));
  EXPECT_EQ(m->state_of(3), channel_state::open);
  ASSERT_EQ(log.commands.size(), 1u);
  EXPECT_EQ(log.commands[0].channel, 3);
  EXPECT_TRUE(log.commands[0].is<codec::channel_open_ok>());
}

TEST_F(connection_machine_test, method_before_channel_open_ok_is_505) {
  open();
  m->open_channel(1);
  written();
  feed(peer.deliver(1, 1, "x"));
  expect_closed_with(505);
}

TEST_F(connection_machine_test, broker_channel_close_answers_and_channel_can_reopen) {
  open();
  open_channel(1);
  feed(peer.channel_close(1, 404, "NOT_FOUND - no queue 'q'", 50, 10));
  {
    const client_output out = written();
    ASSERT_EQ(out.frames.size(), 1u);
    EXPECT_EQ(out.frames[0].channel, 1);
    EXPECT_TRUE(out.frames[0].is<codec::channel_close_ok>());
  }
  ASSERT_EQ(log.channel_closes.size(), 1u);
  EXPECT_EQ(log.channel_closes[0].first, 1);
  const close_reason& why = log.channel_closes[0].second;
  EXPECT_EQ(why.reply_code, 404);
  EXPECT_EQ(why.reply_text, "NOT_FOUND - no queue 'q'");
  EXPECT_EQ(why.class_id, 50);
  EXPECT_EQ(why.method_id, 10);
  EXPECT_TRUE(why.by_peer);
  EXPECT_EQ(m->state_of(1), channel_state::closed);
  EXPECT_TRUE(log.closes.empty());
  EXPECT_TRUE(m->is_open());

  open_channel(1);
  feed(peer.deliver(1, 7, "again"));
  ASSERT_EQ(log.commands.size(), 1u);
  EXPECT_EQ(log.commands[0].body, "again");
}

TEST_F(connection_machine_test, client_close_channel_discards_frames_until_close_ok) {
  open();
  open_channel(1);
  m->close_channel(1, 200, "done");
  {
    const client_output out = written();
    ASSERT_EQ(out.frames.size(), 1u);
    const auto close = out.frames[0].as<codec::channel_close>();
    ASSERT_TRUE(close.has_value());
    EXPECT_EQ(out.frames[0].channel, 1);
    EXPECT_EQ(close->reply_code, 200);
    EXPECT_EQ(close->reply_text, "done");
  }
  EXPECT_EQ(m->state_of(1), channel_state::closing);
  feed(peer.method(1, codec::basic_ack{1, false}).method(1, codec::channel_flow{false}));
  EXPECT_TRUE(log.commands.empty());
  EXPECT_FALSE(m->has_output()) << "no flow-ok for a discarded channel.flow";
  finish_channel_close(1);
  EXPECT_TRUE(log.closes.empty());
}

// Regression: a content method arriving after the client's channel.close was dropped but its
// header frame was not, which then failed the whole connection with 505.
TEST_F(connection_machine_test, delivery_after_client_close_channel_is_discarded_whole) {
  open();
  open_channel(1);
  m->close_channel(1);
  written();
  feed(peer.deliver(1, 1, "in flight", 3).deliver(1, 2, "", 0));
  EXPECT_TRUE(log.closes.empty()) << log.closes.front().reply_text;
  EXPECT_TRUE(log.commands.empty());
  finish_channel_close(1);
}

// Regression: content whose method arrived before the client's channel.close was still
// delivered after it, on a channel the API layer had already given up.
TEST_F(connection_machine_test, content_completing_after_client_close_channel_is_discarded) {
  open();
  open_channel(1);
  feed(peer.deliver_method(1, 1).header(1, 6));
  m->close_channel(1);
  written();
  feed(peer.body(1, "abc").body(1, "def"));
  EXPECT_TRUE(log.commands.empty());
  EXPECT_TRUE(log.closes.empty());
  finish_channel_close(1);
}

// Regression: when the client's channel.close crossed the broker's, the client answered the
// broker's close and took the channel for closed, so the broker's close-ok to the client's close,
// which RabbitMQ sends (3.10.8, tried on a real broker: a publish to a missing exchange followed
// at once by channel.close gets channel.close 404, then channel.close-ok), failed the whole
// connection with 504. The channel now stays closing until that close-ok.
TEST_F(connection_machine_test, crossing_channel_closes_wait_for_the_brokers_close_ok) {
  open();
  open_channel(1);
  m->close_channel(1, 200, "bye");
  written();
  feed(peer.channel_close(1, 404, "NOT_FOUND - no exchange 'x'", 60, 40));
  {
    const client_output out = written();
    ASSERT_EQ(out.frames.size(), 1u);
    EXPECT_EQ(out.frames[0].channel, 1);
    EXPECT_TRUE(out.frames[0].is<codec::channel_close_ok>());
  }
  EXPECT_EQ(m->state_of(1), channel_state::closing);
  EXPECT_TRUE(log.commands.empty());
  finish_channel_close(1);
  EXPECT_TRUE(log.closes.empty()) << log.closes.front().reply_text;
  EXPECT_TRUE(m->is_open());
}

// Regression (found by connection_machine_fuzz): a channel.close-ok on an open channel, which
// the client never closed, reached the channel's owner as a command, where the channel core
// dropped it silently; it is a protocol violation, like an unexpected channel.open-ok.
TEST_F(connection_machine_test, channel_close_ok_on_an_open_channel_is_503) {
  open();
  open_channel(1);
  feed(peer.channel_close_ok(1));
  expect_closed_with(503);
  expect_close_queued(503);
  EXPECT_TRUE(log.commands.empty());
}

// Regression (found by connection_machine_fuzz): a channel.flow before channel.open-ok was
// answered with flow-ok and handed to the face on a channel still opening, where any other method
// is 505.
TEST_F(connection_machine_test, channel_flow_before_channel_open_ok_is_505) {
  open();
  m->open_channel(1);
  written();
  codec::channel_flow f;
  f.active = false;
  feed(peer.method(1, f));
  expect_closed_with(505);
  EXPECT_TRUE(log.commands.empty());
  const client_output out = written();
  EXPECT_EQ(find<codec::channel_flow_ok>(out), nullptr) << "no flow-ok for a channel not open";
}

TEST_F(connection_machine_test, frames_on_never_opened_channel_are_504) {
  open();
  open_channel(1);
  feed(peer.deliver(2, 1, "x"));
  expect_closed_with(504);
  expect_close_queued(504);
  EXPECT_TRUE(log.commands.empty());
}

TEST_F(connection_machine_test, interleaved_channels_assemble_each_content) {
  open();
  open_channel(1);
  open_channel(2);
  codec::basic_properties one, two;
  one.set_content_type("text/one");
  two.set_content_type("text/two");
  feed(peer.deliver_method(1, 11, "rk1")
           .header(1, 10, one)
           .body(1, "01234")
           .deliver_method(2, 21, "rk2")
           .header(2, 3, two)
           .body(2, "abc")
           .method(2, codec::basic_ack{5, true})
           .body(1, "56789"));
  EXPECT_TRUE(log.closes.empty());
  ASSERT_EQ(log.commands.size(), 3u);
  const command& c2 = log.commands[0];
  EXPECT_EQ(c2.channel, 2);
  EXPECT_EQ(c2.body, "abc");
  EXPECT_EQ(c2.header.properties.content_type, "text/two");
  codec::basic_deliver d;
  ASSERT_EQ(c2.decode(d), codec::errc::ok);
  EXPECT_EQ(d.delivery_tag, 21u);
  EXPECT_EQ(d.routing_key, "rk2");
  EXPECT_EQ(log.commands[1].channel, 2);
  EXPECT_TRUE(log.commands[1].is<codec::basic_ack>());
  const command& c1 = log.commands[2];
  EXPECT_EQ(c1.channel, 1);
  EXPECT_EQ(c1.body, "0123456789");
  EXPECT_EQ(c1.header.properties.content_type, "text/one");
  ASSERT_EQ(c1.decode(d), codec::errc::ok);
  EXPECT_EQ(d.delivery_tag, 11u);
  EXPECT_EQ(d.routing_key, "rk1");
}

TEST_F(connection_machine_test, body_over_many_frames_assembles_and_outlives_fed_buffers) {
  open();
  open_channel(1);
  std::string body(10000, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7 + i / 251);
  codec::basic_properties props;
  props.set_content_type("application/octet-stream");
  props.set_message_id("m-1");
  // Each frame in its own read, so method, header and body live in different buffers.
  feed(peer.deliver_method(1, 42, "orders"));
  feed(peer.header(1, body.size(), props));
  for (std::string_view part : scripted_peer::split(body, 25)) feed(peer.body(1, part));
  ASSERT_EQ(log.commands.size(), 1u);
  last_buffer.reset();
  tail.clear();
  tail.shrink_to_fit();

  const command& c = log.commands[0];
  EXPECT_TRUE(c.has_content);
  EXPECT_EQ(c.header.body_size, body.size());
  EXPECT_EQ(c.body, body);
  // Every view is held by the command's own references (and nothing else holds them now).
  for (const rx_ref& k : c.keep) EXPECT_TRUE(k.unique());
  EXPECT_TRUE(points_into(c.args, c.keep[0]));
  EXPECT_TRUE(points_into(c.header.properties.content_type, c.keep[1]));
  EXPECT_TRUE(points_into(c.body, c.keep[2]));
  EXPECT_EQ(c.header.properties.content_type, "application/octet-stream");
  EXPECT_EQ(c.header.properties.message_id, "m-1");
  codec::basic_deliver d;
  ASSERT_EQ(c.decode(d), codec::errc::ok);
  EXPECT_EQ(d.routing_key, "orders");
  EXPECT_EQ(d.delivery_tag, 42u);
}

TEST_F(connection_machine_test, single_frame_body_is_a_view_into_the_fed_buffer) {
  open();
  open_channel(1);
  feed(peer.deliver(1, 1, "zero copy please", 1));
  ASSERT_EQ(log.commands.size(), 1u);
  const command& c = log.commands[0];
  EXPECT_EQ(c.body, "zero copy please");
  EXPECT_TRUE(points_into(c.body, last_buffer));
  // One reference for the three parts that share the buffer.
  EXPECT_EQ(c.keep[0].get(), last_buffer.get());
  EXPECT_EQ(c.keep[1].get(), nullptr);
  EXPECT_EQ(c.keep[2].get(), nullptr);
}

// A delivery read whole takes the one-pass path; fed an octet at a time, the frame-by-frame
// one. Both must hand out the same command, each buffer referenced once.
TEST_F(connection_machine_test, delivery_read_whole_or_in_pieces_gives_the_same_command) {
  open();
  open_channel(1);
  codec::basic_properties props;
  props.set_content_type("text/plain");
  props.set_delivery_mode(2);
  const std::string bytes = peer.deliver(1, 7, "same either way", 1, props).take();
  feed(bytes);
  for (char octet : bytes) feed(std::string_view(&octet, 1));
  ASSERT_EQ(log.commands.size(), 2u);
  const command& whole = log.commands[0];
  const command& pieces = log.commands[1];
  EXPECT_EQ(whole.channel, pieces.channel);
  EXPECT_EQ(whole.id(), codec::basic_deliver::id);
  EXPECT_EQ(pieces.id(), codec::basic_deliver::id);
  EXPECT_EQ(whole.args, pieces.args);
  EXPECT_TRUE(whole.has_content && pieces.has_content);
  EXPECT_EQ(whole.header, pieces.header);
  EXPECT_EQ(whole.body, "same either way");
  EXPECT_EQ(pieces.body, "same either way");
  codec::basic_deliver d;
  ASSERT_EQ(whole.decode(d), codec::errc::ok);
  EXPECT_EQ(d.delivery_tag, 7u);
  EXPECT_EQ(whole.keep[1].get(), nullptr);   // one buffer: one reference
  EXPECT_NE(pieces.keep[1].get(), nullptr);  // method, header and body in separate feeds
  EXPECT_NE(pieces.keep[2].get(), nullptr);
  EXPECT_TRUE(log.closes.empty());
}

TEST_F(connection_machine_test, empty_body_is_delivered_on_the_header) {
  open();
  open_channel(1);
  feed(peer.deliver(1, 1, "", 0));
  ASSERT_EQ(log.commands.size(), 1u);
  EXPECT_TRUE(log.commands[0].has_content);
  EXPECT_EQ(log.commands[0].header.body_size, 0u);
  EXPECT_TRUE(log.commands[0].body.empty());
  // The channel is back to expecting methods.
  feed(peer.deliver(1, 2, "next"));
  ASSERT_EQ(log.commands.size(), 2u);
  EXPECT_EQ(log.commands[1].body, "next");
  EXPECT_TRUE(log.closes.empty());
}

TEST_F(connection_machine_test, header_class_mismatch_is_502) {
  open();
  open_channel(1);
  feed(peer.deliver_method(1, 1).header(1, 3, {}, 50));
  expect_closed_with(502);
  EXPECT_TRUE(log.commands.empty());
}

TEST_F(connection_machine_test, body_longer_than_body_size_fails) {
  open();
  open_channel(1);
  feed(peer.deliver_method(1, 1).header(1, 5).body(1, "123").body(1, "456"));
  expect_closed_with(502);
  EXPECT_TRUE(log.commands.empty());
}

// Regression: body-size was trusted, so a header announcing 2^64 - 1 octets made the machine
// allocate that much at the first body frame (overflowing the allocation size: a heap
// overflow) instead of refusing it.
TEST_F(connection_machine_test, body_size_above_limit_is_refused_at_the_header) {
  open_with_body_limit(1000);
  feed(peer.deliver(1, 1, std::string(1000, 'x'), 3));
  ASSERT_EQ(log.commands.size(), 1u);
  feed(peer.deliver_method(1, 2).header(1, ~std::uint64_t{0}).body(1, "0123456789abcdef"));
  expect_closed_with(506);
  EXPECT_EQ(log.commands.size(), 1u);
}

// The same limit when the whole oversized delivery is read at once (the one-pass path).
TEST_F(connection_machine_test, body_above_limit_read_whole_is_refused) {
  open_with_body_limit(1000);
  feed(peer.deliver(1, 1, std::string(1001, 'x'), 1));
  expect_closed_with(506);
  EXPECT_TRUE(log.commands.empty());
}

TEST_F(connection_machine_test, method_while_content_expected_is_505) {
  open();
  open_channel(1);
  feed(peer.deliver_method(1, 1).header(1, 5).deliver_method(1, 2));
  expect_closed_with(505);
  expect_close_queued(505);
}

TEST_F(connection_machine_test, method_instead_of_content_header_is_505) {
  open();
  open_channel(1);
  feed(peer.deliver_method(1, 1).method(1, codec::basic_ack{1, false}));
  expect_closed_with(505);
}

TEST_F(connection_machine_test, channel_flow_answered_with_flow_ok) {
  open();
  open_channel(1);
  feed(peer.method(1, codec::channel_flow{false}));
  const client_output out = written();
  ASSERT_EQ(out.frames.size(), 1u);
  EXPECT_EQ(out.frames[0].channel, 1);
  const auto ok = out.frames[0].as<codec::channel_flow_ok>();
  ASSERT_TRUE(ok.has_value());
  EXPECT_FALSE(ok->active);
  ASSERT_EQ(log.commands.size(), 1u);
  EXPECT_TRUE(log.commands[0].is<codec::channel_flow>());
  feed(peer.method(1, codec::channel_flow{true}));
  EXPECT_TRUE(written().frames.at(0).as<codec::channel_flow_ok>()->active);
}

TEST_F(connection_machine_test, blocked_and_unblocked_reach_the_handler) {
  open();
  feed(peer.method(0, codec::connection_blocked{"low on memory"}));
  EXPECT_TRUE(m->blocked());
  EXPECT_EQ(log.blocked, (std::vector<std::string>{"low on memory"}));
  feed(peer.method(0, codec::connection_unblocked{}));
  EXPECT_FALSE(m->blocked());
  EXPECT_EQ(log.unblocked, 1);
}

// Regression: a method that failed to encode left its reserved frame header in the output,
// corrupting the stream for every later frame.
TEST_F(connection_machine_test, send_of_unencodable_method_queues_nothing) {
  open();
  open_channel(1);
  codec::queue_declare q;
  const std::string long_name(256, 'q');
  q.queue = long_name;
  EXPECT_EQ(m->send(1, q), codec::errc::string_too_long);
  EXPECT_FALSE(m->has_output());
  ASSERT_EQ(m->send(1, codec::basic_ack{1, false}), codec::errc::ok);
  const client_output out = written();
  ASSERT_EQ(out.frames.size(), 1u);
  EXPECT_TRUE(out.frames[0].is<codec::basic_ack>());
}

// ---------------------------------------------------------------------------------------------
// Hostile peer.

TEST_F(connection_machine_test, garbage_bytes_close_with_typed_error) {
  make();
  written();
  const std::string http = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
  EXPECT_EQ(feed(http), http.size());
  expect_closed_with(505);
  expect_close_queued(505);
  // Later input is swallowed without any further event.
  EXPECT_EQ(feed(http), http.size());
  EXPECT_EQ(log.closes.size(), 1u);
}

TEST_F(connection_machine_test, bad_frame_end_is_501) {
  open();
  std::string frame = peer.heartbeat().take();
  frame.back() = '\x00';
  feed(frame);
  expect_closed_with(501);
}

TEST_F(connection_machine_test, random_garbage_never_crashes_or_hangs) {
  std::mt19937 rng(20240611);
  for (int round = 0; round < 300; ++round) {
    SCOPED_TRACE(round);
    log = {};
    tail.clear();
    open();
    open_channel(1);
    std::string junk(1 + rng() % 300, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    const std::size_t used = feed(junk);
    EXPECT_LE(used, junk.size());
    ASSERT_LE(log.closes.size(), 1u);
    if (log.closes.empty()) {
      // Only a frame still waiting for its end may be pending.
      EXPECT_FALSE(tail.empty());
    } else {
      const std::uint16_t code = log.closes[0].reply_code;
      EXPECT_TRUE(code == 501 || code == 502 || code == 503 || code == 504 || code == 505 ||
                  code == 540)
          << code << " " << log.closes[0].reply_text;
    }
  }
}

TEST_F(connection_machine_test, oversized_frame_rejected_from_header_alone) {
  make();
  written();
  // 7 header octets claiming a 2 GiB payload; not one payload octet follows.
  EXPECT_EQ(feed("\x01\x00\x00\x7f\xff\xff\xff"s), 7u);
  expect_closed_with(501);
}

TEST_F(connection_machine_test, frame_above_negotiated_frame_max_rejected_from_header) {
  make();
  feed(peer.start().tune(0, 4096, 0).open_ok());
  ASSERT_TRUE(m->is_open());
  // Payload 4089 = frame-max - 8 + 1.
  feed("\x03\x00\x01\x00\x00\x0f\xf9"s);
  expect_closed_with(501);
}

TEST_F(connection_machine_test, truncated_frame_waits_for_more_bytes) {
  make();
  written();
  feed(peer.start());
  written();
  const std::string tune = peer.tune(0, 0, 0).take();
  for (std::size_t cut : {std::size_t{1}, std::size_t{7}, tune.size() - 1}) {
    SCOPED_TRACE(cut);
    tail.clear();
    EXPECT_EQ(feed(tune.substr(0, cut)), 0u);
    EXPECT_FALSE(m->has_output());
    EXPECT_EQ(m->state(), connection_state::awaiting_tune);
    EXPECT_TRUE(log.closes.empty());
  }
  feed(tune.substr(tune.size() - 1));
  EXPECT_TRUE(tail.empty());
  EXPECT_NE(find<codec::connection_tune_ok>(written()), nullptr);
}

TEST_F(connection_machine_test, body_frame_on_channel_0_is_505) {
  open();
  feed(peer.body(0, "x"));
  expect_closed_with(505);
}

TEST_F(connection_machine_test, heartbeat_on_a_channel_is_501) {
  open();
  open_channel(1);
  feed(peer.frame(codec::frame_heartbeat, 1, ""));
  expect_closed_with(501);
}

TEST_F(connection_machine_test, unknown_method_is_540) {
  open();
  feed(peer.frame(codec::frame_method, 0, "\x00\x0a\x00\x63"s));
  expect_closed_with(540);

  log = {};
  open();
  open_channel(1);
  feed(peer.frame(codec::frame_method, 1, "\x00\x3c\x03\xe7"s));
  expect_closed_with(540);
  EXPECT_EQ(log.closes[0].class_id, 60);
  EXPECT_EQ(log.closes[0].method_id, 999);
}

// A conversation touching every kind of frame the machine handles.
std::string conversation() {
  scripted_peer p;
  codec::basic_properties props;
  props.set_content_type("text/plain");
  std::string big(3000, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i % 253);
  p.start("AMQPLAIN PLAIN", scripted_peer::capabilities({"basic.nack"}))
      .tune(0, 4096, 60)
      .open_ok()
      .channel_open_ok(1)
      .channel_open_ok(2)
      .deliver_method(1, 1)
      .header(1, big.size(), props)
      .body(1, std::string_view(big).substr(0, 1000))
      .deliver(2, 1, "two", 1)
      .heartbeat()
      .body(1, std::string_view(big).substr(1000))
      .method(1, codec::channel_flow{false})
      .deliver(1, 2, "", 0)
      .method(0, codec::connection_blocked{"low on memory"})
      .method(0, codec::connection_unblocked{})
      .channel_close(2, 406, "PRECONDITION_FAILED - unknown delivery tag 9", 60, 80)
      .connection_close(320, "CONNECTION_FORCED - broker shutdown");
  return p.take();
}

struct run_result {
  std::vector<std::string> trace;
  std::string output;
};

// Feeds `stream` in pieces that end at each of `cuts` (increasing offsets), like reads of
// those sizes would deliver it.
run_result run_split(const std::string& stream, const std::vector<std::size_t>& cuts) {
  harness h;
  h.log.after_open = [&h] {
    h.m->open_channel(1);
    h.m->open_channel(2);
  };
  h.make();
  std::size_t at = 0;
  for (std::size_t cut : cuts) {
    h.feed(std::string_view(stream).substr(at, cut - at));
    at = cut;
  }
  h.feed(std::string_view(stream).substr(at));
  EXPECT_TRUE(h.tail.empty());
  return {h.log.trace, std::string(h.m->output())};
}

TEST(connection_machine_split_test, every_byte_split_gives_identical_events) {
  const std::string stream = conversation();
  const run_result whole = run_split(stream, {});
  // The script must reach its end: a failure would make every run trivially equal.
  ASSERT_FALSE(whole.trace.empty());
  EXPECT_EQ(whole.trace.back(), "closed 320 'CONNECTION_FORCED - broker shutdown' 0.0 by peer");
  EXPECT_EQ(whole.trace.size(), 12u);

  std::vector<std::size_t> every_byte;
  for (std::size_t i = 1; i < stream.size(); ++i) every_byte.push_back(i);
  const run_result bytewise = run_split(stream, every_byte);
  EXPECT_EQ(bytewise.trace, whole.trace);
  EXPECT_EQ(bytewise.output, whole.output);

  for (std::size_t i = 1; i < stream.size(); ++i) {
    const run_result two = run_split(stream, {i});
    ASSERT_EQ(two.trace, whole.trace) << "split at " << i;
    ASSERT_EQ(two.output, whole.output) << "split at " << i;
  }
}

// ---------------------------------------------------------------------------------------------
// Metrics (set_metrics).

TEST_F(connection_machine_test, metrics_count_frames_received_whole_or_in_pieces_and_frames_sent) {
  metrics::connection_metrics counts(1, "");
  open();
  open_channel(1);
  m->set_metrics(&counts);
  // A delivery read whole (the one-pass path) and one read octet by octet: 3 frames each; a
  // heartbeat is a frame too.
  const std::string bytes = peer.deliver(1, 7, "body", 1).take();
  feed(bytes);
  for (char octet : bytes) feed(std::string_view(&octet, 1));
  feed(peer.heartbeat());
  ASSERT_EQ(log.commands.size(), 2u);
  EXPECT_EQ(counts.snapshot().transport.frames_received, 7u);
  // A method, a publish of a 300 000 octet body (3 body frames under frame_max 131072) and a
  // heartbeat.
  ASSERT_EQ(m->send(1, codec::basic_ack{7, false}), codec::errc::ok);
  codec::basic_publish p;
  p.routing_key = "rk";
  ASSERT_EQ(m->send_publish(1, p, {}, std::string(300000, 'x')), codec::errc::ok);
  m->send_heartbeat();
  const client_output out = written();
  EXPECT_EQ(out.frames.size(), 7u);
  EXPECT_EQ(counts.snapshot().transport.frames_sent, out.frames.size());
}

TEST_F(connection_machine_test, metrics_count_each_silent_heartbeat_interval_once) {
  metrics::connection_metrics counts(1, "");
  open_with_heartbeat(10);
  m->set_metrics(&counts);
  const time_point t0 = now;
  for (auto t : {5s, 9s, 10s, 12s, 15s, 19s}) {
    now = t0 + t;
    m->on_timer(now);
    written();
  }
  EXPECT_EQ(counts.snapshot().heartbeats_missed, 1u) << "one whole interval of silence, 10 s";
  feed(peer.heartbeat());  // life: the count starts again from here
  const time_point t1 = now;
  now = t1 + 9s;
  m->on_timer(now);
  EXPECT_EQ(counts.snapshot().heartbeats_missed, 1u);
  now = t1 + 20s;  // two intervals: the machine gives up on the peer
  m->on_timer(now);
  EXPECT_EQ(counts.snapshot().heartbeats_missed, 3u);
  expect_closed_with(320);
}

TEST_F(connection_machine_test, metrics_time_a_block_with_the_feeds_clock) {
  metrics::connection_metrics counts(1, "");
  open();
  m->set_metrics(&counts);
  feed(peer.method(0, codec::connection_blocked{"low on memory"}));
  EXPECT_TRUE(counts.snapshot(now).blocked);
  EXPECT_EQ(counts.snapshot(now + 2s).blocked_time, 2s) << "the current block counts";
  now += 3s;
  feed(peer.method(0, codec::connection_unblocked{}));
  const auto s = counts.snapshot(now + 1h);
  EXPECT_FALSE(s.blocked);
  EXPECT_EQ(s.blocked_time, 3s);
}

}  // namespace
}  // namespace warren::protocol
