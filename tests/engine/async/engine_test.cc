// The async engine's I/O loop and publish staging against a scripted peer on a socketpair (or a
// loopback TCP connection where receive batching needs one): confirms, back-pressure, a window, a
// peer that dies mid-frame, calls from the wrong thread, replies under receive batching,
// consumers coming and going.
#include "engine/async/engine.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/engine/async/scripted_peer.h"
#include "tests/engine/async/wait.h"
#include "tests/engine/io/test_support.h"

namespace warren::async {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using test::wait_until;

// `send_buffer` > 0 shrinks the client's socket send buffer (SO_SNDBUF), so that a peer that
// stops reading leaves frames unwritten however fast the I/O thread drains the staging buffer.
std::shared_ptr<connection> connect_peer(engine& e, test::scripted_peer& peer,
                                         int send_buffer = 0) {
  warren::connection_options o;
  o.host = "peer";
  io::unique_fd fd = peer.start();
  if (send_buffer > 0) {
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof send_buffer);
  }
  return e.adopt(std::move(fd), o);
}

// The same over loopback TCP: receive batching's SO_RCVLOWAT only holds bytes back there.
std::shared_ptr<connection> connect_peer_tcp(engine& e, test::scripted_peer& peer) {
  warren::connection_options o;
  o.host = "peer";
  return e.adopt(peer.start_tcp(), o);
}

TEST(engine_test, publishes_reach_the_peer_and_every_confirm_completes_once) {
  engine e({.io_threads = 1, .workers = 2});
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  ASSERT_TRUE(c->is_open());
  auto ch = c->open_channel();
  ch->confirm_select(100);
  std::atomic<int> acks{0}, others{0};
  std::mutex mu;
  std::vector<std::uint64_t> sequences;
  codec::basic_properties props;
  for (int i = 0; i < 10000; ++i) {
    const auto s = ch->publish("", "q", props, "sixteen bytes!!!", clock_type::now() + 5s, {},
                               [&](const confirm_result& r) {
                                 (r.what == confirm_result::outcome::ack ? acks : others)++;
                                 std::lock_guard lock(mu);
                                 sequences.push_back(r.sequence);
                               });
    ASSERT_EQ(s, publish_status::ok) << to_string(s);
  }
  ASSERT_TRUE(ch->wait_for_confirms(clock_type::now() + 5s));
  EXPECT_EQ(acks.load(), 10000);
  EXPECT_EQ(others.load(), 0);
  EXPECT_EQ(peer.publishes.load(), 10000u);
  std::lock_guard lock(mu);
  ASSERT_EQ(sequences.size(), 10000u);
  for (std::size_t i = 0; i < sequences.size(); ++i) EXPECT_EQ(sequences[i], i + 1);
  EXPECT_EQ(ch->outstanding_confirms(), 0u);
}

// The broker numbers every publish that follows confirm.select on the wire, the ones another
// thread makes while confirm_select still waits for select-ok included: those must be tracked
// with the numbers the broker gives them, or every later ack names the wrong publish.
TEST(engine_test, a_publish_made_while_confirm_select_waits_is_confirmed_with_its_broker_number) {
  engine e({.io_threads = 1, .workers = 2});
  test::scripted_peer peer;
  peer.select_ok_after_a_publish.store(true);
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  std::thread selector([&] { ch->confirm_select(100); });
  ASSERT_TRUE(wait_until([&] { return peer.confirm_selects.load() == 1; }, 10s));
  std::mutex mu;
  std::vector<confirm_result> results;
  auto record = [&](const confirm_result& r) {
    std::lock_guard lock(mu);
    results.push_back(r);
  };
  codec::basic_properties props;
  // confirm.select is on the wire and unanswered: the peer answers once it reads this publish.
  ASSERT_EQ(ch->try_publish("", "q", props, "racing", {}, record), publish_status::ok);
  selector.join();
  ASSERT_EQ(ch->try_publish("", "q", props, "after", {}, record), publish_status::ok);
  ASSERT_TRUE(ch->wait_for_confirms(clock_type::now() + 10s));
  EXPECT_TRUE(ch->is_open()) << "an ack for a number the engine never gave closes the channel";
  std::lock_guard lock(mu);
  ASSERT_EQ(results.size(), 2u) << "each publish completes once";
  for (std::size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].what, confirm_result::outcome::ack) << i;
    EXPECT_EQ(results[i].sequence, i + 1);
  }
}

