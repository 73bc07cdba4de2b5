#include "engine/metrics/metrics.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

namespace warren::metrics {
namespace {

using namespace std::chrono_literals;

TEST(metrics, a_channels_counts_appear_in_its_snapshot_and_its_connections_totals) {
  registry reg;
  auto conn = reg.add_connection("orders");
  auto ch = conn->add_channel(1);
  ch->on_published(5);
  ch->on_confirmed(3);
  ch->on_nacked();
  ch->on_in_doubt();
  ch->on_returned();
  ch->on_republished(2);
  ch->record_confirm_latency(250'000, 4);
  ch->on_delivered(10);
  ch->on_delivery_acked(6);
  ch->on_delivery_nacked(2);
  ch->on_delivery_rejected();
  ch->record_handled(3'000);

  const snapshot s = reg.take();
  ASSERT_EQ(s.connections.size(), 1u);
  const connection_snapshot& c = s.connections[0];
  EXPECT_EQ(c.id, 1u);
  EXPECT_EQ(c.name, "orders");
  EXPECT_EQ(c.open_channels, 1u);
  ASSERT_EQ(c.channels.size(), 1u);
  const channel_snapshot& cs = c.channels[0];
  EXPECT_EQ(cs.id, 1u);
  const publish_counts want_pub{
      .published = 5, .confirmed = 3, .nacked = 1, .in_doubt = 1, .returned = 1, .republished = 2};
  const delivery_counts want_del{.delivered = 10, .acked = 6, .nacked = 2, .rejected = 1};
  EXPECT_EQ(cs.publishes, want_pub);
  EXPECT_EQ(cs.deliveries, want_del);
  EXPECT_EQ(cs.publish_to_confirm.count(), 4u);
  EXPECT_EQ(cs.publish_to_confirm.sum_ns(), 1'000'000u);
  EXPECT_EQ(cs.delivery_to_handled.count(), 1u);
  EXPECT_EQ(c.publishes, want_pub);
  EXPECT_EQ(c.deliveries, want_del);
  EXPECT_EQ(c.publish_to_confirm.count(), 4u);
  EXPECT_EQ(c.delivery_to_handled.max(), 3'000u);
}

TEST(metrics, transport_counts_add_the_publish_paths_frames_to_the_io_threads) {
  registry reg;
  auto conn = reg.add_connection();
  conn->on_socket_read(100);
  conn->on_socket_read(0);
  conn->on_socket_write(64);
  conn->on_frames_received(4);
  conn->on_frames_sent(2);
  conn->on_publish_frames_sent(3);
  conn->on_heartbeat_missed();
  conn->on_recovered();
  const connection_snapshot c = conn->snapshot();
  const transport_counts want{.bytes_received = 100,
                              .bytes_sent = 64,
                              .frames_received = 4,
                              .frames_sent = 5,
                              .socket_reads = 2,
                              .socket_writes = 1};
  EXPECT_EQ(c.transport, want);
  EXPECT_EQ(c.heartbeats_missed, 1u);
  EXPECT_EQ(c.recoveries, 1u);
}

TEST(metrics, blocked_time_includes_the_current_block_and_ignores_repeats) {
  registry reg;
  auto conn = reg.add_connection();
  const clock::time_point t0{};
  conn->on_unblocked(t0);  // without a block: nothing
  conn->on_blocked(t0 + 1s);
  conn->on_blocked(t0 + 2s);  // repeated: the block started at 1 s
  connection_snapshot c = conn->snapshot(t0 + 4s);
  EXPECT_TRUE(c.blocked);
  EXPECT_EQ(c.blocked_time, 3s);
  conn->on_unblocked(t0 + 5s);
  conn->on_unblocked(t0 + 6s);
  c = conn->snapshot(t0 + 9s);
  EXPECT_FALSE(c.blocked);
  EXPECT_EQ(c.blocked_time, 4s);
  conn->on_blocked(t0 + 10s);
  EXPECT_EQ(conn->snapshot(t0 + 10500ms).blocked_time, 4500ms);
  // A snapshot clock behind the block's start adds nothing rather than going negative.
  EXPECT_EQ(conn->snapshot(t0 + 9s).blocked_time, 4s);
}

TEST(metrics, a_closed_channel_leaves_the_list_but_its_counts_stay_in_the_totals) {
  registry reg;
  auto conn = reg.add_connection();
  auto ch1 = conn->add_channel(1);
  auto ch2 = conn->add_channel(2);
  ch1->on_published(7);
  ch2->on_published(1);
  ch1->mark_closed();
  connection_snapshot c = conn->snapshot();
  ASSERT_EQ(c.channels.size(), 1u);
  EXPECT_EQ(c.channels[0].id, 2u);
  EXPECT_EQ(c.open_channels, 1u);
  EXPECT_EQ(c.publishes.published, 8u);
  // Still referenced (deliveries in flight): records still count.
  ch1->on_confirmed(7);
  ch1->record_confirm_latency(1000, 7);
  ch1.reset();  // the face let go: folded at the next snapshot
  c = conn->snapshot();
  EXPECT_EQ(c.publishes.published, 8u);
  EXPECT_EQ(c.publishes.confirmed, 7u);
  EXPECT_EQ(c.publish_to_confirm.count(), 7u);
  c = conn->snapshot();  // folded once, not twice
  EXPECT_EQ(c.publishes.published, 8u);
  EXPECT_EQ(c.publish_to_confirm.count(), 7u);
}

TEST(metrics, a_new_channel_with_a_listed_id_replaces_the_old_one) {
  registry reg;
  auto conn = reg.add_connection();
  auto old_ch = conn->add_channel(3);
  old_ch->on_published(2);
  auto new_ch = conn->add_channel(3);
  new_ch->on_published(1);
  const connection_snapshot c = conn->snapshot();
  ASSERT_EQ(c.channels.size(), 1u);
  EXPECT_EQ(c.channels[0].publishes.published, 1u);
  EXPECT_EQ(c.publishes.published, 3u);
  EXPECT_TRUE(old_ch->closed());
}

TEST(metrics, channels_are_listed_by_id) {
  registry reg;
  auto conn = reg.add_connection();
  auto a = conn->add_channel(9);
  auto b = conn->add_channel(2);
  auto d = conn->add_channel(5);
  const connection_snapshot c = conn->snapshot();
  ASSERT_EQ(c.channels.size(), 3u);
  EXPECT_EQ(c.channels[0].id, 2u);
  EXPECT_EQ(c.channels[1].id, 5u);
  EXPECT_EQ(c.channels[2].id, 9u);
  EXPECT_TRUE(conn->snapshot(clock::now(), false).channels.empty());
  EXPECT_EQ(conn->snapshot(clock::now(), false).open_channels, 3u);
}

TEST(metrics, consumers_report_deliveries_and_pending_until_removed) {
  registry reg;
  auto conn = reg.add_connection();
  auto ch = conn->add_channel(1);
  auto c1 = ch->add_consumer("ctag-1");
  auto c2 = ch->add_consumer("ctag-2");
  c1->on_delivered(5);
  c1->on_handled(2);
  c2->on_delivered(1);
  channel_snapshot s = ch->snapshot();
  ASSERT_EQ(s.consumers.size(), 2u);
  EXPECT_EQ(s.consumers[0].tag, "ctag-1");
  EXPECT_EQ(s.consumers[0].delivered, 5u);
  EXPECT_EQ(s.consumers[0].pending, 3);
  EXPECT_EQ(s.consumers[1].pending, 1);
  ch->remove_consumer(*c1);
  s = ch->snapshot();
  ASSERT_EQ(s.consumers.size(), 1u);
  EXPECT_EQ(s.consumers[0].tag, "ctag-2");
  c2.reset();  // dropped by the face without remove_consumer
  EXPECT_TRUE(ch->snapshot().consumers.empty());
  auto again = ch->add_consumer("ctag-3");
  auto replaced = ch->add_consumer("ctag-3");  // same tag: the newer one is listed
  replaced->on_delivered(4);
  s = ch->snapshot();
  ASSERT_EQ(s.consumers.size(), 1u);
  EXPECT_EQ(s.consumers[0].delivered, 4u);
}

TEST(metrics, registry_numbers_connections_and_forgets_those_the_face_dropped) {
  registry reg;
  auto a = reg.add_connection("a");
  auto b = reg.add_connection("b");
  EXPECT_EQ(a->id(), 1u);
  EXPECT_EQ(b->id(), 2u);
  a.reset();
  const snapshot s = reg.take();
  ASSERT_EQ(s.connections.size(), 1u);
  EXPECT_EQ(s.connections[0].id, 2u);
  EXPECT_EQ(reg.add_connection()->id(), 3u);
}

TEST(metrics, a_registry_keeping_connections_lists_dropped_ones_with_their_final_counts) {
  registry reg(true);
  auto a = reg.add_connection("a");
  a->add_channel(1)->on_published(5);  // the channel dropped at once: folded into the totals
  a.reset();
  reg.add_connection("b");
  const snapshot s = reg.take();
  ASSERT_EQ(s.connections.size(), 2u);
  EXPECT_EQ(s.connections[0].name, "a");
  EXPECT_EQ(s.connections[0].publishes.published, 5u);
  EXPECT_EQ(s.connections[1].name, "b");
}

// Recording from the threads that would record in the engine (two publishers under a publish
// lock, one I/O thread, two workers, a channel opened and closed over and over) while another
// thread snapshots: TSan-clean, counters never go down, effects never outnumber causes, and the
// final counts are exact.
TEST(metrics, snapshots_while_every_kind_of_thread_records_are_consistent_and_exact) {
  registry reg;
  auto conn = reg.add_connection("stress");
  auto ch = conn->add_channel(1);
  auto consumer = ch->add_consumer("c");
  constexpr std::uint64_t per_publisher = 20000, deliveries = 30000, churn_rounds = 300;

  std::mutex publish_lock;
  std::uint64_t published_seq = 0;  // under publish_lock
  std::atomic<std::uint64_t> handed{0}, claimed{0}, handled{0};
  std::atomic<bool> publishers_done{false}, io_done{false}, stop_snapshots{false};

  auto publisher = [&] {
    for (std::uint64_t i = 0; i < per_publisher; ++i) {
      std::lock_guard lock(publish_lock);
      ch->on_published();
      conn->on_publish_frames_sent(3);
      ++published_seq;
    }
  };
  std::thread p1(publisher), p2(publisher);

  std::thread io([&] {
    std::uint64_t settled = 0, delivered = 0, acked = 0;
    for (;;) {
      std::uint64_t target;
      {
        std::lock_guard lock(publish_lock);
        target = published_seq;
      }
      for (; settled < target; ++settled) {
        switch (settled % 3) {
          case 0:
            ch->on_confirmed();
            break;
          case 1:
            ch->on_nacked();
            break;
          default:
            ch->on_in_doubt();
        }
        ch->record_confirm_latency(1000 + settled % 5000);
      }
      if (delivered < deliveries) {
        ch->on_delivered(10);
        consumer->on_delivered(10);
        delivered += 10;
        handed.store(delivered, std::memory_order_release);
      }
      const std::uint64_t h = handled.load(std::memory_order_acquire);
      if (h > acked) {
        ch->on_delivery_acked(h - acked);
        acked = h;
      }
      conn->on_socket_read(100);
      conn->on_frames_received(2);
      if (publishers_done.load() && settled == 2 * per_publisher && acked == deliveries) break;
      std::this_thread::yield();
    }
    io_done.store(true);
  });

  auto worker = [&] {
    for (;;) {
      std::uint64_t c = claimed.load();
      if (c >= deliveries) return;
      if (c >= handed.load(std::memory_order_acquire)) {
        std::this_thread::yield();
        continue;
      }
      if (!claimed.compare_exchange_weak(c, c + 1)) continue;
      ch->record_handled(500 + c % 100);
      consumer->on_handled();
      handled.fetch_add(1, std::memory_order_release);
    }
  };
  std::thread w1(worker), w2(worker);

  std::thread churn([&] {
    for (std::uint64_t i = 0; i < churn_rounds; ++i) {
      auto other = conn->add_channel(2);  // this thread is its publisher and its I/O thread
      other->on_published(2);
      other->on_confirmed(2);
      other->record_confirm_latency(7000, 2);
      other->mark_closed();
    }
  });

  std::thread snapshots([&] {
    connection_snapshot prev;
    std::uint64_t prev_hist = 0;
    int taken = 0;
    while (!stop_snapshots.load() || taken < 10) {
      const snapshot s = reg.take();
      ++taken;
      ASSERT_EQ(s.connections.size(), 1u);
      const connection_snapshot& c = s.connections[0];
      const publish_counts& p = c.publishes;
      const delivery_counts& d = c.deliveries;
      EXPECT_LE(p.confirmed + p.nacked + p.in_doubt, p.published);
      EXPECT_LE(d.acked + d.nacked + d.rejected, d.delivered);
      EXPECT_GE(p.published, prev.publishes.published);
      EXPECT_GE(p.confirmed, prev.publishes.confirmed);
      EXPECT_GE(d.delivered, prev.deliveries.delivered);
      EXPECT_GE(d.acked, prev.deliveries.acked);
      EXPECT_GE(c.transport.frames_sent, prev.transport.frames_sent);
      EXPECT_GE(c.transport.bytes_received, prev.transport.bytes_received);
      EXPECT_GE(c.publish_to_confirm.count(), prev_hist);
      for (const channel_snapshot& chs : c.channels) {
        EXPECT_LE(chs.publishes.confirmed + chs.publishes.nacked + chs.publishes.in_doubt,
                  chs.publishes.published);
        for (const consumer_snapshot& cs : chs.consumers) EXPECT_GE(cs.pending, 0);
      }
      prev_hist = c.publish_to_confirm.count();
      prev = c;
    }
  });

  p1.join();
  p2.join();
  publishers_done.store(true);
  w1.join();
  w2.join();
  io.join();
  churn.join();
  stop_snapshots.store(true);
  snapshots.join();

  const connection_snapshot c = reg.take().connections.at(0);
  const std::uint64_t total = 2 * per_publisher;
  EXPECT_EQ(c.publishes.published, total + 2 * churn_rounds);
  EXPECT_EQ(c.publishes.confirmed + c.publishes.nacked + c.publishes.in_doubt,
            total + 2 * churn_rounds);
  EXPECT_EQ(c.publish_to_confirm.count(), total + 2 * churn_rounds);
  EXPECT_EQ(c.deliveries.delivered, deliveries);
  EXPECT_EQ(c.deliveries.acked, deliveries);
  EXPECT_EQ(c.delivery_to_handled.count(), deliveries);
  EXPECT_EQ(c.transport.frames_sent, 3 * total);
  ASSERT_EQ(c.channels.size(), 1u);  // every churned channel was closed
  ASSERT_EQ(c.channels[0].consumers.size(), 1u);
  EXPECT_EQ(c.channels[0].consumers[0].pending, 0);
  EXPECT_EQ(c.channels[0].consumers[0].delivered, deliveries);
}

}  // namespace
}  // namespace warren::metrics
