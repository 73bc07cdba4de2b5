#include "engine/protocol/recovery.h"

#include <gtest/gtest.h>

#include <set>

#include "tests/engine/protocol/channel_harness.h"

namespace warren::protocol {
namespace {

using namespace std::chrono_literals;
using kind = replay_step::kind;

// Classification ----------------------------------------------------------------------------------

TEST(recovery_classify, transport_heartbeat_and_broker_close_recover_a_client_close_never) {
  const recovery_policy p;
  const close_reason lost{320, "CONNECTION_FORCED - connection lost: EOF", 0, 0, true};
  const close_reason heartbeats{320, "CONNECTION_FORCED - Too many heartbeats missed", 0, 0, false};
  const close_reason forced{320, "CONNECTION_FORCED - broker forced connection closure", 0, 0,
                            true};
  const close_reason internal{541, "INTERNAL_ERROR", 0, 0, true};
  EXPECT_EQ(classify_loss(lost, false), recovery_trigger::transport);
  EXPECT_EQ(classify_loss(heartbeats, false), recovery_trigger::missed_heartbeats);
  EXPECT_EQ(classify_loss(forced, false), recovery_trigger::broker_close);
  EXPECT_EQ(classify_loss(internal, false), recovery_trigger::broker_close);
  for (const close_reason& r : {lost, heartbeats, forced, internal}) {
    EXPECT_TRUE(should_recover(classify_loss(r, false), p)) << r.reply_text;
    EXPECT_EQ(classify_loss(r, true), recovery_trigger::none);
    EXPECT_FALSE(should_recover(classify_loss(r, true), p));
  }
  EXPECT_TRUE(should_recover(recovery_trigger::write_deadline, p));
}

TEST(recovery_classify, refused_login_recovers_only_when_asked_and_protocol_errors_never) {
  const close_reason refused{403, "ACCESS_REFUSED - Login was refused", 10, 11, true};
  const close_reason vhost{530, "NOT_ALLOWED - vhost not found", 10, 40, true};
  const close_reason syntax{502, "SYNTAX_ERROR", 0, 0, true};
  const close_reason not_impl{540, "NOT_IMPLEMENTED", 0, 0, true};
  recovery_policy p;
  EXPECT_EQ(classify_loss(refused, false), recovery_trigger::refused_login);
  EXPECT_EQ(classify_loss(vhost, false), recovery_trigger::refused_login);
  EXPECT_FALSE(should_recover(recovery_trigger::refused_login, p));
  p.on_refused_login = true;
  EXPECT_TRUE(should_recover(recovery_trigger::refused_login, p));
  EXPECT_EQ(classify_loss(syntax, false), recovery_trigger::fatal);
  EXPECT_EQ(classify_loss(not_impl, false), recovery_trigger::fatal);
  EXPECT_FALSE(should_recover(recovery_trigger::fatal, p));
  p.enabled = false;
  EXPECT_FALSE(should_recover(recovery_trigger::transport, p));
}

// Backoff ----------------------------------------------------------------------------------------

TEST(recovery_backoff, grows_by_the_multiplier_up_to_max_with_jitter_below_it) {
  const recovery_policy p{
      .initial_delay = 100ms, .max_delay = 1000ms, .multiplier = 2.0, .jitter = 0.5};
  EXPECT_EQ(backoff_bounds(p, 1).second, 100ms);
  EXPECT_EQ(backoff_bounds(p, 1).first, 50ms);
  EXPECT_EQ(backoff_bounds(p, 2).second, 200ms);
  EXPECT_EQ(backoff_bounds(p, 4).second, 800ms);
  EXPECT_EQ(backoff_bounds(p, 5).second, 1000ms);
  EXPECT_EQ(backoff_bounds(p, 5).first, 500ms);
  EXPECT_EQ(backoff_bounds(p, 1000).second, 1000ms);  // no overflow however long it goes on
}

TEST(recovery_backoff, jittered_waits_between_failed_rounds_stay_within_bounds_and_vary) {
  const recovery_policy p{.initial_delay = 100ms, .max_delay = 400ms, .jitter = 0.5};
  const time_point t0 = time_point{} + 1h;
  std::set<std::int64_t> seen;
  for (std::uint64_t seed = 1; seed <= 50; ++seed) {
    recovery_schedule s(p, 1, 0, t0, seed);
    time_point now = t0;
    for (std::uint32_t round = 1; round <= 6; ++round) {
      auto a = s.next();
      ASSERT_TRUE(a);
      EXPECT_EQ(a->round, round);
      const auto wait = a->at - now;
      if (round == 1) {
        EXPECT_EQ(wait, 0ns) << "the first attempt after a loss waits for nothing";
      } else {
        const auto [low, high] = backoff_bounds(p, round - 1);
        EXPECT_GE(wait, low) << "seed " << seed << " round " << round;
        EXPECT_LE(wait, high) << "seed " << seed << " round " << round;
        if (round == 2) seen.insert(wait.count());
      }
      now = a->at + 3ms;  // the attempt failed a little later
      s.failed(a->number, now);
    }
  }
  EXPECT_GT(seen.size(), 10u) << "jitter spreads the waits of different clients";
}

TEST(recovery_backoff, max_attempts_ends_the_schedule_and_zero_means_forever) {
  const time_point t0 = time_point{} + 1h;
  recovery_schedule limited({.max_attempts = 3}, 2, 0, t0, 7);
  for (int i = 0; i < 3; ++i) {
    auto a = limited.next();
    ASSERT_TRUE(a);
    limited.failed(a->number, a->at);
  }
  EXPECT_FALSE(limited.next());
  EXPECT_FALSE(limited.next());
  recovery_schedule forever({.max_attempts = 0}, 1, 0, t0, 7);
  for (int i = 0; i < 1000; ++i) {
    auto a = forever.next();
    ASSERT_TRUE(a);
    forever.failed(a->number, a->at);
  }
}

// Endpoints --------------------------------------------------------------------------------------

TEST(recovery_endpoints, after_a_loss_the_next_endpoint_is_tried_at_once_and_the_lost_one_last) {
  const time_point t0 = time_point{} + 1h;
  const recovery_policy p{.initial_delay = 100ms, .max_delay = 100ms, .jitter = 0};
  recovery_schedule s(p, 3, 1, t0, 1);  // endpoint 1 was lost
  std::vector<std::size_t> order;
  std::vector<time_point> at;
  time_point now = t0;
  for (int i = 0; i < 6; ++i) {
    auto a = s.next();
    ASSERT_TRUE(a);
    order.push_back(a->endpoint);
    at.push_back(a->at);
    now = std::max(now, a->at) + 1ms;
    s.failed(a->number, now);
  }
  EXPECT_EQ(order, (std::vector<std::size_t>{2, 0, 1, 2, 0, 1}));
  EXPECT_EQ(at[0], t0);
  EXPECT_EQ(at[1], t0 + 1ms) << "no wait between endpoints of one round";
  EXPECT_EQ(at[2], t0 + 2ms);
  EXPECT_EQ(at[3], t0 + 3ms + 100ms) << "the backoff comes between failed rounds";
  EXPECT_EQ(at[4], t0 + 3ms + 100ms + 1ms);
}

TEST(recovery_endpoints, one_endpoint_retries_that_endpoint) {
  const time_point t0 = time_point{} + 1h;
  recovery_schedule s({}, 1, 0, t0, 1);
  for (int i = 0; i < 5; ++i) {
    auto a = s.next();
    ASSERT_TRUE(a);
    EXPECT_EQ(a->endpoint, 0u);
    s.failed(a->number, a->at);
  }
}

TEST(recovery_endpoints, allocation_in_order_round_robin_and_shuffled) {
  const std::vector<std::string> e{"a:1", "b:2", "c:3"};
  EXPECT_EQ(endpoint_list(e, endpoint_allocation::in_order, 5, 1).order(), e);
  EXPECT_EQ(endpoint_list(e, endpoint_allocation::round_robin, 0, 1).order(), e);
  EXPECT_EQ(endpoint_list(e, endpoint_allocation::round_robin, 1, 1).order(),
            (std::vector<std::string>{"b:2", "c:3", "a:1"}));
  EXPECT_EQ(endpoint_list(e, endpoint_allocation::round_robin, 5, 1).order(),
            (std::vector<std::string>{"c:3", "a:1", "b:2"}));
  std::set<std::vector<std::string>> orders;
  for (std::uint64_t c = 0; c < 40; ++c) {
    const endpoint_list l(e, endpoint_allocation::shuffled, c, 99);
    std::vector<std::string> sorted = l.order();
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, e) << "a shuffle keeps every endpoint once";
    orders.insert(l.order());
  }
  EXPECT_EQ(orders.size(), 6u) << "40 connections see every order of 3 endpoints";
  EXPECT_EQ(endpoint_list(e, endpoint_allocation::shuffled, 3, 99).order(),
            endpoint_list(e, endpoint_allocation::shuffled, 3, 99).order());
  EXPECT_EQ(endpoint_list({}, endpoint_allocation::shuffled, 3, 99).size(), 0u);
}

TEST(recovery_endpoints, a_late_answer_for_an_attempt_given_up_is_refused) {
  const time_point t0 = time_point{} + 1h;
  recovery_schedule s({}, 2, 0, t0, 1);
  auto first = s.next();
  s.failed(first->number, t0 + 5s);  // e.g. its connect timed out
  auto second = s.next();
  EXPECT_FALSE(s.current(first->number));
  EXPECT_FALSE(s.succeeded(first->number)) << "the first attempt's socket connected too late";
  EXPECT_TRUE(s.current(second->number));
  EXPECT_TRUE(s.succeeded(second->number));
  EXPECT_FALSE(s.current(second->number)) << "nothing is current once recovered";
  EXPECT_FALSE(s.next());
}

// The replay plan --------------------------------------------------------------------------------

topology_record sample_topology() {
  topology t;
  t.declare_exchange("x1", "direct", {});
  t.declare_exchange("x2", "fanout", {});
  t.declare_queue("orders", {.durable = true}, false);
  t.declare_queue("amq.gen-old", {.exclusive = true}, true);
  t.bind(binding_record::kind::queue, "amq.gen-old", "x1", "k", {});
  t.bind(binding_record::kind::queue, "orders", "x1", "o", {});
  t.bind(binding_record::kind::exchange, "x2", "x1", "e2e", {});
  t.consume({1, "amq.gen-old", "ctag-a", false, false, false, {}});
  t.consume({2, "orders", "ctag-b", true, false, false, {}});
  t.consume({3, "orders", "ctag-gone", false, false, false, {}});  // channel 3 was closed
  return t.record();
}

std::vector<channel_replay> sample_channels() {
  channel_replay one{1, {}};
  one.settings.qos_per_consumer = qos_settings{0, 10, false};
  one.settings.qos_global = qos_settings{0, 100, true};
  one.settings.confirms = confirm_tracker_options{500, {}};
  channel_replay two{2, {}};
  two.settings.tx = true;
  two.settings.client_flow = false;
  return {two, one};  // the plan orders channels by id
}

std::string describe_steps(const replay_plan& p) {
  std::string out;
  for (const replay_step& s : p.steps()) {
    out += std::string(to_string(s.what)) + "@" + std::to_string(s.channel) + ";";
  }
  return out;
}

TEST(recovery_replay, channels_and_their_settings_first_then_exchanges_queues_bindings_consumers) {
  const replay_plan p(sample_channels(), sample_topology());
  EXPECT_EQ(describe_steps(p),
            "channel.open@1;basic.qos global@1;basic.qos@1;confirm.select@1;"
            "channel.open@2;tx.select@2;channel.flow@2;"
            "exchange.declare@0;exchange.declare@0;queue.declare@0;queue.declare@0;"
            "bind@0;bind@0;bind@0;basic.consume@1;basic.consume@2;");
  const auto& s = p.steps();
  EXPECT_EQ(p.channel(s[0]).settings.qos_global->prefetch_count, 100);
  EXPECT_EQ(p.channel(s[3]).settings.confirms->window, 500u);
  EXPECT_EQ(p.exchange(s[7]).name, "x1");
  EXPECT_EQ(p.declare_name(s[9]), "orders");
  EXPECT_EQ(p.declare_name(s[10]), "") << "a server-named queue is named by the broker again";
  EXPECT_EQ(p.consumer(s[14]).consumer_tag, "ctag-a");
}

TEST(recovery_replay, a_renamed_server_named_queue_takes_its_bindings_and_consumers_along) {
  replay_plan p(sample_channels(), sample_topology());
  for (const replay_step& s : p.steps()) {
    if (s.what == kind::queue) {
      p.succeeded(s, p.queue(s).server_named ? "amq.gen-new" : p.queue(s).name);
    } else if (s.what == kind::binding) {
      if (p.binding(s).routing_key == "k") {
        EXPECT_EQ(p.binding(s).destination, "amq.gen-new");
      }
      if (p.binding(s).routing_key == "e2e") {
        EXPECT_EQ(p.binding(s).destination, "x2");
      }
      p.succeeded(s);
    } else if (s.what == kind::consumer) {
      if (p.consumer(s).consumer_tag == "ctag-a") {
        EXPECT_EQ(p.consumer(s).queue, "amq.gen-new");
      }
      if (p.consumer(s).consumer_tag == "ctag-b") {
        EXPECT_EQ(p.consumer(s).queue, "orders");
      }
      p.succeeded(s);
    } else {
      p.succeeded(s);
    }
  }
  const recovery_report& r = p.report();
  ASSERT_EQ(r.renamed_queues.size(), 1u);
  EXPECT_EQ(r.renamed_queues[0],
            (std::pair<std::string, std::string>{"amq.gen-old", "amq.gen-new"}));
  EXPECT_EQ(r.channels, 2u);
  EXPECT_EQ(r.exchanges, 2u);
  EXPECT_EQ(r.queues, 2u);
  EXPECT_EQ(r.bindings, 3u);
  EXPECT_EQ(r.consumers, 2u);
  EXPECT_TRUE(r.failures.empty());
}

TEST(recovery_replay, a_failed_entity_is_reported_and_the_others_still_replay) {
  replay_plan p(sample_channels(), sample_topology());
  for (const replay_step& s : p.steps()) {
    if (s.what == kind::queue && p.queue(s).name == "orders") {
      p.failed(s, 406, "PRECONDITION_FAILED - inequivalent arg 'durable'");
    } else {
      p.succeeded(s, s.what == kind::queue ? std::string_view(p.queue(s).name) : "");
    }
  }
  const recovery_report& r = p.report();
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_EQ(r.failures[0].entity, "queue 'orders'");
  EXPECT_EQ(r.failures[0].reply_code, 406);
  EXPECT_NE(r.failures[0].reply_text.find("inequivalent"), std::string::npos);
  EXPECT_EQ(r.queues, 1u);
  EXPECT_EQ(r.bindings, 3u);
  EXPECT_EQ(r.consumers, 2u);
  EXPECT_TRUE(r.renamed_queues.empty()) << "the same name back is no rename";
}

TEST(recovery_replay, the_filter_leaves_entities_out_and_consumers_of_closed_channels_go) {
  topology_filter f;
  f.exchanges = [](const exchange_record& e) { return e.name != "x2"; };
  f.bindings = [](const binding_record& b) { return b.what == binding_record::kind::queue; };
  f.consumers = [](const consumer_record& c) { return c.consumer_tag != "ctag-b"; };
  const replay_plan p(sample_channels(), sample_topology(), f);
  std::vector<std::string> names;
  for (const replay_step& s : p.steps()) {
    if (s.what == kind::exchange) names.push_back(p.exchange(s).name);
    if (s.what == kind::binding) names.push_back(p.binding(s).routing_key);
    if (s.what == kind::consumer) names.push_back(p.consumer(s).consumer_tag);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"x1", "k", "o", "ctag-a"}));
}