TEST(engine_test, stalled_peer_turns_into_buffer_full_with_bounded_memory_then_recovers) {
  engine_options eo;
  eo.max_outgoing_bytes = 64 * 1024;
  engine e(eo);
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  peer.reading.store(false);
  const std::string body(1000, 'x');
  codec::basic_properties props;
  publish_status s = publish_status::ok;
  int accepted = 0;
  const auto give_up = clock_type::now() + 10s;
  // The socket buffers absorb a few hundred KiB before the stall reaches the engine: publish
  // until buffer_full holds across a pause in which the I/O thread could have written.
  int stable = 0;
  while (stable < 3 && clock_type::now() < give_up) {
    s = ch->try_publish("", "q", props, body);
    if (s == publish_status::ok) {
      ++accepted;
      stable = 0;
    } else {
      ++stable;
      std::this_thread::sleep_for(20ms);
    }
    EXPECT_LE(c->outgoing_bytes(), eo.max_outgoing_bytes + 2 * body.size());
  }
  EXPECT_EQ(s, publish_status::buffer_full) << to_string(s);
  EXPECT_GT(accepted, 10);
  // A publish with a deadline waits for room, and gives up when it passes.
  const auto t0 = clock_type::now();
  EXPECT_EQ(ch->publish("", "q", props, body, t0 + 50ms), publish_status::timeout);
  EXPECT_GE(clock_type::now() - t0, 50ms);
  peer.reading.store(true);
  EXPECT_EQ(ch->publish("", "q", props, body, clock_type::now() + 5s), publish_status::ok);
  const auto until = clock_type::now() + 5s;
  while (peer.publishes.load() < static_cast<std::uint64_t>(accepted + 1) &&
         clock_type::now() < until) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(peer.publishes.load(), static_cast<std::uint64_t>(accepted + 1));
  EXPECT_EQ(c->outgoing_bytes(), 0u);
}

TEST(engine_test, close_to_a_peer_that_stopped_reading_reports_the_frames_never_written) {
  engine_options eo;
  eo.max_outgoing_bytes = 64 * 1024;
  engine e(eo);
  test::scripted_peer peer;
  // A publish that times out below shows only that the I/O thread had not drained the buffer
  // within 200 ms; on a loaded machine a default-sized socket buffer could still take it all
  // afterwards, leaving nothing unwritten to report. 4 KiB cannot take 64 KiB.
  auto c = connect_peer(e, peer, 4096);
  auto ch = c->open_channel();  // no confirm mode: nothing per message would report the loss
  peer.reading.store(false);
  const std::string body(1000, 'x');
  codec::basic_properties props;
  const auto give_up = clock_type::now() + 10s;
  while (ch->publish("", "q", props, body, clock_type::now() + 200ms) == publish_status::ok &&
         clock_type::now() < give_up) {
  }
  ASSERT_GT(c->outgoing_bytes(), 0u);
  c->close();  // the peer never reads the close either: it times out
  EXPECT_FALSE(c->is_open());
  const std::string text = c->close_reason().reply_text;
  EXPECT_NE(text.find("close handshake timed out"), std::string::npos) << text;
  EXPECT_NE(text.find("octets of frames (publishes) were never written"), std::string::npos)
      << text;
}

TEST(engine_test, full_window_returns_window_full_and_close_fails_outstanding) {
  engine e;
  test::scripted_peer peer;
  peer.confirm.store(false);
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  ch->confirm_select(8);
  std::atomic<int> lost{0}, other{0};
  codec::basic_properties props;
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(ch->try_publish("", "q", props, "m", {},
                              [&](const confirm_result& r) {
                                (r.what == confirm_result::outcome::in_doubt ? lost : other)++;
                              }),
              publish_status::ok);
  }
  EXPECT_EQ(ch->try_publish("", "q", props, "m"), publish_status::window_full);
  EXPECT_EQ(ch->outstanding_confirms(), 8u);
  EXPECT_FALSE(ch->wait_for_confirms(clock_type::now() + 20ms));
  c->close();
  EXPECT_FALSE(c->is_open());
  EXPECT_EQ(lost.load(), 8);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(ch->try_publish("", "q", props, "m"), publish_status::closed);
}

TEST(engine_test, peer_dying_mid_frame_reports_every_outstanding_confirm_in_doubt) {
  engine e;
  test::scripted_peer peer;
  peer.confirm.store(false);
  peer.die_after_publishes.store(50);
  auto c = connect_peer(e, peer);
  std::atomic<bool> closed_called{false};
  c->on_closed([&](const protocol::close_reason&) { closed_called.store(true); });
  auto ch = c->open_channel();
  ch->confirm_select(1000);
  std::atomic<int> lost{0}, other{0};
  int accepted = 0;
  codec::basic_properties props;
  for (int i = 0; i < 200; ++i) {
    const auto s = ch->try_publish("", "q", props, "payload", {}, [&](const confirm_result& r) {
      (r.what == confirm_result::outcome::in_doubt ? lost : other)++;
    });
    if (s == publish_status::ok) ++accepted;
    if (i == 100) std::this_thread::sleep_for(20ms);  // let the peer see 50 and die
  }
  const auto until = clock_type::now() + 5s;
  while (lost.load() + other.load() < accepted && clock_type::now() < until) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(lost.load(), accepted);
  EXPECT_EQ(other.load(), 0);
  EXPECT_GE(accepted, 50);
  EXPECT_FALSE(c->is_open());
  EXPECT_TRUE(closed_called.load());
  EXPECT_FALSE(c->close_reason().reply_text.empty());
  EXPECT_EQ(ch->try_publish("", "q", props, "m"), publish_status::closed);
  EXPECT_THROW(ch->queue_declare("q"), recoverable_connection_error);
  EXPECT_THROW(c->open_channel(), recoverable_connection_error);
}

