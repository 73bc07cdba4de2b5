// Micro-benchmarks of the engine's standalone components: the connection machine's receive path
// (deliveries fed in, commands out), the publisher-confirm tracker and the consumer ack
// coalescer (sans-I/O, one thread), and the I/O-thread-to-worker hand-off (a mailbox on a TBB
// worker pool). Every row reports items/s (one item = one message); the trickle
// rows also report the pool's CPU per item.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/buffer.h"
#include "engine/protocol/ack_coalescer.h"
#include "engine/protocol/confirm_tracker.h"
#include "engine/protocol/connection_machine.h"
#include "engine/workers/dispatcher.h"
#include "tests/engine/protocol/scripted_peer.h"

namespace {

namespace wp = warren::protocol;
namespace ww = warren::workers;

// The connection machine's receive path: one read's worth of 16 B deliveries (basic.deliver,
// content header, body; a 31-octet consumer tag as RabbitMQ's) fed at once, each handed to
// on_command, which keeps what a consumer keeps (the buffers) and drops it. What the I/O thread
// spends per delivery before the hand-off to a worker.
struct counting_handler final : wp::connection_handler {
  std::uint64_t commands = 0, body_octets = 0;
  void on_command(wp::command& c) override {
    ++commands;
    body_octets += c.body.size();
    wp::command taken = std::move(c);  // as a consumer takes the buffers it views
    benchmark::DoNotOptimize(taken);
  }
};

void machine_feed_deliveries(benchmark::State& state) {
  namespace pt = warren::protocol::test;
  const int per_read = int(state.range(0));
  counting_handler handler;
  wp::connection_config config;
  config.authentication = {wp::sasl_plain("guest", "guest")};
  wp::connection_machine m(std::move(config), handler);
  const wp::time_point now{};
  m.start(now);
  const auto feed = [&](std::string_view bytes) {
    warren::rx_ref buffer = warren::rx_ref::allocate(bytes.size());
    std::memcpy(buffer->data(), bytes.data(), bytes.size());
    return m.feed(std::string_view(buffer->data(), bytes.size()), buffer, now);
  };
  pt::scripted_peer peer;
  feed(peer.start().tune(2047, 131072, 0).open_ok().take());
  m.open_channel(1);
  feed(peer.channel_open_ok(1).take());
  m.consume_output(m.output().size(), now);
  if (!m.is_open()) {
    state.SkipWithError("the machine did not open");
    return;
  }
  handler.commands = 0;  // channel.open-ok
  warren::codec::basic_deliver d;
  d.consumer_tag = "amq.ctag-0123456789abcdefghijklm";
  d.routing_key = "bench-queue";
  const std::string body(16, 'b');
  for (int i = 0; i < per_read; ++i) {
    d.delivery_tag = std::uint64_t(i) + 1;
    peer.method(1, d).header(1, body.size()).body(1, body);
  }
  const std::string bytes = peer.take();
  warren::rx_pool pool(bytes.size() + 4096, 4);
  for (auto _ : state) {
    warren::rx_ref buffer = pool.acquire();
    std::memcpy(buffer->data(), bytes.data(), bytes.size());
    const std::size_t used = m.feed(std::string_view(buffer->data(), bytes.size()), buffer, now);
    if (used != bytes.size()) {
      state.SkipWithError("the machine did not take every delivery");
      return;
    }
  }
  if (handler.commands != std::uint64_t(state.iterations()) * per_read) {
    state.SkipWithError("a delivery was lost");
  }
  state.SetItemsProcessed(state.iterations() * per_read);
}
BENCHMARK(machine_feed_deliveries)->Arg(16)->Arg(256);

// Publish, then the broker's ack, one message at a time.
void tracker_publish_single_ack(benchmark::State& state) {
  wp::confirm_tracker tracker({.window = 1000});
  const wp::time_point now{};
  std::uint64_t settled = 0;
  auto complete = [&](const wp::confirm_event& e) { settled += e.token; };
  std::uint64_t token = 0;
  for (auto _ : state) {
    const std::uint64_t sequence = tracker.on_publish(++token, now);
    tracker.on_ack(sequence, false, complete);
  }
  benchmark::DoNotOptimize(settled);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(tracker_publish_single_ack);

// 100 publishes, then one multiple ack settling them all: the rate per message.
void tracker_publish_multiple_ack_every_100(benchmark::State& state) {
  wp::confirm_tracker tracker({.window = 1000});
  const wp::time_point now{};
  std::uint64_t settled = 0;
  auto complete = [&](const wp::confirm_event& e) { settled += e.token; };
  std::uint64_t token = 0;
  for (auto _ : state) {
    std::uint64_t last = 0;
    for (int i = 0; i < 100; ++i) last = tracker.on_publish(++token, now);
    tracker.on_ack(last, true, complete);
  }
  benchmark::DoNotOptimize(settled);
  state.SetItemsProcessed(state.iterations() * 100);
}
BENCHMARK(tracker_publish_multiple_ack_every_100);

// The same with a timeout armed and every publish mandatory (a return correlation's setup cost
// without the return).
void tracker_publish_mandatory_with_timeout(benchmark::State& state) {
  wp::confirm_tracker tracker({.window = 1000, .timeout = std::chrono::seconds(5)});
  wp::time_point now{};
  std::uint64_t settled = 0;
  auto complete = [&](const wp::confirm_event& e) { settled += e.token; };
  std::uint64_t token = 0;
  for (auto _ : state) {
    std::uint64_t last = 0;
    for (int i = 0; i < 100; ++i) {
      last = tracker.on_publish(++token, now, true, "amq.direct", "bench.queue");
    }
    now += std::chrono::microseconds(100);
    tracker.on_timer(now, complete);
    tracker.on_ack(last, true, complete);
  }
  benchmark::DoNotOptimize(settled);
  state.SetItemsProcessed(state.iterations() * 100);
}
BENCHMARK(tracker_publish_mandatory_with_timeout);

// A delivery, the application's ack, and a poll: in-order acks, so 64 become one frame.
void coalescer_deliver_ack_in_order(benchmark::State& state) {
  wp::ack_coalescer coalescer({.max_count = 64, .max_delay = std::chrono::microseconds(1000)});
  const wp::time_point now{};
  std::vector<wp::ack_action> out;
  out.reserve(64);
  std::uint64_t tag = 0;
  std::uint64_t frames = 0;
  for (auto _ : state) {
    coalescer.on_delivery(++tag, true);
    coalescer.ack(tag, false, now);
    coalescer.poll(now, out);
    frames += out.size();
    out.clear();
  }
  state.counters["frames_per_ack"] =
      benchmark::Counter(double(frames) / double(state.iterations() ? state.iterations() : 1));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(coalescer_deliver_ack_in_order);

// Acks in pairs swapped (2, 1, 4, 3, ...), as two workers finishing out of order would.
void coalescer_deliver_ack_out_of_order(benchmark::State& state) {
  wp::ack_coalescer coalescer({.max_count = 64, .max_delay = std::chrono::microseconds(1000)});
  const wp::time_point now{};
  std::vector<wp::ack_action> out;
  out.reserve(64);
  std::uint64_t tag = 0;
  for (auto _ : state) {
    coalescer.on_delivery(tag + 1, true);
    coalescer.on_delivery(tag + 2, true);
    coalescer.ack(tag + 2, false, now);
    coalescer.ack(tag + 1, false, now);
    tag += 2;
    coalescer.poll(now, out);
    out.clear();
  }
  state.SetItemsProcessed(state.iterations() * 2);
}
BENCHMARK(coalescer_deliver_ack_out_of_order);

// Posted on this thread, handled on the pool by a no-op handler: items/s from the first post to
// the last item handled (drain). Arg: the pool's threads.
void mailbox_post_to_handled(benchmark::State& state) {
  ww::worker_pool pool(unsigned(state.range(0)));
  constexpr std::size_t per_round = 1 << 16;
  std::uint64_t handled = 0;  // concurrency 1: one handler at a time
  ww::mailbox<std::uint64_t> box(pool, [&](std::uint64_t& item) { handled += item; });
  for (auto _ : state) {
    for (std::size_t i = 0; i < per_round; ++i) box.post(std::uint64_t(1));
    box.drain();
  }
  benchmark::DoNotOptimize(handled);
  state.SetItemsProcessed(state.iterations() * per_round);
}
BENCHMARK(mailbox_post_to_handled)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

// The same with post_bulk, 64 items per call.
void mailbox_post_bulk_to_handled(benchmark::State& state) {
  ww::worker_pool pool(unsigned(state.range(0)));
  constexpr std::size_t per_round = 1 << 16;
  constexpr std::size_t bulk = 64;
  std::uint64_t handled = 0;
  ww::mailbox<std::uint64_t> box(pool, [&](std::uint64_t& item) { handled += item; });
  std::vector<std::uint64_t> items(bulk, 1);
  for (auto _ : state) {
    for (std::size_t i = 0; i < per_round; i += bulk) box.post_bulk(items.begin(), bulk);
    box.drain();
  }
  benchmark::DoNotOptimize(handled);
  state.SetItemsProcessed(state.iterations() * per_round);
}
BENCHMARK(mailbox_post_bulk_to_handled)
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Concurrency 4 on a 2-thread pool: no ordering, up to 4 tasks draining one mailbox.
void mailbox_concurrency_4_post_to_handled(benchmark::State& state) {
  ww::worker_pool pool(2);
  constexpr std::size_t per_round = 1 << 16;
  std::atomic<std::uint64_t> handled{0};
  ww::mailbox<std::uint64_t> box(
      pool, [&](std::uint64_t& item) { handled.fetch_add(item, std::memory_order_relaxed); }, 4);
  for (auto _ : state) {
    for (std::size_t i = 0; i < per_round; ++i) box.post(std::uint64_t(1));
    box.drain();
  }
  state.SetItemsProcessed(state.iterations() * per_round);
}
BENCHMARK(mailbox_concurrency_4_post_to_handled)->UseRealTime()->Unit(benchmark::kMillisecond);

double cpu_seconds(int who) {
  rusage u{};
  getrusage(who, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Work arriving as a broker sends it: a few items, then a pause (a 50 us sleep, longer in
// practice), on a pool of 2. What matters is not the rate but what the pool burns between
// batches: pool_cpu_ns_per_item is the process's CPU time minus this (posting) thread's, per item,
// so it counts the workers' handling, waking, spinning and sleeping. Args: items per post,
// mailboxes (each gets a post per round).
void mailbox_trickle(benchmark::State& state) {
  ww::worker_pool pool(2);
  const std::size_t per_post = std::size_t(state.range(0));
  const int boxes = int(state.range(1));
  std::atomic<std::uint64_t> handled{0};
  std::vector<std::unique_ptr<ww::mailbox<std::uint64_t>>> mailboxes;
  for (int b = 0; b < boxes; ++b) {
    mailboxes.push_back(std::make_unique<ww::mailbox<std::uint64_t>>(
        pool, [&](std::uint64_t& item) { handled.fetch_add(item, std::memory_order_relaxed); }));
  }
  std::vector<std::uint64_t> items(per_post, 1);
  const double process_before = cpu_seconds(RUSAGE_SELF);
  const double thread_before = cpu_seconds(RUSAGE_THREAD);
  for (auto _ : state) {
    for (auto& box : mailboxes) box->post_bulk(items.begin(), per_post);
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  for (auto& box : mailboxes) box->drain();
  const double pool_cpu =
      (cpu_seconds(RUSAGE_SELF) - process_before) - (cpu_seconds(RUSAGE_THREAD) - thread_before);
  const double posted = double(state.iterations()) * double(per_post) * boxes;
  state.counters["pool_cpu_ns_per_item"] = pool_cpu * 1e9 / posted;
  state.SetItemsProcessed(std::int64_t(posted));
}
BENCHMARK(mailbox_trickle)
    ->Args({1, 1})
    ->Args({16, 1})
    ->Args({4, 8})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