// The channel core across a loss
// -------------------------------------------------------------------

struct core_fixture : test::connection_harness {
  test::recording_handler events;
  std::unique_ptr<channel_core> core;
  void open_core() {
    core = std::make_unique<channel_core>(1, *this, events);
    ASSERT_TRUE(table.take(1));
    table.attach(*core);
    core->open(nullptr);
    feed(peer.channel_open_ok(1));
    ASSERT_TRUE(core->is_open());
    written();
  }
};

TEST(recovery_channel_core, a_loss_ends_unconfirmed_publishes_in_doubt_never_nacked) {
  core_fixture f;
  f.connect();
  f.open_core();
  auto sel = std::make_shared<test::test_waiter>();
  f.core->confirm_select_sent({10, {}}, sel);
  f.feed(f.peer.method(1, codec::confirm_select_ok{}));
  for (std::uint64_t i = 1; i <= 3; ++i) f.core->confirms()->on_publish(i, f.now);
  f.feed(f.peer.method(1, codec::basic_ack{1, false}));
  f.machine->transport_closed("EOF");
  ASSERT_EQ(f.events.confirms.size(), 3u);
  EXPECT_EQ(f.events.confirms[0].outcome, confirm_outcome::ack);
  EXPECT_EQ(f.events.confirms[1].outcome, confirm_outcome::in_doubt);
  EXPECT_EQ(f.events.confirms[2].outcome, confirm_outcome::in_doubt);
}

