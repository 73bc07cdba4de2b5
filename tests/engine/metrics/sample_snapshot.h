// A snapshot with known values, for the renderer's tests: recorded through the public recording
// API, so it is what a face would produce.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "engine/metrics/metrics.h"

namespace warren::metrics::test {

// Keeps the recorders alive, so the registry lists them.
struct sample {
  registry reg;
  std::vector<std::shared_ptr<connection_metrics>> connections;
  std::vector<std::shared_ptr<channel_metrics>> channels;
  std::vector<std::shared_ptr<consumer_metrics>> consumers;
  clock::time_point t0{};

  // Connection 1 "orders": channel 1 publishes 10 (7 confirmed in 1, 3, 5 ms, 2 nacked after
  // 2 s, 1 in doubt, 1 returned), channel 2 consumes 4 (3 acked, 1 rejected) through consumer
  // "ctag-1" (1 pending), handled in 1 us, 2 us, 40 ms; transport counts; blocked 1.5 s so far.
  // Connection 2: no name, nothing recorded.
  sample() {
    auto c = reg.add_connection("orders");
    connections.push_back(c);
    auto pub = c->add_channel(1);
    auto sub = c->add_channel(2);
    channels.push_back(pub);
    channels.push_back(sub);
    pub->on_published(10);
    pub->on_confirmed(7);
    pub->on_nacked(2);
    pub->on_in_doubt();
    pub->on_returned();
    pub->record_confirm_latency(1'000'000, 3);
    pub->record_confirm_latency(3'000'000, 3);
    pub->record_confirm_latency(5'000'000, 1);
    pub->record_confirm_latency(2'000'000'000, 2);
    auto ctag = sub->add_consumer("ctag-1");
    consumers.push_back(ctag);
    sub->on_delivered(4);
    ctag->on_delivered(4);
    ctag->on_handled(3);
    sub->record_handled(1'000);
    sub->record_handled(2'000);
    sub->record_handled(40'000'000);
    sub->on_delivery_acked(3);
    sub->on_delivery_rejected(1);
    c->on_socket_read(1000);
    c->on_socket_read(24);
    c->on_socket_write(512);
    c->on_frames_received(12);
    c->on_frames_sent(4);
    c->on_publish_frames_sent(30);
    c->on_heartbeat_missed();
    c->on_blocked(t0);
    connections.push_back(reg.add_connection());
  }

  snapshot take() const { return reg.take(t0 + std::chrono::milliseconds(1500)); }
};

}  // namespace warren::metrics::test
