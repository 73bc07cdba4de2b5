// End-to-end publish driver for rabbitmq-c 0.11 (amqp_basic_publish), the same workload as
// warren's bench/blocking_publish.cc; see bench/driver.h.
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/driver.h"
#include "bench/peers/rabbitmq_c_check.h"

namespace {

namespace wb = warren::bench;

constexpr amqp_channel_t channel = 1;

using warren::bench::check_rpc;
using warren::bench::check_status;

std::uint32_t message_count(amqp_connection_state_t conn, amqp_bytes_t queue) {
  const amqp_queue_declare_ok_t* ok =
      amqp_queue_declare(conn, channel, queue, 1, 0, 0, 1, amqp_empty_table);
  check_rpc(conn, "queue.declare passive");
  return ok->message_count;
}

// Waits for the basic.ack of delivery tag `tag` (the broker may ack several at once).
void wait_for_ack(amqp_connection_state_t conn, std::uint64_t tag) {
  for (;;) {
    amqp_frame_t f;
    check_status(amqp_simple_wait_frame(conn, &f), "waiting for basic.ack");
    if (f.frame_type != AMQP_FRAME_METHOD) continue;
    if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) throw std::runtime_error("nacked");
    if (f.payload.method.id != AMQP_BASIC_ACK_METHOD) continue;
    const auto* ack = static_cast<const amqp_basic_ack_t*>(f.payload.method.decoded);
    if (ack->delivery_tag == tag || (ack->multiple && ack->delivery_tag > tag)) return;
  }
}

int run(const wb::args& a) {
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  if (socket == nullptr) throw std::runtime_error("amqp_tcp_socket_new failed");
  check_status(amqp_socket_open(socket, wb::broker_host, wb::broker_port), "connect");
  const amqp_rpc_reply_t login =
      amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest");
  if (login.reply_type != AMQP_RESPONSE_NORMAL) throw std::runtime_error("login failed");
  amqp_channel_open(conn, channel);
  check_rpc(conn, "channel.open");

  const amqp_bytes_t queue = amqp_cstring_bytes(a.queue.c_str());
  amqp_table_entry_t expires;
  expires.key = amqp_cstring_bytes("x-expires");
  expires.value.kind = AMQP_FIELD_KIND_I32;
  expires.value.value.i32 = wb::queue_expires_ms;
  amqp_queue_declare(conn, channel, queue, 0, 0, 0, 1, amqp_table_t{1, &expires});
  check_rpc(conn, "queue.declare");
  amqp_queue_purge(conn, channel, queue);
  check_rpc(conn, "queue.purge");

  const std::string body(wb::message_size, 'x');
  const amqp_bytes_t body_bytes{body.size(), const_cast<char*>(body.data())};
  auto publish = [&] {
    check_status(
        amqp_basic_publish(conn, channel, amqp_empty_bytes, queue, 0, 0, nullptr, body_bytes),
        "basic.publish");
  };
  const long warmup = wb::warmup_count(a);
  int status = 0;

  if (a.mode == wb::mode::publish) {
    for (long i = 0; i < warmup; ++i) publish();
    const wb::stopwatch t;
    for (long i = 0; i < a.n; ++i) publish();
    message_count(conn, queue);
    const double wall = t.wall(), cpu = t.cpu();
    wb::report_publish("rabbitmq-c", a.n, wall, cpu);
    const auto want = static_cast<std::uint32_t>(warmup + a.n);
    std::uint32_t seen = 0;
    for (int i = 0; i < 200 && (seen = message_count(conn, queue)) != want; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (seen != want) {
      std::fprintf(stderr, "rabbitmq-c: queue holds %u messages, expected %u\n", seen, want);
      status = 1;
    }
  } else {
    amqp_confirm_select(conn, channel);
    check_rpc(conn, "confirm.select");
    std::uint64_t tag = 0;
    for (long i = 0; i < warmup; ++i) {
      publish();
      wait_for_ack(conn, ++tag);
      amqp_maybe_release_buffers(conn);
    }
    std::vector<double> rtt;
    rtt.reserve(static_cast<std::size_t>(a.n));
    const wb::stopwatch t;
    for (long i = 0; i < a.n; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      publish();
      wait_for_ack(conn, ++tag);
      rtt.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      // As any long-running rabbitmq-c program must, or its decoding pool grows per frame.
      amqp_maybe_release_buffers(conn);
    }
    const double cpu = t.cpu();
    wb::report_confirm("rabbitmq-c", rtt, cpu);
  }
  amqp_queue_delete(conn, channel, queue, 0, 0);
  check_rpc(conn, "queue.delete");
  amqp_channel_close(conn, channel, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  const wb::args a = wb::parse_args(argc, argv);
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rabbitmq-c: %s\n", e.what());
    return 1;
  }
}