TEST(recovery_channel_core, kept_publishes_are_handed_over_in_order_and_not_completed) {
  core_fixture f;
  f.connect();
  f.open_core();
  f.core->keep_unconfirmed_on_loss(true);
  auto sel = std::make_shared<test::test_waiter>();
  f.core->confirm_select_sent({10, {}}, sel);
  f.feed(f.peer.method(1, codec::confirm_select_ok{}));
  for (std::uint64_t i = 1; i <= 4; ++i) f.core->confirms()->on_publish(100 + i, f.now);
  f.feed(f.peer.method(1, codec::basic_ack{2, true}));
  f.machine->transport_closed("EOF");
  ASSERT_EQ(f.events.confirms.size(), 2u) << "only the acked ones completed";
  ASSERT_EQ(f.events.kept.size(), 2u);
  EXPECT_EQ(f.events.kept[0].token, 103u);
  EXPECT_EQ(f.events.kept[0].sequence, 3u);
  EXPECT_EQ(f.events.kept[1].token, 104u);
  EXPECT_EQ(f.events.kept_holding_lock, 2);
}

TEST(recovery_channel_core, a_new_life_restarts_sequences_and_refuses_the_old_lifes_decisions) {
  core_fixture f;
  f.connect();
  f.open_core();
  auto sel = std::make_shared<test::test_waiter>();
  f.core->confirm_select_sent({10, {}}, sel);
  f.feed(f.peer.method(1, codec::confirm_select_ok{}));
  const std::uint32_t old_life = f.core->life();
  auto consume = std::make_shared<test::test_waiter>();
  f.core->consume_sent(std::make_unique<test::test_consumer>("ctag", false, "c"), consume);
  f.feed(f.peer.method(1, codec::basic_consume_ok{"ctag"}).deliver(1, 1, "body"));
  ASSERT_EQ(f.events.deliveries.size(), 1u);
  f.core->confirms()->on_publish(1, f.now);
  f.core->confirms()->on_publish(2, f.now);
  f.machine->transport_closed("EOF");

  // The recovered connection: a new machine, the same channel id, a new life.
  f.peer = test::scripted_peer{};
  f.connect();
  f.table.attach(*f.core);
  f.core->open(nullptr);
  f.feed(f.peer.channel_open_ok(1));
  ASSERT_TRUE(f.core->is_open());
  EXPECT_NE(f.core->life(), old_life);
  auto sel2 = std::make_shared<test::test_waiter>();
  f.core->confirm_select_sent({10, {}}, sel2);
  f.feed(f.peer.method(1, codec::confirm_select_ok{}));
  EXPECT_EQ(f.core->confirms()->on_publish(7, f.now), 1u) << "sequences restart at 1";
  f.written();
  EXPECT_FALSE(f.core->ack(old_life, 1, false, f.now))
      << "a delivery of the dead connection cannot be acked on the new one";
  f.core->flush_acks();
  EXPECT_TRUE(test::frames_of<codec::basic_ack>(f.written()).empty());
  const std::size_t before = f.events.confirms.size();
  f.feed(f.peer.method(1, codec::basic_ack{1, false}));
  ASSERT_EQ(f.events.confirms.size(), before + 1);
  EXPECT_EQ(f.events.confirms.back().token, 7u) << "the ack settles the new life's publish";
}

}  // namespace
}  // namespace warren::protocol
