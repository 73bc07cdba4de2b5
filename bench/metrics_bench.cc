// What recording a metric costs on a hot path, and what a snapshot costs the thread that takes
// it (engine/metrics). Single-threaded rows show the instructions; the threaded rows show a
// shared line (several workers recording one histogram) against per-owner lines.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/metrics/metrics.h"
#include "engine/metrics/prometheus.h"

namespace {

using namespace warren::metrics;

void owned_counter_add(benchmark::State& state) {
  owned_counter c;
  for (auto _ : state) c.add();
  benchmark::DoNotOptimize(c.load());
}
BENCHMARK(owned_counter_add);

// What a latency costs its call site besides the recording: one clock read.
void steady_clock_now(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(std::chrono::steady_clock::now());
}
BENCHMARK(steady_clock_now);

void shared_counter_add(benchmark::State& state) {
  static shared_counter c;
  for (auto _ : state) c.add();
  benchmark::DoNotOptimize(c.load());
}
BENCHMARK(shared_counter_add)->Threads(1)->Threads(2);

// One confirm as the I/O thread records it: the count and the latency.
void channel_confirm(benchmark::State& state) {
  registry reg;
  auto ch = reg.add_connection()->add_channel(1);
  std::uint64_t ns = 1000;
  for (auto _ : state) {
    ch->on_confirmed();
    ch->record_confirm_latency(ns);
    ns = ns * 7 % 10'000'000 + 1000;
  }
}
BENCHMARK(channel_confirm);

void channel_published(benchmark::State& state) {
  registry reg;
  auto ch = reg.add_connection()->add_channel(1);
  for (auto _ : state) ch->on_published();
}
BENCHMARK(channel_published);

// Workers recording delivery-to-handled into one channel's histogram at once.
void channel_handled(benchmark::State& state) {
  static registry reg;
  static std::shared_ptr<channel_metrics> ch;
  if (state.thread_index() == 0) ch = reg.add_connection()->add_channel(1);
  std::uint64_t ns = 1000 + static_cast<std::uint64_t>(state.thread_index());
  for (auto _ : state) {
    ch->record_handled(ns);
    ns = ns * 7 % 10'000'000 + 1000;
  }
  if (state.thread_index() == 0) ch.reset();
}
BENCHMARK(channel_handled)->Threads(1)->Threads(2);

// A snapshot of one connection with N channels, and its Prometheus text.
void snapshot_and_render(benchmark::State& state) {
  registry reg;
  auto conn = reg.add_connection("bench");
  std::vector<std::shared_ptr<channel_metrics>> channels;
  for (int i = 1; i <= state.range(0); ++i) {
    channels.push_back(conn->add_channel(static_cast<std::uint16_t>(i)));
    channels.back()->record_confirm_latency(5000 * static_cast<std::uint64_t>(i));
  }
  std::size_t bytes = 0;
  for (auto _ : state) {
    const snapshot s = reg.take();
    bytes = render_prometheus(s).size();
  }
  state.counters["text_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(snapshot_and_render)->Arg(1)->Arg(10)->Arg(100)->Unit(benchmark::kMicrosecond);

}  // namespace