TEST(engine_test, connect_to_a_peer_that_never_speaks_throws_amqp_timeout_naming_the_handshake) {
  // A listener whose backlog completes the TCP connect; nobody ever accepts or answers.
  io::test::listener silent;
  ASSERT_TRUE(silent.ok());
  engine e;
  warren::connection_options o;
  o.host = "127.0.0.1:" + std::to_string(silent.port());
  o.connect_timeout = warren::seconds_f(0.3);
  const auto start = clock_type::now();
  try {
    e.connect(o);
    ADD_FAILURE() << "connected to a peer that never answers";
  } catch (const amqp_timeout& ex) {
    EXPECT_NE(std::string(ex.what()).find("handshake"), std::string::npos) << ex.what();
    EXPECT_NE(std::string(ex.what()).find("300 ms"), std::string::npos) << ex.what();
  }
  EXPECT_LT(clock_type::now() - start, 5s);
}

TEST(engine_test, blocking_call_on_an_io_thread_throws_logic_error) {
  engine e;
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  ch->confirm_select(10);
  std::promise<std::string> what;
  codec::basic_properties props;
  ASSERT_EQ(ch->try_publish("", "q", props, "m", {},
                            [&](const confirm_result&) {
                              try {
                                ch->queue_declare("q");
                                what.set_value("no exception");
                              } catch (const std::logic_error& ex) {
                                what.set_value(ex.what());
                              } catch (...) {
                                what.set_value("other exception");
                              }
                            }),
            publish_status::ok);
  auto f = what.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_NE(f.get().find("I/O thread"), std::string::npos);
}

TEST(engine_test, many_threads_publish_on_one_channel_in_confirm_mode) {
  engine e({.io_threads = 2, .workers = 2});
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  ch->confirm_select(256);
  constexpr int threads = 4, per_thread = 5000;
  std::atomic<int> acks{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      codec::basic_properties props;
      for (int i = 0; i < per_thread; ++i) {
        const auto s = ch->publish("", "q", props, "m", clock_type::now() + 10s, {},
                                   [&](const confirm_result& r) {
                                     if (r.what == confirm_result::outcome::ack) acks++;
                                   });
        ASSERT_EQ(s, publish_status::ok);
      }
    });
  }
  for (auto& t : ts) t.join();
  ASSERT_TRUE(ch->wait_for_confirms(clock_type::now() + 10s));
  EXPECT_EQ(acks.load(), threads * per_thread);
  EXPECT_EQ(peer.publishes.load(), static_cast<std::uint64_t>(threads * per_thread));
}

TEST(engine_test, unanswered_publishes_complete_with_timeout) {
  engine e;
  test::scripted_peer peer;
  peer.confirm.store(false);
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  ch->confirm_select(100, 50ms);
  std::atomic<int> timeouts{0}, other{0};
  codec::basic_properties props;
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(ch->try_publish("", "q", props, "m", {},
                              [&](const confirm_result& r) {
                                (r.what == confirm_result::outcome::timeout ? timeouts : other)++;
                              }),
              publish_status::ok);
  }
  EXPECT_TRUE(ch->wait_for_confirms(clock_type::now() + 5s));
  EXPECT_EQ(timeouts.load(), 10);
  EXPECT_EQ(other.load(), 0);
}

TEST(engine_test, channel_flow_and_connection_blocked_turn_publishes_into_blocked) {
  engine e;
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  ASSERT_EQ(ch->id(), 1);
  codec::basic_properties props;
  auto wait_for = [](auto pred) {
    const auto until = clock_type::now() + 5s;
    while (!pred() && clock_type::now() < until) std::this_thread::sleep_for(1ms);
    return pred();
  };
  peer.send_flow.store(0);
  ASSERT_TRUE(wait_for([&] { return !ch->flow_active(); }));
  EXPECT_EQ(ch->try_publish("", "q", props, "m"), publish_status::blocked);
  EXPECT_EQ(ch->publish("", "q", props, "m", clock_type::now() + 30ms), publish_status::timeout);
  peer.send_flow.store(1);
  EXPECT_EQ(ch->publish("", "q", props, "m", clock_type::now() + 5s), publish_status::ok);

  std::atomic<int> blocked_calls{0}, unblocked_calls{0};
  c->on_blocked([&](std::string_view reason) {
    if (reason == "low on memory") ++blocked_calls;
  });
  c->on_unblocked([&] { ++unblocked_calls; });
  peer.send_blocked.store(1);
  ASSERT_TRUE(wait_for([&] { return c->blocked(); }));
  EXPECT_EQ(blocked_calls.load(), 1);
  EXPECT_EQ(ch->try_publish("", "q", props, "m"), publish_status::blocked);
  std::thread unblock([&] {
    std::this_thread::sleep_for(50ms);
    peer.send_blocked.store(0);
  });
  // A publish waiting with a deadline goes through once the connection is unblocked.
  EXPECT_EQ(ch->publish("", "q", props, "m", clock_type::now() + 5s), publish_status::ok);
  unblock.join();
  EXPECT_TRUE(wait_for([&] { return unblocked_calls.load() == 1; }));  // runs after the state
  EXPECT_TRUE(wait_for([&] { return peer.publishes.load() == 2; }));
}

