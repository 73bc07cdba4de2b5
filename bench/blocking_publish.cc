// End-to-end publish driver for warren's blocking API; see bench/driver.h for the workload and
// the report. The rabbitmq-c and py-amqp drivers in bench/peers/ do the same steps.
#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "bench/driver.h"
#include "engine/client/connection.h"

namespace {

namespace wb = warren::bench;

// The broker has every message once a synchronous call after them is answered; the queue
// process may still lag the channel, hence the short poll. Returns the count seen last.
std::uint32_t wait_for_count(warren::channel& ch, const std::string& queue, std::uint32_t want) {
  std::uint32_t seen = 0;
  for (int i = 0; i < 200 && seen != want; ++i) {
    seen = ch.queue_declare(queue, {.passive = true}).message_count;
    if (seen != want) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return seen;
}

int run(const wb::args& a) {
  warren::connection_options o;
  o.host = std::string(wb::broker_host) + ":" + std::to_string(wb::broker_port);
  warren::connection conn(o, {.confirm_publish = a.mode == wb::mode::confirm});
  conn.connect();
  warren::channel& ch = conn.channel();
  // x-expires: a run that dies half-way leaves no queue full of messages behind.
  ch.queue_declare(
      a.queue,
      {.auto_delete = true,
       .arguments = {{"x-expires", warren::codec::field_value::i32(wb::queue_expires_ms)}}});
  ch.queue_purge(a.queue);
  const warren::message msg(std::string(wb::message_size, 'x'));
  const long warmup = wb::warmup_count(a);
  int status = 0;

  if (a.mode == wb::mode::publish) {
    for (long i = 0; i < warmup; ++i) ch.basic_publish(msg, "", a.queue);
    const wb::stopwatch t;
    for (long i = 0; i < a.n; ++i) ch.basic_publish(msg, "", a.queue);
    ch.queue_declare(a.queue, {.passive = true});
    const double wall = t.wall(), cpu = t.cpu();
    wb::report_publish("warren", a.n, wall, cpu);
    const auto want = static_cast<std::uint32_t>(warmup + a.n);
    if (const std::uint32_t seen = wait_for_count(ch, a.queue, want); seen != want) {
      std::fprintf(stderr, "warren: queue holds %u messages, expected %u\n", seen, want);
      status = 1;
    }
  } else {
    for (long i = 0; i < warmup; ++i) ch.basic_publish(msg, "", a.queue);
    std::vector<double> rtt;
    rtt.reserve(static_cast<std::size_t>(a.n));
    const wb::stopwatch t;
    for (long i = 0; i < a.n; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      ch.basic_publish(msg, "", a.queue);  // returns once the broker's ack is in
      rtt.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    const double cpu = t.cpu();
    wb::report_confirm("warren", rtt, cpu);
  }
  ch.queue_delete(a.queue);
  conn.close();
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  const wb::args a = wb::parse_args(argc, argv);
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warren: %s\n", e.what());
    return 1;
  }
}
