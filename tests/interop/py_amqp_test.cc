// Interoperability with py-amqp 5.1.1 (Debian's python3-amqp) through the real broker: warren's
// blocking API on one end, tests/interop/py_amqp_peer.py on the other.
//
// Values are compared as canonical strings so that a failure shows every field at once:
//   py-amqp's view:  "<Python type>:<value>", e.g. "int:254", "bytes:00ff", "list[int:1,None]"
//   warren's view:   "<type letter>:<value>", e.g. "I:42", "x:00ff", "A[I:1,V]"
// Numbers are exact (integers as decimal text, floats as the shortest text that reads back to the
// same bits), bytes in hex, containers in order.
#include <gtest/gtest.h>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "codec/content.h"
#include "codec/field_table.h"
#include "engine/client/connection.h"
#include "tests/broker_env.h"
#include "tests/interop/py_support.h"

namespace warren {
namespace {

using codec::field_table;
using codec::field_value;
using namespace std::string_literals;

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 0xF];
  }
  return out;
}

template <class F>
std::string shortest(F v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

// py-amqp's view of a value, from the peer's tagged JSON (see py_amqp_peer.py).
std::string py(const test::json& tagged) {
  const std::string& type = tagged.at("py").text;
  const test::json& v = tagged.at("v");
  if (type == "bool") return v.boolean ? "bool:true" : "bool:false";
  if (type == "NoneType") return "None";
  if (type == "float") return "float:" + shortest(std::strtod(v.text.c_str(), nullptr));
  if (type == "bytes" || type == "bytearray" || type == "memoryview") {
    return type + ":" + hex(test::base64_decode(v.text));
  }
  if (type == "list" || type == "tuple") {
    std::string out = type + "[";
    for (std::size_t i = 0; i < v.items.size(); ++i) out += (i ? "," : "") + py(v.items[i]);
    return out + "]";
  }
  if (type == "dict") {
    std::string out = "dict{";
    for (std::size_t i = 0; i < v.members.size(); ++i) {
      out += (i ? "," : "") + v.members[i].first + "=" + py(v.members[i].second);
    }
    return out + "}";
  }
  // int, Decimal, str, datetime (epoch seconds), and anything unexpected (its repr).
  return type + ":" + v.text;
}

// "name=<py view>" for each member of a tagged dict's value, in order.
std::vector<std::string> py_members(const test::json& members, std::string_view skip = "") {
  std::vector<std::string> out;
  for (const auto& [name, v] : members.members) {
    if (name != skip) out.push_back(name + "=" + py(v));
  }
  return out;
}

// warren's view of a value: its type letter and value.
std::string wire(const field_value& v) {
  const std::string letter(1, v.type());
  if (v.is_void()) return letter;
  if (const bool* b = v.as_boolean()) return letter + (*b ? ":true" : ":false");
  if (std::optional<std::int64_t> i = v.as_integer()) return letter + ":" + std::to_string(*i);
  if (const float* f = v.as_f32()) return letter + ":" + shortest(*f);
  if (const double* d = v.as_f64()) return letter + ":" + shortest(*d);
  if (const codec::decimal* d = v.as_decimal()) {
    return letter + ":" + std::to_string(d->scale) + "," + std::to_string(d->value);
  }
  if (const std::string* s = v.as_long_string()) return letter + ":" + *s;
  if (const std::string* x = v.as_bytes()) return letter + ":" + hex(*x);
  if (const std::uint64_t* t = v.as_timestamp()) return letter + ":" + std::to_string(*t);
  if (const codec::field_array* a = v.as_array()) {
    std::string out = letter + "[";
    for (std::size_t i = 0; i < a->size(); ++i) out += (i ? "," : "") + wire((*a)[i]);
    return out + "]";
  }
  const field_table& t = *v.as_table();
  std::string out = letter + "{";
  bool first = true;
  for (const auto& e : t) {
    out += (first ? "" : ",") + e.name + "=" + wire(e.value);
    first = false;
  }
  return out + "}";
}

std::vector<std::string> wire_members(const field_table& t) {
  std::vector<std::string> out;
  for (const auto& e : t) out.push_back(e.name + "=" + wire(e.value));
  return out;
}

// 3 × all 256 octet values: what the peer publishes.
std::string py_body() {
  std::string b;
  for (int i = 0; i < 3; ++i) {
    for (int c = 0; c < 256; ++c) b += static_cast<char>(c);
  }
  return b;
}

class py_amqp_interop : public test::broker_test {
 protected:
  void SetUp() override {
    test::broker_test::SetUp();
    connection_options o;
    o.host = std::string(test::broker_host) + ":" + std::to_string(test::amqp_port);
    o.userid = test::guest_user;
    o.password = test::guest_password;
    conn_ = std::make_unique<connection>(std::move(o));
    conn_->connect();
    ch_ = &conn_->channel();
  }
  // Queues are deleted on a fresh connection: the test's own may be broken, and deleting a
  // queue it consumes from would raise consumer_cancelled there.
  void TearDown() override {
    if (queues_.empty()) return;
    try {
      connection c(conn_->options());
      c.connect();
      for (const auto& q : queues_) c.channel().queue_delete(q);
      c.close();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "queue cleanup: " << e.what();
    }
  }

  std::string declare_queue(std::string_view what) {
    std::string q = test::unique_queue(what);
    ch_->queue_declare(q, {.auto_delete = false});
    queues_.push_back(q);
    return q;
  }

  // Consumes from `queue` until `count` messages arrived or 20 s passed; returns them.
  std::vector<message> consume(const std::string& queue, std::size_t count) {
    std::vector<message> got;
    ch_->basic_consume(queue, [&](message& m) { got.push_back(m); }, {.no_ack = true});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (got.size() < count && std::chrono::steady_clock::now() < deadline) {
      try {
        conn_->drain_events(seconds_f(0.2));
      } catch (const amqp_timeout&) {
      }
    }
    return got;
  }

  std::unique_ptr<connection> conn_;
  channel* ch_ = nullptr;
  std::vector<std::string> queues_;
};

// ---------------------------------------------------------------------------------------------
// warren → py-amqp

TEST_F(py_amqp_interop, py_amqp_reads_every_property_and_type_letter_warren_publishes) {
  const std::string q = declare_queue("to-py");

  field_table headers{
      {"t_true", field_value::boolean(true)},
      {"t_false", field_value::boolean(false)},
      {"b_negative", field_value::i8(-2)},
      {"b_max", field_value::i8(127)},
      {"B_max", field_value::u8(255)},
      {"B_small", field_value::u8(7)},
      // 321 is 0x0141: see the expectation below for why this value.
      {"s_as_shortstr", field_value::i16(0x0141)},
      {"u_max", field_value::u16(65535)},
      {"I_min", field_value::i32(std::numeric_limits<std::int32_t>::min())},
      {"I_max", field_value::i32(std::numeric_limits<std::int32_t>::max())},
      {"i_max", field_value::u32(std::numeric_limits<std::uint32_t>::max())},
      {"l_negative", field_value::i64(-2)},
      {"l_max", field_value::i64(std::numeric_limits<std::int64_t>::max())},
      {"f", field_value::f32(0.1f)},
      {"f_negative", field_value::f32(-2.5f)},
      {"d", field_value::f64(-0.1)},
      {"d_large", field_value::f64(1e300)},
      {"D", field_value::decimal(3, -12345)},
      {"S_text", field_value::long_string("h\u00e9llo \u2713")},
      {"S_binary", field_value::long_string("\xff\xfe\x00"s)},
      {"S_empty", field_value::long_string("")},
      {"A", field_value::array({field_value::i32(1), field_value::long_string("two"),
                                field_value::boolean(true), field_value::void_value(),
                                field_value::array({field_value::u8(200)}),
                                field_value::table({{"k", field_value::i8(-1)}})})},
      {"A_empty", field_value::array({})},
      {"T", field_value::timestamp(1700000000)},
      {"F", field_value::table(
                {{"inner", field_value::i32(7)},
                 {"deeper", field_value::table({{"x", field_value::bytes("\x00\x01"s)}})}})},
      {"F_empty", field_value::table({})},
      {"V", field_value::void_value()},
      {"x", field_value::bytes("\x00\xff\x10"s)},
      {"x_empty", field_value::bytes("")},
  };
  properties p;
  p.content_type = "application/x-interop";
  p.content_encoding = "binary";
  p.headers = headers;
  p.delivery_mode = 2;
  p.priority = 9;
  p.correlation_id = "corr-warren-1";
  p.reply_to = "reply-queue";
  p.expiration = "600000";
  p.message_id = "msg-warren-1";
  p.timestamp = 1700000001;
  p.type = "interop.\u00fcnicode";
  p.user_id = "guest";  // RabbitMQ rejects a user_id other than the connection's user
  p.app_id = "warren";
  p.cluster_id = "cluster-w";
  // Larger than frame_max (131072): the body crosses several body frames.
  std::string body;
  for (int i = 0; i < 300000; ++i) body += static_cast<char>((i * 7 + i / 256) & 0xFF);

  ch_->basic_publish(message(body, p), "", q);
  ch_->basic_publish(message(""), "", q);  // no properties at all, empty body

  const test::peer_result r = test::run_peer({"consume", q, "2"});
  ASSERT_EQ(r.exit_status, 0) << r.out;
  const test::json out = test::parse_json(r.out);
  const auto& msgs = out.at("messages").items;
  ASSERT_EQ(msgs.size(), 2u);

  const test::json& full = msgs[0];
  EXPECT_EQ(full.at("body_type").text, "bytes");
  EXPECT_EQ(test::base64_decode(full.at("body").text), body);
  const test::json& props = full.at("properties");
  EXPECT_EQ(py_members(props, "application_headers"), (std::vector<std::string>{
                                                          "content_type=str:application/x-interop",
                                                          "content_encoding=str:binary",
                                                          "delivery_mode=int:2",
                                                          "priority=int:9",
                                                          "correlation_id=str:corr-warren-1",
                                                          "reply_to=str:reply-queue",
                                                          "expiration=str:600000",
                                                          "message_id=str:msg-warren-1",
                                                          "timestamp=int:1700000001",
                                                          "type=str:interop.\u00fcnicode",
                                                          "user_id=str:guest",
                                                          "app_id=str:warren",
                                                          "cluster_id=str:cluster-w",
                                                      }));
  ASSERT_NE(props.find("application_headers"), nullptr);
  EXPECT_EQ(py_members(props.at("application_headers").at("v")),
            (std::vector<std::string>{
                "t_true=bool:true",
                "t_false=bool:false",
                // py-amqp reads 'b' as unsigned 8 (its comment calls it "short-short int" but
                // unpacks '>B'): -2 arrives as 254.
                "b_negative=int:254",
                "b_max=int:127",
                // ...and 'B' as signed 8 ('>b'): 255 arrives as -1.
                "B_max=int:-1",
                "B_small=int:7",
                // py-amqp reads 's' as a short string (octet length, then octets), not RabbitMQ's
                // signed 16. 0x0141 is the one kind of value that keeps the rest of the table
                // readable for it: length 1, then "A". Any other high octet shifts py-amqp off
                // the entry boundaries.
                "s_as_shortstr=str:A",
                "u_max=int:65535",
                "I_min=int:-2147483648",
                "I_max=int:2147483647",
                "i_max=int:4294967295",
                // py-amqp reads 'l' as unsigned 64 ('>Q'; its signed 64 is 'L'): -2 arrives as
                // 2^64 - 2.
                "l_negative=int:18446744073709551614",
                "l_max=int:9223372036854775807",
                // Python has only doubles: the float's exact value, widened.
                "f=float:0.10000000149011612",
                "f_negative=float:-2.5",
                "d=float:-0.1",
                "d_large=float:1e+300",
                "D=Decimal:-12.345",
                "S_text=str:h\u00e9llo \u2713",
                // py-amqp decodes 'S' as UTF-8 and falls back to bytes when that fails.
                "S_binary=bytes:fffe00",
                "S_empty=str:",
                "A=list[int:1,str:two,bool:true,None,list[int:-56],dict{k=int:255}]",
                "A_empty=list[]",
                "T=datetime:1700000000",
                "F=dict{inner=int:7,deeper=dict{x=bytes:0001}}",
                "F_empty=dict{}",
                "V=None",
                "x=bytes:00ff10",
                "x_empty=bytes:",
            }));

  const test::json& bare = msgs[1];
  // py-amqp never fills in the body of a message without body frames: it keeps Message's
  // default, the empty str.
  EXPECT_EQ(bare.at("body_type").text, "str");
  EXPECT_EQ(test::base64_decode(bare.at("body").text), "");
  EXPECT_TRUE(bare.at("properties").members.empty()) << r.out;
}

// ---------------------------------------------------------------------------------------------
// py-amqp → warren

TEST_F(py_amqp_interop, warren_reads_every_property_and_type_py_amqp_publishes) {
  const std::string q = declare_queue("from-py");
  const test::peer_result r = test::run_peer({"publish", q, "common"});
  ASSERT_EQ(r.exit_status, 0) << r.out;
  const test::json out = test::parse_json(r.out);

  std::vector<message> got = consume(q, 1);
  ASSERT_EQ(got.size(), 1u);
  const message& m = got[0];
  EXPECT_EQ(m.body(), py_body());
  EXPECT_EQ(test::base64_decode(out.at("body").text), py_body());

  // Exactly what py-amqp's own serializer wrote, decoded by warren's codec.
  const std::string py_header = test::base64_decode(out.at("content_header").text);
  codec::content_header h;
  ASSERT_EQ(codec::decode(py_header, h), codec::errc::ok);
  EXPECT_EQ(h.body_size, py_body().size());
  properties serialized;
  ASSERT_EQ(properties::from_wire(h.properties, serialized), codec::errc::ok);
  EXPECT_EQ(m.props(), serialized);

  const properties& p = m.props();
  EXPECT_EQ(p.content_type, "application/x-interop");
  EXPECT_EQ(p.content_encoding, "binary");
  EXPECT_EQ(p.delivery_mode, 2);
  EXPECT_EQ(p.priority, 5);
  EXPECT_EQ(p.correlation_id, "corr-py-1");
  EXPECT_EQ(p.reply_to, "reply-queue");
  EXPECT_EQ(p.expiration, "600000");
  EXPECT_EQ(p.message_id, "msg-py-1");
  EXPECT_EQ(p.timestamp, 1700000000u);
  EXPECT_EQ(p.type, "interop.\u00fcnicode");
  EXPECT_EQ(p.user_id, "guest");
  EXPECT_EQ(p.app_id, "py-amqp");
  EXPECT_EQ(p.cluster_id, "cluster-py");
  ASSERT_TRUE(p.headers.has_value());
  // py-amqp's _write_item picks the letter from the Python type: bool t, int I (within
  // ±2147483647), float d, Decimal D (scale = -exponent), str and bytes both S (UTF-8 for str),
  // datetime T, list A, dict F, None V.
  EXPECT_EQ(wire_members(*p.headers), (std::vector<std::string>{
                                          "bool_true=t:true",
                                          "bool_false=t:false",
                                          "int_small=I:42",
                                          "int_negative=I:-7",
                                          "int_i32_max=I:2147483647",
                                          "int_i32_min_plus_1=I:-2147483647",
                                          "float=d:0.1",
                                          "float_negative_zero=d:-0",
                                          "decimal=D:3,-12345",
                                          "decimal_integral=D:0,42",
                                          "str=S:h\u00e9llo \u2713",
                                          "str_empty=S:",
                                          "bytes=S:\x00\xff\x10"s + "binary",
                                          "list=A[I:1,S:two,V,A[t:true],F{k=d:2.5}]",
                                          "list_empty=A[]",
                                          "dict=F{k=S:v,nested=F{deep=I:-1}}",
                                          "dict_empty=F{}",
                                          "datetime=T:1700000000",
                                          "none=V",
                                      }));
}

// Regression: py-amqp writes integers outside ±2147483647 with the letter 'L' (signed 64), which
// RabbitMQ passes through unchanged. warren's table decoder knows no 'L', so the whole delivery
// fails to decode (frame_syntax_error from drain_events) and the message is lost to the consumer.
// RabbitMQ's letter for signed 64 is 'l', whose value space 'L' shares.
TEST_F(py_amqp_interop, py_amqp_large_int_headers_decode_as_signed_64) {
  const std::string q = declare_queue("from-py-large");
  const test::peer_result r = test::run_peer({"publish", q, "large_ints"});
  ASSERT_EQ(r.exit_status, 0) << r.out;
  const test::json out = test::parse_json(r.out);

  // The header's views point into py_header: keep it alive while they are used.
  const std::string py_header = test::base64_decode(out.at("content_header").text);
  codec::content_header h;
  ASSERT_EQ(codec::decode(py_header, h), codec::errc::ok);
  properties serialized;
  EXPECT_EQ(properties::from_wire(h.properties, serialized), codec::errc::ok);

  std::vector<message> got;
  EXPECT_NO_THROW(got = consume(q, 1));
  ASSERT_EQ(got.size(), 1u);
  const field_table& t = got[0].headers();
  ASSERT_EQ(t.size(), 3u);
  const std::int64_t expected[] = {std::int64_t{1} << 40, -(std::int64_t{1} << 40),
                                   std::numeric_limits<std::int32_t>::min()};
  std::size_t i = 0;
  for (const auto& e : t) {
    EXPECT_EQ(e.value.as_integer(), expected[i]) << e.name;
    ++i;
  }
}

// ---------------------------------------------------------------------------------------------
// Request/reply: a py-amqp client asks, a warren consumer answers through direct reply-to.

TEST_F(py_amqp_interop, warren_consumer_answers_py_amqp_request_via_reply_to) {
  const std::string q = declare_queue("rpc");
  std::vector<message> requests;
  ch_->basic_consume(q, [&](message& m) { requests.push_back(m); }, {.no_ack = true});

  test::peer_process peer = test::start_peer({"request", q});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (requests.empty() && std::chrono::steady_clock::now() < deadline) {
    try {
      conn_->drain_events(seconds_f(0.2));
    } catch (const amqp_timeout&) {
    }
  }
  if (requests.empty()) {
    test::finish(peer, std::chrono::milliseconds(0));
    FAIL() << "no request from py-amqp within 20 s";
  }
  const message& req = requests[0];
  EXPECT_EQ(req.body(), "ping from py-amqp");
  EXPECT_EQ(req.props().correlation_id, "req-42");
  ASSERT_TRUE(req.props().reply_to.has_value());
  // RabbitMQ rewrites the pseudo-queue name into a routable reply address.
  EXPECT_EQ(req.props().reply_to->rfind("amq.rabbitmq.reply-to.", 0), 0u) << *req.props().reply_to;

  properties reply_props;
  reply_props.correlation_id = req.props().correlation_id;
  ch_->basic_publish(message("pong: " + req.body_copy(), reply_props), "", *req.props().reply_to);

  const test::peer_result r = test::finish(peer);
  ASSERT_EQ(r.exit_status, 0) << r.out;
  const test::json out = test::parse_json(r.out);
  EXPECT_EQ(test::base64_decode(out.at("body").text), "pong: ping from py-amqp");
  EXPECT_EQ(py_members(out.at("properties")),
            (std::vector<std::string>{"correlation_id=str:req-42"}));
}

}  // namespace
}  // namespace warren