// Runs `call`, which must throw amqp_timeout, and returns how long it took.
template <class F>
clock_type::duration time_to_timeout(F call) {
  const auto t0 = clock_type::now();
  EXPECT_THROW(call(), amqp_timeout);
  return clock_type::now() - t0;
}

TEST(engine_test, rpc_timeout_defaults_to_sixty_seconds) {
  EXPECT_EQ(engine_options{}.rpc_timeout, 60s);
}

TEST(engine_test, calls_the_peer_never_answers_fail_with_amqp_timeout_after_rpc_timeout) {
  constexpr auto timeout = 300ms;
  constexpr auto slack = 2s;  // a loaded machine (TSan) may wake the caller late
  engine e({.rpc_timeout = timeout});
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();

  auto took = time_to_timeout([&] { ch->queue_declare("q"); });
  EXPECT_GE(took, timeout);
  EXPECT_LT(took, timeout + slack);
  // Its -ok might still come and answer the next call: the channel is closed, with the timeout
  // as its error, and every later call throws it at once.
  EXPECT_FALSE(ch->is_open());
  EXPECT_THROW(std::rethrow_exception(ch->error()), amqp_timeout);
  took = time_to_timeout([&] { ch->basic_get("q"); });
  EXPECT_LT(took, timeout);
  codec::basic_properties props;
  EXPECT_EQ(ch->try_publish("", "q", props, "m"), publish_status::closed);

  // The connection is unharmed: a call the peer answers still works on another channel.
  EXPECT_TRUE(c->is_open());
  auto other = c->open_channel();
  other->confirm_select(10);

  took = time_to_timeout([&] { other->tx_select(); });
  EXPECT_GE(took, timeout);
  EXPECT_LT(took, timeout + slack);

  took = time_to_timeout([&] { c->update_secret("new secret", "rotated"); });
  EXPECT_GE(took, timeout);
  EXPECT_LT(took, timeout + slack);
  EXPECT_TRUE(c->is_open());

  peer.answer_channel_open.store(false);
  took = time_to_timeout([&] { c->open_channel(); });
  EXPECT_GE(took, timeout);
  EXPECT_LT(took, timeout + slack);
  EXPECT_TRUE(c->is_open());
}

TEST(engine_test, nowait_calls_return_without_a_reply_and_leave_no_reply_expected) {
  // Long enough that a call waiting for a reply the peer never sends would be noticed.
  engine e({.rpc_timeout = 5s});
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  const std::uint64_t before = peer.unanswered.load();  // tune-ok
  const auto t0 = clock_type::now();
  const queue_declare_ok ok = ch->queue_declare("q", {.nowait = true});
  EXPECT_EQ(ok.queue, "q");
  EXPECT_EQ(ok.message_count, 0u);
  EXPECT_EQ(ok.consumer_count, 0u);
  ch->exchange_declare("x", "direct", {.nowait = true});
  ch->queue_bind("q", "x", "rk", {.nowait = true});
  ch->exchange_bind("x2", "x", "rk", {.nowait = true});
  ch->exchange_unbind("x2", "x", "rk", {.nowait = true});
  const std::string tag =
      ch->basic_consume("q", [](delivery&) {}, {.consumer_tag = "c1", .nowait = true});
  EXPECT_EQ(tag, "c1");
  ch->basic_cancel("c1", /*nowait=*/true);
  EXPECT_EQ(ch->queue_purge("q", /*nowait=*/true), 0u);
  EXPECT_EQ(ch->queue_delete("q", {.nowait = true}), 0u);
  ch->exchange_delete("x", /*if_unused=*/false, /*nowait=*/true);
  ch->basic_recover_async(true);
  EXPECT_LT(clock_type::now() - t0, 2s);
  EXPECT_TRUE(wait_until([&] { return peer.unanswered.load() - before == 11; }, 5s))
      << peer.unanswered.load() - before;
  // Had any of them left a reply expected, this -ok would be taken for it (or dropped) and the
  // call would time out.
  ch->confirm_select(10);
  EXPECT_TRUE(ch->is_open());
  // Recorded at once, as the waiting calls record on their -ok.
  const topology_record t = c->topology();
  EXPECT_TRUE(t.queues.empty());
  EXPECT_TRUE(t.exchanges.empty());
  EXPECT_TRUE(t.bindings.empty());
  EXPECT_TRUE(t.consumers.empty());
}

