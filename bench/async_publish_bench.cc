// Self-check of the async engine's publish path: one thread publishes N 16-byte messages through
// try_publish into a socketpair whose other end (the scripted peer, in discard mode) reads and
// drops the bytes; prints msg/s once the peer has received every byte.
//
//   bazel run -c opt //bench:async_publish_bench -- [messages=10000000] [body_bytes=16]
//                                                    [threads=1] [metrics=on|off]
//
// One I/O thread, no confirms: what is measured is encoding into the staging buffer, the swap,
// and the I/O thread's writev of many messages at once. With threads > 1, that many threads
// share the channel (messages split between them): the publish lock under contention. The peer is
// on the same 2 cores, so this is a floor for the null-broker measurement, not a replacement for
// it. metrics=off runs the engine without a metrics registry (engine_options::metrics null: no
// counter is touched), for the cost of the counters (bench/RESULTS.md).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "engine/async/engine.h"
#include "tests/engine/async/scripted_peer.h"

int main(int argc, char** argv) {
  using namespace std::chrono;
  using namespace warren;
  const std::uint64_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 10'000'000;
  const std::size_t body_size = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 16;
  const std::string body(body_size, 'b');
  const unsigned threads = argc > 3 ? static_cast<unsigned>(std::strtoul(argv[3], nullptr, 10)) : 1;

  const bool metrics = argc <= 4 || std::string(argv[4]) != "off";

  async::engine_options eo{.io_threads = 1, .workers = 1};
  if (!metrics) eo.metrics = nullptr;
  async::engine e(eo);
  test::scripted_peer peer;
  connection_options o;
  o.host = "peer";
  auto c = e.adopt(peer.start(), o);
  auto ch = c->open_channel();
  peer.discard.store(true);

  codec::basic_publish m;
  m.routing_key = "bench";
  codec::basic_properties props;
  const std::uint64_t per_message = codec::publish_size(m, props, body.size(), c->frame_max());
  const std::uint64_t base = peer.bytes.load();
  const std::uint64_t expected = base + per_message * n;

  std::atomic<std::uint64_t> full{0};
  std::atomic<bool> failed{false};
  const auto publisher = [&](std::uint64_t count) {
    std::uint64_t retries = 0;
    for (std::uint64_t i = 0; i < count && !failed.load(std::memory_order_relaxed);) {
      const auto s = ch->try_publish("", "bench", props, body);
      if (s == async::publish_status::ok) {
        ++i;
      } else if (s == async::publish_status::buffer_full) {
        ++retries;
        std::this_thread::yield();
      } else {
        std::fprintf(stderr, "publish failed: %s\n", std::string(async::to_string(s)).c_str());
        failed.store(true);
      }
    }
    full.fetch_add(retries);
  };
  const auto t0 = steady_clock::now();
  if (threads <= 1) {
    publisher(n);
  } else {
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < threads; ++t) {
      ts.emplace_back(publisher, n / threads + (t < n % threads ? 1 : 0));
    }
    for (auto& t : ts) t.join();
  }
  if (failed.load()) return 1;
  const auto t_encoded = steady_clock::now();
  while (peer.bytes.load(std::memory_order_relaxed) < expected) std::this_thread::yield();
  const auto t1 = steady_clock::now();
  const double secs = duration<double>(t1 - t0).count();
  const double enc_secs = duration<double>(t_encoded - t0).count();
  std::printf(
      "async_publish_bench: %llu msgs of %zu B in %.3f s: %.2f M msg/s on the wire "
      "(%.2f M msg/s accepted by try_publish; %u publishing threads; %llu buffer_full "
      "retries; metrics %s)\n",
      static_cast<unsigned long long>(n), body.size(), secs, n / secs / 1e6, n / enc_secs / 1e6,
      threads, static_cast<unsigned long long>(full.load()), metrics ? "on" : "off");
  peer.stop();  // the engine then sees EOF and its close does not wait for a reply
  return 0;
}
