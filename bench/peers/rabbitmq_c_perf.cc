// rabbitmq-c 0.11 on bench/compare's workloads, written the way a rabbitmq-c user would:
// amqp_basic_publish per message, amqp_consume_message per delivery, amqp_basic_ack per
// message in manual-ack mode. bench/peers/py_amqp_perf.py takes the same options and prints the
// same line.
//
//   rabbitmq_c_perf --mode publish|consume [--uri amqp://guest:guest@127.0.0.1:5672 | HOST:PORT]
//                   [--queue Q] [--size 16] [--confirm W] [--ack | --no-ack] [--prefetch 1000]
//                   [--seconds 5 | --count N]
//
//   publish    16-octet (--size) messages to Q through the default exchange (routing key "" when
//              no queue), for --seconds or --count; with --confirm W, confirm mode with at most
//              W unconfirmed publishes. The time ends with a round trip after the last publish
//              (or with the last ack), so that it covers every message having left the client.
//   consume    basic.consume on Q (--no-ack, the default, or --ack: one basic.ack per message)
//              with basic.qos --prefetch; until --count messages, --seconds, or 1 s without a
//              delivery; the time ends at the last delivery.
// Q is declared (not durable, x-expires 300000) unless it is empty. A URI without a vhost means
// "/". One JSON line: {"client": "rabbitmq-c", "mode": .., "msgs": .., "seconds": ..,
// "msg_per_s": .., "cpu_us_per_msg": .., "confirmed": ..}; CPU is getrusage of the process,
// user + sys, over the timed part.
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bench/driver.h"
#include "bench/peers/rabbitmq_c_check.h"

namespace {

namespace wb = warren::bench;

constexpr amqp_channel_t channel = 1;

struct args {
  std::string mode;
  std::string uri = "amqp://guest:guest@127.0.0.1:5672";
  std::string queue;
  std::size_t size = 16;
  long confirm_window = 0;  // 0: no confirms
  bool ack = false;
  int prefetch = 1000;
  double seconds = 5;
  long count = 0;  // when set, overrides seconds
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "rabbitmq_c_perf: %s\nusage: rabbitmq_c_perf --mode publish|consume [--uri URI] "
               "[--queue Q] [--size 16] [--confirm W] [--ack|--no-ack] [--prefetch 1000] "
               "[--seconds 5 | --count N]\n",
               why);
  std::exit(2);
}

long positive(const char* s) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < 0) usage("bad number");
  return v;
}

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    const std::string_view f = argv[i];
    if (f == "--ack" || f == "--no-ack") {
      a.ack = f == "--ack";
      continue;
    }
    if (i + 1 >= argc) usage("an option without its value");
    const char* v = argv[++i];
    if (f == "--mode") {
      a.mode = v;
    } else if (f == "--uri") {
      a.uri = v;
    } else if (f == "--queue") {
      a.queue = v;
    } else if (f == "--size") {
      a.size = static_cast<std::size_t>(positive(v));
    } else if (f == "--confirm") {
      a.confirm_window = positive(v);
    } else if (f == "--prefetch") {
      a.prefetch = static_cast<int>(positive(v));
    } else if (f == "--seconds") {
      a.seconds = std::strtod(v, nullptr);
    } else if (f == "--count") {
      a.count = positive(v);
    } else {
      usage("unknown option");
    }
  }
  if (a.mode != "publish" && a.mode != "consume") usage("--mode publish|consume");
  if (a.mode == "consume" && a.queue.empty()) usage("consume needs --queue");
  if (a.count <= 0 && a.seconds <= 0) usage("--seconds or --count must be positive");
  return a;
}

using warren::bench::check_rpc;
using warren::bench::check_status;

// A bare host:port means guest/guest on vhost "/".
std::string full_uri(const std::string& uri) {
  return uri.find("://") == std::string::npos ? "amqp://guest:guest@" + uri : uri;
}

amqp_connection_state_t open_connection(const args& a) {
  const std::string uri = full_uri(a.uri);
  std::vector<char> url(uri.begin(), uri.end());
  url.push_back('\0');
  amqp_connection_info info;
  amqp_default_connection_info(&info);
  if (amqp_parse_url(url.data(), &info) != AMQP_STATUS_OK) throw std::runtime_error("bad --uri");
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  if (socket == nullptr) throw std::runtime_error("amqp_tcp_socket_new failed");
  check_status(amqp_socket_open(socket, info.host, info.port), "connect");
  const char* vhost = info.vhost[0] != '\0' ? info.vhost : "/";
  const amqp_rpc_reply_t login =
      amqp_login(conn, vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user, info.password);
  if (login.reply_type != AMQP_RESPONSE_NORMAL) throw std::runtime_error("login failed");
  amqp_channel_open(conn, channel);
  check_rpc(conn, "channel.open");
  if (!a.queue.empty()) {
    amqp_table_entry_t expires;
    expires.key = amqp_cstring_bytes("x-expires");
    expires.value.kind = AMQP_FIELD_KIND_I32;
    expires.value.value.i32 = wb::queue_expires_ms;
    amqp_queue_declare(conn, channel, amqp_cstring_bytes(a.queue.c_str()), 0, 0, 0, 0,
                       amqp_table_t{1, &expires});
    check_rpc(conn, "queue.declare");
  }
  return conn;
}