TEST(engine_test, nowait_consume_needs_a_consumer_tag) {
  engine e;
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  EXPECT_THROW(ch->basic_consume("q", [](delivery&) {}, {.nowait = true}), std::invalid_argument);
  EXPECT_TRUE(ch->is_open());
}

// channel::close, like every blocking call on a channel, goes after the decisions made on its
// deliveries before it. An ack made while the I/O thread is busy waits in that thread's queue;
// the close must send it, not drop it (the broker would requeue a message that was handled).
// Here the ack is made inside a confirm callback, which holds the I/O thread while the close is
// queued behind it (the 200 ms only make that order likely; without it the test cannot fail,
// never the other way round).
TEST(engine_test, channel_close_sends_the_acks_made_before_it_first) {
  engine e({.workers = 1});
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  auto publisher = c->open_channel();
  publisher->confirm_select(10);
  auto consumer = c->open_channel();
  std::mutex mu;
  std::optional<delivery> held;
  consumer->basic_consume("q",
                          [&](delivery& d) {
                            std::lock_guard lock(mu);
                            held = d;
                          },
                          {.consumer_tag = "c", .nowait = true});
  peer.deliver(consumer->id(), "c", 1, "m");
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard lock(mu);
    return held.has_value();
  }));
  std::atomic<bool> acked{false};
  codec::basic_properties props;
  ASSERT_EQ(publisher->try_publish("", "q", props, "m", {},
                                   [&](const confirm_result&) {
                                     std::lock_guard lock(mu);
                                     acked.store(held->ack());
                                     std::this_thread::sleep_for(200ms);
                                   }),
            publish_status::ok);
  ASSERT_TRUE(wait_until([&] { return acked.load(); }));
  consumer->close();
  // Sent before channel.close, so read by the peer before it answered close-ok.
  EXPECT_EQ(peer.acked(), std::vector<std::uint64_t>{1});
}

// Two reads within max_wait make a batching connection busy: its socket then wakes the I/O thread
// only once min_bytes are queued, or when the max_wait timer reads it. A reply left to that timer
// would take max_wait (4 s here); read as it arrives, it takes milliseconds. The handshake's
// frames (start, tune, open-ok) come in separate reads; the peer answers each queue.declare after
// two deliveries that the client reads one at a time, so the connection would turn busy while the
// call waits.
TEST(engine_test, receive_batching_reads_a_reply_at_once_after_deliveries_read_while_awaiting_it) {
  const receive_batching rx{.min_bytes = 256 * 1024, .max_wait = 4s};
  engine e({.workers = 1, .rx_batching = rx});
  test::scripted_peer peer;
  peer.answer_queue_declare.store(true);
  peer.deliveries_before_declare_ok.store(2);
  auto t0 = clock_type::now();
  auto c = connect_peer_tcp(e, peer);
  EXPECT_LT(clock_type::now() - t0, rx.max_wait / 2) << "connect";
  auto ch = c->open_channel();
  std::atomic<int> handled{0};
  ch->basic_consume("q", [&](delivery&) { ++handled; },
                    {.consumer_tag = "c1", .no_ack = true, .nowait = true});
  for (int i = 0; i < 3; ++i) {
    t0 = clock_type::now();
    EXPECT_EQ(ch->queue_declare("q").queue, "q");
    EXPECT_LT(clock_type::now() - t0, rx.max_wait / 2) << "call " << i;
  }
  EXPECT_TRUE(wait_until([&] { return handled.load() == 6; }));
  t0 = clock_type::now();
  c->close();
  EXPECT_LT(clock_type::now() - t0, rx.max_wait / 2) << "close";
}

// A call stops waiting for its reply when the reply comes, when its caller gives up after
// rpc_timeout, or when its channel or connection closes. Each way must end its count: one left
// counted would keep receive batching off for the connection's life.
TEST(engine_test, every_way_a_call_stops_waiting_for_its_reply_ends_its_count) {
  constexpr auto timeout = 300ms;
  engine e({.rpc_timeout = timeout});
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  using detail::test_probe;
  auto ch = c->open_channel();  // answered
  EXPECT_EQ(test_probe::replies_awaited(*c), 0u);
  peer.answer_queue_declare.store(true);
  ch->queue_declare("q");  // answered
  EXPECT_EQ(test_probe::replies_awaited(*c), 0u);
  peer.answer_queue_declare.store(false);
  EXPECT_THROW(ch->queue_declare("q"), amqp_timeout);  // abandoned; the channel closes
  EXPECT_EQ(test_probe::replies_awaited(*c), 0u);
  EXPECT_THROW(c->update_secret("s", "rotated"), amqp_timeout);
  EXPECT_EQ(test_probe::replies_awaited(*c), 0u);
  peer.answer_channel_open.store(false);
  EXPECT_THROW(c->open_channel(), amqp_timeout);
  EXPECT_EQ(test_probe::replies_awaited(*c), 0u);
  peer.answer_channel_open.store(true);
  c->open_channel()->close();  // close-ok
  EXPECT_EQ(test_probe::replies_awaited(*c), 0u);
  c->close();  // connection close-ok
  EXPECT_EQ(test_probe::replies_awaited(*c), 0u);
}

TEST(engine_test, calls_waiting_for_replies_when_the_connection_is_lost_end_their_count) {
  engine e({.rpc_timeout = 30s});  // the loss, not the timeout, must end the calls
  test::scripted_peer peer;
  peer.die_after_publishes.store(1);
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  auto other = c->open_channel();
  std::vector<std::thread> callers;
  std::atomic<int> lost{0};
  for (auto* on : {&ch, &ch, &other}) {
    callers.emplace_back([&, on] {
      try {
        (*on)->queue_declare("q");  // never answered
      } catch (const recoverable_connection_error&) {
        ++lost;
      }
    });
  }
  // Not an ASSERT: the callers must be joined however this turns out.
  EXPECT_TRUE(wait_until([&] { return detail::test_probe::replies_awaited(*c) == 3; }, 10s));
  codec::basic_properties props;
  ASSERT_EQ(other->try_publish("", "q", props, "m"), publish_status::ok);  // the peer dies
  for (auto& t : callers) t.join();
  EXPECT_EQ(lost.load(), 3);
  EXPECT_FALSE(c->is_open());
  EXPECT_EQ(detail::test_probe::replies_awaited(*c), 0u);
}

// A delivery still in flight for a consumer cancelled with no_ack is owed nothing (rejecting it
// would name a tag the broker considers settled: a channel error), so the channel remembers such
// consumers; a long-running service that consumes and cancels must not grow that memory.
TEST(engine_test, cancelled_no_ack_consumers_are_remembered_within_a_bound) {
  engine e({.workers = 1});
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  auto cycle = [&](int i) {
    const std::string tag = "c" + std::to_string(i);
    ch->basic_consume("q", [](delivery&) {}, {.consumer_tag = tag, .no_ack = true, .nowait = true});
    ch->basic_cancel(tag, /*nowait=*/true);
  };
#if defined(__SANITIZE_THREAD__)
  // Each cycle is three hand-offs to the I/O thread, which TSan slows tenfold (100,000 cycles:
  // 25-37 s); the bound shows as well after 10,000, and the races are the same.
  constexpr int cycles = 10'000, first = 1'000;
#else
  constexpr int cycles = 100'000, first = 1'000;
#endif
  const auto t0 = clock_type::now();
  for (int i = 0; i < first; ++i) cycle(i);
  const std::size_t after_first = detail::test_probe::cancelled_no_ack_remembered(*ch);
  // Four threads share the rest: each call waits for the I/O thread to queue its frame, and the
  // others keep it busy meanwhile (one thread alone takes twice as long).
  constexpr int threads = 4;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = first + t; i < cycles - 1; i += threads) cycle(i);
    });
  }
  for (auto& t : ts) t.join();
  cycle(cycles - 1);  // the last one cancelled, for the check below
  const std::size_t remembered = detail::test_probe::cancelled_no_ack_remembered(*ch);
  std::cout << cycles << " consume/cancel cycles in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0).count()
            << " ms; tags remembered after " << first << ": " << after_first << ", after " << cycles
            << ": " << remembered << "\n";
  EXPECT_LE(after_first, 64u);
  EXPECT_EQ(remembered, after_first);  // flat
  // The bound keeps the memory's purpose: a delivery in flight for the consumer cancelled last is
  // dropped, one for a consumer that acks is handed back (rejected with requeue). Rejects go out
  // in wire order, so once tag 2's is seen, one for tag 1 would have been seen before it.
  ch->basic_consume("q", [](delivery&) {}, {.consumer_tag = "acks", .nowait = true});
  ch->basic_cancel("acks", /*nowait=*/true);
  peer.deliver(1, "c" + std::to_string(cycles - 1), 1, "late");
  peer.deliver(1, "acks", 2, "late");
  EXPECT_TRUE(wait_until([&] { return !peer.rejected().empty(); }, 10s));
  EXPECT_EQ(peer.rejected(), std::vector<std::uint64_t>{2});
  EXPECT_TRUE(ch->is_open());
}