struct result {
  long msgs = 0;
  long confirmed = 0;
  double seconds = 0;
  double cpu = 0;
};

// Reads one frame and counts the confirms it carries; tag_base..: the publishes so far.
void read_confirms(amqp_connection_state_t conn, long& confirmed) {
  amqp_frame_t f;
  check_status(amqp_simple_wait_frame(conn, &f), "waiting for confirms");
  if (f.frame_type != AMQP_FRAME_METHOD) return;
  std::uint64_t tag = 0;
  bool multiple = false;
  if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
    const auto* m = static_cast<const amqp_basic_ack_t*>(f.payload.method.decoded);
    tag = m->delivery_tag;
    multiple = m->multiple != 0;
  } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
    // A nack settles the message too; the rate counts settled publishes.
    const auto* m = static_cast<const amqp_basic_nack_t*>(f.payload.method.decoded);
    tag = m->delivery_tag;
    multiple = m->multiple != 0;
  } else {
    return;
  }
  confirmed = multiple ? static_cast<long>(tag) : confirmed + 1;
  amqp_maybe_release_buffers(conn);
}

result publish(amqp_connection_state_t conn, const args& a) {
  if (a.confirm_window > 0) {
    amqp_confirm_select(conn, channel);
    check_rpc(conn, "confirm.select");
  }
  const std::string body(a.size, 'x');
  const amqp_bytes_t body_bytes{body.size(), const_cast<char*>(body.data())};
  const amqp_bytes_t routing_key = amqp_cstring_bytes(a.queue.c_str());
  result r;
  const wb::stopwatch timer;
  for (;;) {
    if (a.count > 0 ? r.msgs >= a.count : (r.msgs % 256 == 0 && timer.wall() >= a.seconds)) {
      break;
    }
    check_status(
        amqp_basic_publish(conn, channel, amqp_empty_bytes, routing_key, 0, 0, nullptr, body_bytes),
        "basic.publish");
    ++r.msgs;
    while (a.confirm_window > 0 && r.msgs - r.confirmed >= a.confirm_window) {
      read_confirms(conn, r.confirmed);
    }
  }
  if (a.confirm_window > 0) {
    while (r.confirmed < r.msgs) read_confirms(conn, r.confirmed);
  } else if (!a.queue.empty()) {
    amqp_queue_declare(conn, channel, routing_key, 1, 0, 0, 0, amqp_empty_table);
    check_rpc(conn, "queue.declare passive");
  } else {
    amqp_basic_qos(conn, channel, 0, 0, 0);
    check_rpc(conn, "basic.qos");
  }
  r.seconds = timer.wall();
  r.cpu = timer.cpu();
  return r;
}

result consume(amqp_connection_state_t conn, const args& a) {
  amqp_basic_qos(conn, channel, 0, static_cast<std::uint16_t>(a.prefetch), 0);
  check_rpc(conn, "basic.qos");
  amqp_basic_consume(conn, channel, amqp_cstring_bytes(a.queue.c_str()), amqp_empty_bytes, 0,
                     a.ack ? 0 : 1, 0, amqp_empty_table);
  check_rpc(conn, "basic.consume");
  result r;
  const wb::stopwatch timer;
  timeval idle{1, 0};
  while (a.count > 0 ? r.msgs < a.count : timer.wall() < a.seconds) {
    amqp_envelope_t envelope;
    amqp_maybe_release_buffers(conn);
    const amqp_rpc_reply_t reply = amqp_consume_message(conn, &envelope, &idle, 0);
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        reply.library_error == AMQP_STATUS_TIMEOUT) {
      break;  // the queue ran dry
    }
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) throw std::runtime_error("consume failed");
    if (a.ack) check_status(amqp_basic_ack(conn, channel, envelope.delivery_tag, 0), "ack");
    amqp_destroy_envelope(&envelope);
    ++r.msgs;
    r.seconds = timer.wall();
    r.cpu = timer.cpu();
  }
  return r;
}

int run(const args& a) {
  amqp_connection_state_t conn = open_connection(a);
  const result r = a.mode == "publish" ? publish(conn, a) : consume(conn, a);
  // Closing may meet deliveries still in flight from a firehose; the numbers are taken.
  amqp_channel_close(conn, channel, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
  if (r.msgs == 0 || r.seconds <= 0) throw std::runtime_error("no messages");
  std::printf(
      "{\"client\": \"rabbitmq-c\", \"mode\": \"%s\", \"size\": %zu, \"msgs\": %ld, "
      "\"confirmed\": %ld, \"seconds\": %.6f, \"msg_per_s\": %.1f, \"cpu_us_per_msg\": %.5f}\n",
      a.mode.c_str(), a.size, r.msgs, r.confirmed, r.seconds,
      static_cast<double>(r.msgs) / r.seconds, r.cpu * 1e6 / static_cast<double>(r.msgs));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rabbitmq_c_perf: %s\n", e.what());
    return 1;
  }
}