// A tag once used by a no-ack consumer and then by one that acks: a delivery in flight for the
// second is owed a decision, and gets it (rejected with requeue, not left unacknowledged).
TEST(engine_test, a_consumer_tag_reused_with_acks_is_not_taken_for_the_cancelled_no_ack_one) {
  engine e({.workers = 1});
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  ch->basic_consume("q", [](delivery&) {}, {.consumer_tag = "t", .no_ack = true, .nowait = true});
  ch->basic_cancel("t", /*nowait=*/true);
  ch->basic_consume("q", [](delivery&) {}, {.consumer_tag = "t", .nowait = true});
  ch->basic_cancel("t", /*nowait=*/true);
  peer.deliver(1, "t", 1, "late");
  EXPECT_TRUE(wait_until([&] { return !peer.rejected().empty(); }, 10s));
  EXPECT_EQ(peer.rejected(), std::vector<std::uint64_t>{1});
}

// Metrics and logging ---------------------------------------------------------------------------

TEST(engine_test, metrics_count_publishes_confirms_deliveries_decisions_and_the_transport) {
  engine e({.io_threads = 1, .workers = 1});
  test::scripted_peer peer;
  warren::connection_options o;
  o.host = "peer";
  o.connection_name = "orders";
  auto c = e.adopt(peer.start(), o);
  auto publisher = c->open_channel();
  publisher->confirm_select(100);
  codec::basic_properties props;
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(publisher->publish("", "q", props, "sixteen bytes!!!", clock_type::now() + 5s),
              publish_status::ok);
  }
  ASSERT_TRUE(publisher->wait_for_confirms(clock_type::now() + 5s));
  auto consumer = c->open_channel();
  consumer->basic_consume("q", [](delivery& d) { d.ack(); }, {.consumer_tag = "c", .nowait = true});
  for (std::uint64_t t = 1; t <= 3; ++t) peer.deliver(consumer->id(), "c", t, "m");
  // Handled, and the coalesced ack on the wire (the channel's idle flush sends it).
  ASSERT_TRUE(wait_until([&] { return !peer.acked().empty() && peer.acked().back() == 3; }, 10s));
  ASSERT_TRUE(wait_until(
      [&] {
        const metrics::connection_snapshot s = c->metrics();
        return s.deliveries.acked == 3 && s.delivery_to_handled.count() == 3;
      },
      10s));
  // The I/O thread counts a write once its system call returned, which may be after the peer
  // read the bytes: wait for the two counts to meet (nothing more is sent meanwhile).
  ASSERT_TRUE(
      wait_until([&] { return c->metrics().transport.bytes_sent == peer.bytes.load(); }, 10s))
      << c->metrics().transport.bytes_sent << " counted, " << peer.bytes.load() << " read";
  ASSERT_TRUE(
      wait_until([&] { return c->metrics().transport.frames_sent == peer.frames.load(); }, 10s))
      << c->metrics().transport.frames_sent << " counted, " << peer.frames.load() << " read";

  const metrics::connection_snapshot s = c->metrics();
  EXPECT_EQ(s.name, "orders");
  EXPECT_EQ(s.publishes.published, 100u);
  EXPECT_EQ(s.publishes.confirmed, 100u);
  EXPECT_EQ(s.publishes.in_doubt, 0u);
  EXPECT_EQ(s.publish_to_confirm.count(), 100u);
  EXPECT_EQ(s.deliveries.delivered, 3u);
  EXPECT_EQ(s.open_channels, 2u);
  ASSERT_EQ(s.channels.size(), 2u);
  EXPECT_EQ(s.channels[0].publishes.published, 100u);
  ASSERT_EQ(s.channels[1].consumers.size(), 1u);
  EXPECT_EQ(s.channels[1].consumers[0].tag, "c");
  EXPECT_EQ(s.channels[1].consumers[0].delivered, 3u);
  EXPECT_EQ(s.channels[1].consumers[0].pending, 0);
  // Every frame the peer read, counted once: the machine's, the channels' methods, the publishes.
  EXPECT_EQ(s.transport.frames_sent, peer.frames.load());
  EXPECT_GT(s.transport.frames_sent, 300u) << "100 publishes of 3 frames";
  EXPECT_GT(s.transport.frames_received, 9u) << "3 deliveries of 3 frames, and the replies";
  EXPECT_GT(s.transport.socket_writes, 0u);
  EXPECT_GT(s.transport.socket_reads, 0u);
  EXPECT_GE(s.transport.bytes_sent, 100u * 16);
  EXPECT_EQ(s.transport.bytes_sent, peer.bytes.load()) << "every octet written, counted once";

  const metrics::snapshot all = e.metrics();
  ASSERT_EQ(all.connections.size(), 1u);
  EXPECT_EQ(all.connections[0].id, s.id);

  c->close();
  EXPECT_EQ(c->metrics().publishes.published, 100u) << "kept after the close";
  EXPECT_EQ(c->metrics().open_channels, 0u);
}

TEST(engine_test, publishes_in_doubt_are_counted_when_the_connection_is_lost) {
  engine e({.io_threads = 1, .workers = 1});
  test::scripted_peer peer;
  peer.confirm.store(false);
  peer.die_after_publishes.store(3);
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  ch->confirm_select(100);
  codec::basic_properties props;
  for (int i = 0; i < 3; ++i) ASSERT_EQ(ch->try_publish("", "q", props, "m"), publish_status::ok);
  ASSERT_TRUE(wait_until([&] { return !c->is_open(); }, 10s));
  const metrics::connection_snapshot s = c->metrics();
  EXPECT_EQ(s.publishes.published, 3u);
  EXPECT_EQ(s.publishes.in_doubt, 3u);
  EXPECT_EQ(s.publishes.nacked, 0u);
}

TEST(engine_test, a_null_registry_records_nothing) {
  engine e({.io_threads = 1, .workers = 1, .metrics = nullptr});
  test::scripted_peer peer;
  auto c = connect_peer(e, peer);
  auto ch = c->open_channel();
  codec::basic_properties props;
  ASSERT_EQ(ch->try_publish("", "q", props, "m"), publish_status::ok);
  EXPECT_EQ(c->metrics().publishes.published, 0u);
  EXPECT_EQ(c->metrics().id, 0u);
  EXPECT_TRUE(e.metrics().connections.empty());
}

// What an operator reads: the logging hook's lines, as component/level/message.
struct log_lines {
  std::mutex mu;
  std::vector<std::string> lines;
  warren::logger make() {
    return warren::logger(
        [this](log_level level, std::string_view component, std::string_view message) {
          std::lock_guard lock(mu);
          lines.push_back(std::string(to_string(level)) + " " + std::string(component) + ": " +
                          std::string(message));
        });
  }
  std::vector<std::string> all() {
    std::lock_guard lock(mu);
    return lines;
  }
  bool has(std::string_view part) {
    for (const auto& l : all()) {
      if (l.find(part) != std::string::npos) return true;
    }
    return false;
  }
};

TEST(engine_test, the_log_hook_reports_blocked_unblocked_a_broker_cancel_and_the_connection_lost) {
  log_lines log;  // outlives the engine, whose connections may log until they are gone
  engine e({.io_threads = 1, .workers = 1});
  test::scripted_peer peer;
  peer.confirm.store(false);
  peer.die_after_publishes.store(1);
  warren::connection_options o;
  o.host = "peer";
  o.password = "hunter2-secret";
  o.connection_name = "ingest";
  o.log = log.make();
  auto c = e.adopt(peer.start(), o);
  auto ch = c->open_channel();
  ch->basic_consume("q", [](delivery&) {}, {.consumer_tag = "c", .nowait = true});
  peer.send_blocked.store(1);
  ASSERT_TRUE(wait_until([&] { return log.has("blocked by the broker"); }, 10s));
  peer.send_blocked.store(0);
  ASSERT_TRUE(wait_until([&] { return log.has("unblocked by the broker"); }, 10s));
  codec::basic_cancel cancel;
  cancel.consumer_tag = "c";
  peer.queue_method(ch->id(), cancel);
  ASSERT_TRUE(wait_until([&] { return log.has("cancelled by the broker"); }, 10s));
  codec::basic_properties props;
  ASSERT_EQ(ch->try_publish("", "q", props, "m"), publish_status::ok);  // the peer dies on it
  ASSERT_TRUE(wait_until([&] { return log.has("connection lost"); }, 10s));

  const std::vector<std::string> lines = log.all();
  ASSERT_EQ(lines.size(), 4u) << "nothing else is logged at info and above";
  EXPECT_EQ(lines[0].rfind("warning connection: ingest: blocked by the broker (low on memory)", 0),
            0u)
      << lines[0];
  EXPECT_EQ(lines[1].rfind("info connection: ingest: unblocked by the broker", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("warning consumer: consumer c on channel 1 cancelled by the broker", 0),
            0u)
      << lines[2];
  EXPECT_EQ(lines[3].rfind("warning connection: ingest: connection lost: ", 0), 0u) << lines[3];
  EXPECT_NE(lines[3].find("connection closed by peer"), std::string::npos) << lines[3];
  for (const auto& l : lines) EXPECT_EQ(l.find("hunter2"), std::string::npos) << l;
}

TEST(engine_test, our_own_close_is_logged_at_info_and_a_default_logger_is_silent) {
  log_lines log;  // outlives the engine
  engine e({.io_threads = 1, .workers = 1});
  test::scripted_peer peer;
  warren::connection_options o;
  o.host = "peer";
  o.log = log.make();
  auto c = e.adopt(peer.start(), o);
  c->close();
  ASSERT_EQ(log.all().size(), 1u);
  EXPECT_EQ(log.all()[0].rfind("info connection: closed: ", 0), 0u) << log.all()[0];
  EXPECT_NE(log.all()[0].find("(reply code 200)"), std::string::npos) << log.all()[0];
  test::scripted_peer quiet_peer;
  auto quiet = connect_peer(e, quiet_peer);  // no logger: nothing to call, nothing breaks
  quiet->close();
}

}  // namespace
}  // namespace warren::async
