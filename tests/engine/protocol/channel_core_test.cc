#include "engine/protocol/channel_core.h"

#include <gtest/gtest.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "tests/engine/protocol/channel_harness.h"

namespace warren::protocol {
namespace {

using namespace std::chrono_literals;
using test::client_output;
using test::frames_of;
using test::recording_handler;
using test::scripted_peer;
using test::test_consumer;
using test::test_waiter;

class channel_core_test : public ::testing::Test, public test::connection_harness {
 protected:
  void SetUp() override { connect(); }

  // A core on channel 1, attached to the table, opened (open-ok fed), output consumed.
  channel_core& open_core(channel_core_options o = {}) {
    core = std::make_unique<channel_core>(1, *this, events, o);
    EXPECT_TRUE(table.take(1));
    table.attach(*core);
    core->open(std::make_shared<test_waiter>());
    feed(peer.channel_open_ok(1));
    EXPECT_TRUE(core->is_open());
    written();
    return *core;
  }

  // basic.deliver for `consumer_tag`, its header and its body.
  void deliver(std::string_view consumer_tag, std::uint64_t delivery_tag,
               std::string_view body = "m", std::uint16_t channel = 1) {
    codec::basic_deliver m;
    m.consumer_tag = consumer_tag;
    m.delivery_tag = delivery_tag;
    m.exchange = "ex";
    m.routing_key = "rk";
    peer.method(channel, m).header(channel, body.size());
    if (!body.empty()) peer.body(channel, body);
  }

  // A consumer registered with a waited basic.consume (consume-ok fed).
  void consume(std::string tag, bool no_ack, std::string name) {
    auto w = std::make_shared<test_waiter>();
    core->consume_sent(std::make_unique<test_consumer>(tag, no_ack, name), w);
    feed(peer.method(1, codec::basic_consume_ok{tag}));
    ASSERT_TRUE(w->reply.has_value());
  }

  // confirm.select answered: confirm mode with `window` and `timeout`.
  void select_confirms(std::size_t window = 8, std::chrono::nanoseconds timeout = {}) {
    auto w = std::make_shared<test_waiter>();
    events.lock_publish();
    core->confirm_select_sent({window, timeout}, w);
    events.unlock_publish();
    feed(peer.method(1, codec::confirm_select_ok{}));
    ASSERT_NE(core->confirms(), nullptr);
  }

  // What a face does per publish: check the gate and register, under its publish lock.
  std::uint64_t publish(bool mandatory = false, std::string_view rk = "rk") {
    events.lock_publish();
    std::uint64_t seq = 0;
    if (core->can_publish() == channel_core::publish_gate::ok && core->confirms() != nullptr) {
      seq = core->confirms()->on_publish(0, now, mandatory, "ex", rk);
    }
    events.unlock_publish();
    return seq;
  }

  recording_handler events;
  std::unique_ptr<channel_core> core;
};

// Opening and the life -------------------------------------------------------------------------

TEST_F(channel_core_test, open_sends_channel_open_and_open_ok_begins_a_life) {
  core = std::make_unique<channel_core>(1, *this, events);
  table.take(1);
  table.attach(*core);
  EXPECT_EQ(core->state(), channel_state::closed);
  auto w = std::make_shared<test_waiter>();
  core->open(w);
  EXPECT_EQ(core->state(), channel_state::opening);
  EXPECT_EQ(core->life(), 1u);
  const client_output out = written();
  ASSERT_EQ(out.frames.size(), 1u);
  EXPECT_TRUE(out.frames[0].is<codec::channel_open>());
  feed(peer.channel_open_ok(1));
  EXPECT_TRUE(core->is_open());
  EXPECT_EQ(events.opened, 1);
  ASSERT_TRUE(w->reply.has_value());
  EXPECT_TRUE(w->reply->is<codec::channel_open_ok>());
}

TEST_F(channel_core_test, a_face_may_open_the_channel_again_from_on_ended_and_the_life_grows) {
  open_core();
  events.on_end = [&](end_cause cause) {
    if (cause == end_cause::closed_by_peer) core->open(std::make_shared<test_waiter>());
  };
  feed(peer.channel_close(1, 404, "NOT_FOUND - no queue 'q'", 50, 10));
  EXPECT_EQ(core->state(), channel_state::opening);
  EXPECT_EQ(core->life(), 2u);
  feed(peer.channel_open_ok(1));
  EXPECT_TRUE(core->is_open());
  ASSERT_EQ(events.ended.size(), 1u);
  EXPECT_EQ(events.ended[0].second.reply_code, 404);
}

// Replies ---------------------------------------------------------------------------------------

TEST_F(channel_core_test, replies_answer_calls_in_the_order_they_were_sent) {
  open_core();
  auto first = std::make_shared<test_waiter>();
  auto second = std::make_shared<test_waiter>();
  core->expect(codec::queue_declare_ok::id, first);
  core->expect(codec::queue_declare_ok::id, second);
  feed(peer.method(1, codec::queue_declare_ok{"q1", 1, 0}));
  ASSERT_TRUE(first->reply.has_value());
  EXPECT_FALSE(second->reply.has_value());
  feed(peer.method(1, codec::queue_declare_ok{"q2", 2, 0}));
  ASSERT_TRUE(second->reply.has_value());
  codec::queue_declare_ok ok;
  second->reply->decode(ok);
  EXPECT_EQ(ok.queue, "q2");
}

TEST_F(channel_core_test, a_call_that_gave_up_keeps_its_place_and_its_late_reply_answers_no_one) {
  open_core();
  auto gave_up = std::make_shared<test_waiter>();
  auto later = std::make_shared<test_waiter>();
  core->expect(codec::queue_purge_ok::id, gave_up);
  EXPECT_TRUE(core->abandon(gave_up.get()));
  EXPECT_FALSE(core->abandon(gave_up.get())) << "abandoned once";
  core->expect(codec::queue_purge_ok::id, later);
  feed(peer.method(1, codec::queue_purge_ok{7}));  // the late reply of the first call
  EXPECT_EQ(gave_up->calls, 0);
  EXPECT_FALSE(later->reply.has_value()) << "a late reply must never answer a later call";
  feed(peer.method(1, codec::queue_purge_ok{9}));
  ASSERT_TRUE(later->reply.has_value());
  codec::queue_purge_ok ok;
  later->reply->decode(ok);
  EXPECT_EQ(ok.message_count, 9u);
  EXPECT_EQ(core->calls_pending(), 0u);
}

TEST_F(channel_core_test, calls_waiting_count_from_the_send_to_the_reply_or_giving_up) {
  core = std::make_unique<channel_core>(1, *this, events);
  table.take(1);
  table.attach(*core);
  core->open(std::make_shared<test_waiter>());
  EXPECT_EQ(events.waiting, 1) << "the open waits for open-ok";
  feed(peer.channel_open_ok(1));
  EXPECT_EQ(events.waiting, 0);
  auto a = std::make_shared<test_waiter>(), b = std::make_shared<test_waiter>();
  core->expect(codec::queue_declare_ok::id, a);
  core->expect(codec::queue_declare_ok::id, b);
  core->consume_sent(std::make_unique<test_consumer>("n", false, "nowait"), nullptr);
  EXPECT_EQ(events.waiting, 2) << "a nowait call waits for nothing";
  EXPECT_EQ(core->calls_waiting(), 2u);
  core->abandon(a.get());
  EXPECT_EQ(events.waiting, 1) << "nobody waits for the abandoned call's reply";
  feed(peer.method(1, codec::queue_declare_ok{"q", 0, 0}));
  EXPECT_EQ(events.waiting, 1) << "the late reply was the abandoned call's";
  auto closing = std::make_shared<test_waiter>();
  core->close(200, "bye", closing);
  EXPECT_EQ(events.waiting, 2);
  core->abandon(closing.get());
  EXPECT_EQ(events.waiting, 1);
  feed(peer.channel_close_ok(1));
  EXPECT_EQ(events.waiting, 0) << "the close ended b's wait too";
  EXPECT_EQ(b->failed, end_cause::closed_by_client);
  EXPECT_EQ(closing->calls, 0);
}

TEST_F(channel_core_test, a_reply_that_answers_no_call_is_ignored) {
  open_core();
  auto w = std::make_shared<test_waiter>();
  core->expect(codec::basic_qos_ok::id, w);
  feed(peer.method(1, codec::tx_select_ok{}));
  EXPECT_EQ(w->calls, 0);
  feed(peer.method(1, codec::basic_qos_ok{}));
  EXPECT_TRUE(w->reply.has_value());
}

TEST_F(channel_core_test, basic_get_is_answered_by_get_ok_or_get_empty) {
  open_core();
  auto empty = std::make_shared<test_waiter>();
  core->get_sent(false, empty);
  feed(peer.method(1, codec::basic_get_empty{}));
  ASSERT_TRUE(empty->reply.has_value());
  EXPECT_TRUE(empty->reply->is<codec::basic_get_empty>());

  auto got = std::make_shared<test_waiter>();
  core->get_sent(false, got);
  codec::basic_get_ok ok;
  ok.delivery_tag = 1;
  ok.exchange = "ex";
  ok.routing_key = "rk";
  feed(peer.method(1, ok).header(1, 2).body(1, "hi"));
  ASSERT_TRUE(got->reply.has_value());
  EXPECT_EQ(got->reply->body, "hi");
  EXPECT_EQ(core->unsettled(), 1u) << "the get-ok delivery is owed a decision";
  EXPECT_TRUE(core->ack(core->life(), 1, false, now));
}

TEST_F(channel_core_test, a_late_consume_ok_cancels_its_consumer_and_its_deliveries_go_back) {
  open_core();
  auto w = std::make_shared<test_waiter>();
  core->consume_sent(std::make_unique<test_consumer>("", false, "late"), w);
  core->abandon(w.get());
  feed(peer.method(1, codec::basic_consume_ok{"amq.ctag-1"}));
  deliver("amq.ctag-1", 1);
  feed(peer);
  const client_output out = written();
  const auto cancels = frames_of<codec::basic_cancel>(out);
  ASSERT_EQ(cancels.size(), 1u);
  EXPECT_EQ(cancels[0].consumer_tag, "amq.ctag-1");
  EXPECT_TRUE(cancels[0].nowait);
  const auto rejects = frames_of<codec::basic_reject>(out);
  ASSERT_EQ(rejects.size(), 1u) << "a delivery in flight for it is given back";
  EXPECT_EQ(rejects[0].delivery_tag, 1u);
  EXPECT_TRUE(rejects[0].requeue);
  EXPECT_EQ(events.removed_names(), "late");
  EXPECT_TRUE(events.deliveries.empty());
  EXPECT_EQ(w->calls, 0);
}

TEST_F(channel_core_test, a_late_no_ack_consume_ok_cancels_and_its_deliveries_are_not_rejected) {
  open_core();
  auto w = std::make_shared<test_waiter>();
  core->consume_sent(std::make_unique<test_consumer>("c", true, "late"), w);
  core->abandon(w.get());
  feed(peer.method(1, codec::basic_consume_ok{"c"}));
  deliver("c", 1);
  feed(peer);
  const client_output out = written();
  EXPECT_EQ(frames_of<codec::basic_cancel>(out).size(), 1u);
  EXPECT_TRUE(frames_of<codec::basic_reject>(out).empty())
      << "a no-ack delivery is settled; rejecting it would be a channel error";
}

TEST_F(channel_core_test, a_late_get_ok_gives_its_message_back) {
  open_core();
  auto w = std::make_shared<test_waiter>();
  core->get_sent(false, w);
  core->abandon(w.get());
  codec::basic_get_ok ok;
  ok.delivery_tag = 5;
  feed(peer.method(1, ok).header(1, 1).body(1, "x"));
  const client_output out = written();
  const auto rejects = frames_of<codec::basic_reject>(out);
  ASSERT_EQ(rejects.size(), 1u);
  EXPECT_EQ(rejects[0].delivery_tag, 5u);
  EXPECT_TRUE(rejects[0].requeue);
  EXPECT_EQ(core->unsettled(), 0u);
}

// Consumers -------------------------------------------------------------------------------------

TEST_F(channel_core_test, a_server_named_consumer_gets_the_deliveries_that_follow_its_consume_ok) {
  open_core();
  auto w = std::make_shared<test_waiter>();
  core->consume_sent(std::make_unique<test_consumer>("", false, "named"), w);
  // consume-ok and two deliveries in one read.
  peer.method(1, codec::basic_consume_ok{"amq.ctag-9"});
  deliver("amq.ctag-9", 1, "a");
  deliver("amq.ctag-9", 2, "b");
  feed(peer);
  ASSERT_TRUE(w->reply.has_value());
  ASSERT_EQ(events.deliveries.size(), 2u);
  EXPECT_EQ(events.deliveries[0].consumer_name, "named");
  EXPECT_EQ(events.deliveries[1].body, "b");
  ASSERT_NE(core->consumers().find("amq.ctag-9"), nullptr);
  EXPECT_TRUE(written().frames.empty()) << "nothing rejected";
}

TEST_F(channel_core_test, a_nowait_consumer_is_registered_before_its_first_delivery) {
  open_core();
  core->consume_sent(std::make_unique<test_consumer>("mine", false, "nowait"), nullptr);
  deliver("mine", 1);
  feed(peer);
  ASSERT_EQ(events.deliveries.size(), 1u);
  EXPECT_EQ(events.deliveries[0].consumer_name, "nowait");
}

TEST_F(channel_core_test, a_delivery_for_an_unknown_consumer_is_rejected_with_requeue) {
  open_core();
  deliver("nobody", 3);
  feed(peer);
  const client_output out = written();
  const auto rejects = frames_of<codec::basic_reject>(out);
  ASSERT_EQ(rejects.size(), 1u);
  EXPECT_EQ(rejects[0].delivery_tag, 3u);
  EXPECT_TRUE(rejects[0].requeue);
}

TEST_F(channel_core_test, deliveries_after_cancel_ok_of_a_no_ack_consumer_are_dropped) {
  open_core();
  consume("na", true, "no-ack");
  consume("acked", false, "acked");
  core->cancel_sent("na", std::make_shared<test_waiter>());
  core->cancel_sent("acked", std::make_shared<test_waiter>());
  feed(peer.method(1, codec::basic_cancel_ok{"na"}).method(1, codec::basic_cancel_ok{"acked"}));
  EXPECT_EQ(events.removed_names(), "no-ack,acked");
  deliver("na", 1);
  deliver("acked", 2);
  feed(peer);
  const client_output out = written();
  const auto rejects = frames_of<codec::basic_reject>(out);
  ASSERT_EQ(rejects.size(), 1u) << "only the delivery the broker still holds is given back";
  EXPECT_EQ(rejects[0].delivery_tag, 2u);
}

TEST_F(channel_core_test, the_broker_cancelling_a_consumer_removes_it_and_reports_it) {
  open_core();
  consume("c1", false, "one");
  feed(peer.method(1, codec::basic_cancel{"c1", true}));
  ASSERT_EQ(events.cancelled.size(), 1u);
  EXPECT_EQ(static_cast<test_consumer&>(*events.cancelled[0]).name, "one");
  EXPECT_EQ(core->consumers().find("c1"), nullptr);
  EXPECT_TRUE(events.removed.empty());
}

TEST_F(channel_core_test, cancel_now_sends_a_nowait_cancel_and_removes_the_consumer) {
  open_core();
  consume("c1", false, "one");
  EXPECT_TRUE(core->cancel_now("c1"));
  EXPECT_FALSE(core->cancel_now("c1"));
  const client_output out = written();
  const auto cancels = frames_of<codec::basic_cancel>(out);
  ASSERT_EQ(cancels.size(), 1u);
  EXPECT_TRUE(cancels[0].nowait);
  EXPECT_EQ(events.removed_names(), "one");
}

TEST_F(channel_core_test, consume_and_cancel_a_hundred_thousand_times_keeps_memory_bounded) {
  open_core();
  for (int i = 0; i < 100000; ++i) {
    const std::string tag = "t" + std::to_string(i);
    core->consume_sent(std::make_unique<test_consumer>(tag, true, ""), nullptr);
    core->cancel_sent(tag, nullptr);
  }
  EXPECT_LE(core->consumers().cancelled_remembered(), 64u);
  EXPECT_EQ(core->consumers().size(), 0u);
  EXPECT_EQ(events.removed.size(), 100000u);
}

// Delivery decisions ----------------------------------------------------------------------------

TEST_F(channel_core_test, decisions_are_held_and_coalesced_into_one_multiple_ack_by_the_deadline) {
  open_core({.acks = {.max_count = 64, .max_delay = 1000us}});
  consume("c", false, "c");
  for (std::uint64_t t = 1; t <= 3; ++t) deliver("c", t);
  feed(peer);
  for (std::uint64_t t = 1; t <= 3; ++t) EXPECT_TRUE(core->ack(core->life(), t, false, now));
  EXPECT_TRUE(written().frames.empty()) << "held until max_delay";
  EXPECT_EQ(core->next_deadline(), now + 1000us);
  now += 999us;
  core->on_timer(now);
  EXPECT_TRUE(written().frames.empty());
  now += 1us;
  core->on_timer(now);
  const client_output out = written();
  const auto acks = frames_of<codec::basic_ack>(out);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].delivery_tag, 3u);
  EXPECT_TRUE(acks[0].multiple);
  EXPECT_EQ(core->next_deadline(), time_point::max());
}

TEST_F(channel_core_test, a_decision_on_a_tag_not_owed_is_refused) {
  open_core();
  consume("na", true, "no-ack");
  deliver("na", 1);
  feed(peer);
  EXPECT_FALSE(core->ack(core->life(), 1, false, now)) << "no-ack delivery";
  EXPECT_FALSE(core->ack(core->life(), 2, false, now)) << "never delivered";
}

TEST_F(channel_core_test, a_decision_on_a_delivery_of_an_ended_life_is_refused) {
  open_core();
  consume("c", false, "c");
  deliver("c", 1);
  feed(peer);
  const std::uint32_t first_life = core->life();
  events.on_end = [&](end_cause) { core->open(std::make_shared<test_waiter>()); };
  feed(peer.channel_close(1, 406, "PRECONDITION_FAILED").channel_open_ok(1));
  ASSERT_TRUE(core->is_open());
  consume("c", false, "c2");
  deliver("c", 1);  // tag 1 again, in the new life
  feed(peer);
  written();
  EXPECT_FALSE(core->ack(first_life, 1, false, now)) << "the old life's tag 1 is not this one's";
  EXPECT_TRUE(core->ack(core->life(), 1, false, now));
  core->flush_acks();
  EXPECT_EQ(frames_of<codec::basic_ack>(written()).size(), 1u);
}

TEST_F(channel_core_test, flush_acks_sends_what_is_held_at_once) {
  open_core();
  consume("c", false, "c");
  deliver("c", 1);
  deliver("c", 2);
  feed(peer);
  core->nack(core->life(), 1, false, false, now);
  core->reject(core->life(), 2, true, now);
  core->flush_acks();
  const client_output out = written();
  ASSERT_EQ(out.frames.size(), 2u);
  EXPECT_TRUE(out.frames[0].is<codec::basic_nack>());
  EXPECT_TRUE(out.frames[1].is<codec::basic_reject>());
}

TEST_F(channel_core_test, without_coalescing_each_decision_goes_at_once_with_the_tag_given) {
  open_core({.coalesce_acks = false});
  consume("c", false, "c");
  deliver("c", 1);
  feed(peer);
  EXPECT_TRUE(core->ack(core->life(), 1, false, now));
  EXPECT_TRUE(core->ack(core->life(), 99, true, now)) << "the broker judges the tag";
  const client_output out = written();
  const auto acks = frames_of<codec::basic_ack>(out);
  ASSERT_EQ(acks.size(), 2u);
  EXPECT_EQ(acks[1].delivery_tag, 99u);
  EXPECT_EQ(core->unsettled(), 0u) << "nothing is tracked";
}

TEST_F(channel_core_test, recover_forgets_undecided_deliveries_and_those_before_recover_ok) {
  open_core();
  consume("c", false, "c");
  deliver("c", 1);
  feed(peer);
  auto w = std::make_shared<test_waiter>();
  core->recover_sent(w);
  EXPECT_EQ(core->unsettled(), 0u);
  EXPECT_FALSE(core->ack(core->life(), 1, false, now)) << "the broker took it back";
  deliver("c", 2);  // before recover-ok: the broker requeues it too
  deliver("nobody", 3);
  feed(peer);
  EXPECT_EQ(core->unsettled(), 0u);
  EXPECT_TRUE(frames_of<codec::basic_reject>(written()).empty());
  feed(peer.method(1, codec::basic_recover_ok{}));
  EXPECT_EQ(core->recovers_pending(), 0);
  deliver("c", 4);
  feed(peer);
  EXPECT_EQ(core->unsettled(), 1u);
}

TEST_F(channel_core_test, configure_acks_applies_only_while_nothing_is_owed) {
  open_core();
  EXPECT_TRUE(core->configure_acks({.max_count = 2, .max_delay = 5ms}));
  consume("c", false, "c");
  EXPECT_FALSE(core->configure_acks({.max_count = 9, .max_delay = 5ms}));
  deliver("c", 1);
  deliver("c", 2);
  feed(peer);
  core->ack(core->life(), 1, false, now);
  core->ack(core->life(), 2, false, now);
  core->on_timer(now);  // max_count 2 reached: due at once
  EXPECT_EQ(frames_of<codec::basic_ack>(written()).size(), 1u);
}

// Publishing and confirms -----------------------------------------------------------------------

TEST_F(channel_core_test, confirm_mode_begins_as_confirm_select_is_sent_with_sequences_from_one) {
  open_core();
  auto w = std::make_shared<test_waiter>();
  events.lock_publish();  // the face queues the method and starts tracking in one critical section
  core->confirm_select_sent({4, {}}, w);
  events.unlock_publish();
  ASSERT_NE(core->confirms(), nullptr)
      << "a publish right after the method is numbered by the broker";
  EXPECT_EQ(publish(), 1u);
  feed(peer.method(1, codec::confirm_select_ok{}));
  EXPECT_TRUE(w->reply.has_value());
  EXPECT_EQ(publish(), 2u);
  ASSERT_TRUE(core->settings().confirms.has_value());
  EXPECT_EQ(core->settings().confirms->window, 4u);
}

TEST_F(channel_core_test, a_refused_confirm_select_ends_the_publishes_tracked_meanwhile) {
  open_core();
  auto w = std::make_shared<test_waiter>();
  core->confirm_select_sent({4, {}}, w);
  publish();
  feed(peer.channel_close(1, 406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode"));
  EXPECT_EQ(w->failed, end_cause::closed_by_peer);
  ASSERT_EQ(events.confirms.size(), 1u);
  EXPECT_EQ(events.confirms[0].outcome, confirm_outcome::channel_closed);
}

TEST_F(channel_core_test, broker_acks_and_nacks_settle_publishes_under_the_publish_lock) {
  open_core();
  select_confirms();
  for (int i = 0; i < 3; ++i) publish();
  feed(peer.method(1, codec::basic_ack{2, true}).method(1, codec::basic_nack{3, false, true}));
  ASSERT_EQ(events.confirms.size(), 3u);
  EXPECT_EQ(events.confirms[0].outcome, confirm_outcome::ack);
  EXPECT_EQ(events.confirms[1].sequence, 2u);
  EXPECT_EQ(events.confirms[2].outcome, confirm_outcome::nack);
  EXPECT_EQ(events.confirms_without_lock, 0);
  EXPECT_EQ(events.after_confirms_calls, 2);
  EXPECT_EQ(events.holding, 0);
  ASSERT_EQ(events.confirm_frames.size(), 2u);
  EXPECT_EQ(events.confirm_frames[0], std::make_tuple(true, std::uint64_t{2}, true));
  EXPECT_EQ(core->confirms()->outstanding(), 0u);
}

TEST_F(channel_core_test, an_ack_for_a_publish_never_made_closes_the_channel_with_406) {
  open_core();
  select_confirms();
  publish();
  feed(peer.method(1, codec::basic_ack{5, false}));
  EXPECT_EQ(core->state(), channel_state::closing);
  const client_output out = written();
  const auto closes = frames_of<codec::channel_close>(out);
  ASSERT_EQ(closes.size(), 1u);
  EXPECT_EQ(closes[0].reply_code, 406);
}

TEST_F(channel_core_test, a_return_marks_its_mandatory_publish_before_its_ack) {
  open_core();
  select_confirms();
  publish(true, "nowhere");
  codec::basic_return r;
  r.reply_code = 312;
  r.reply_text = "NO_ROUTE";
  r.exchange = "ex";
  r.routing_key = "nowhere";
  feed(peer.method(1, r).header(1, 4).body(1, "body").method(1, codec::basic_ack{1, false}));
  ASSERT_EQ(events.returns.size(), 1u);
  EXPECT_EQ(events.returns[0], "312 nowhere body");
  ASSERT_EQ(events.confirms.size(), 1u);
  EXPECT_TRUE(events.confirms[0].returned);
  EXPECT_EQ(events.confirms[0].reply_code, 312);
  EXPECT_EQ(events.confirm_texts[0], "NO_ROUTE");
}

TEST_F(channel_core_test, a_confirm_timeout_ends_a_publish_at_its_deadline) {
  open_core();
  select_confirms(8, 50ms);
  publish();
  EXPECT_EQ(core->next_deadline(), now + 50ms);
  now += 49ms;
  core->on_timer(now);
  EXPECT_TRUE(events.confirms.empty());
  now += 1ms;
  core->on_timer(now);
  ASSERT_EQ(events.confirms.size(), 1u);
  EXPECT_EQ(events.confirms[0].outcome, confirm_outcome::timeout);
  feed(peer.method(1, codec::basic_ack{1, false}));  // late: accepted, not reported again
  EXPECT_EQ(events.confirms.size(), 1u);
  EXPECT_TRUE(core->is_open());
}

TEST_F(channel_core_test, the_publish_gate_follows_state_flow_and_window) {
  using gate = channel_core::publish_gate;
  core = std::make_unique<channel_core>(1, *this, events);
  EXPECT_EQ(core->can_publish(), gate::closed);
  table.take(1);
  table.attach(*core);
  core->open(nullptr);
  EXPECT_EQ(core->can_publish(), gate::closed) << "opening";
  feed(peer.channel_open_ok(1));
  EXPECT_EQ(core->can_publish(), gate::ok);
  feed(peer.method(1, codec::channel_flow{false}));
  EXPECT_FALSE(core->flow_active());
  EXPECT_EQ(core->can_publish(), gate::blocked);
  feed(peer.method(1, codec::channel_flow{true}));
  EXPECT_EQ(core->can_publish(), gate::ok);
  EXPECT_EQ(events.flows, (std::vector<bool>{false, true}));
  select_confirms(2);
  publish();
  publish();
  EXPECT_EQ(core->can_publish(), gate::window_full);
}

// The end of a life ------------------------------------------------------------------------------

TEST_F(channel_core_test, a_peer_close_ends_waits_confirms_and_consumers_exactly_once) {
  open_core();
  consume("c", false, "c");
  select_confirms();
  publish();
  publish();
  auto w = std::make_shared<test_waiter>();
  core->expect(codec::queue_declare_ok::id, w);
  auto consuming = std::make_shared<test_waiter>();
  core->consume_sent(std::make_unique<test_consumer>("", false, "pending"), consuming);
  feed(peer.channel_close(1, 404, "NOT_FOUND - no queue 'x'", 50, 10));
  EXPECT_EQ(core->state(), channel_state::closed);
  ASSERT_TRUE(w->failed.has_value());
  EXPECT_EQ(*w->failed, end_cause::closed_by_peer);
  EXPECT_EQ(w->why.reply_code, 404);
  EXPECT_EQ(consuming->failed, end_cause::closed_by_peer);
  ASSERT_EQ(events.confirms.size(), 2u);
  EXPECT_EQ(events.confirms[0].outcome, confirm_outcome::channel_closed);
  EXPECT_EQ(events.confirms[0].reply_code, 404);
  EXPECT_EQ(events.removed_names(), "c,pending");
  EXPECT_EQ(core->confirms(), nullptr);
  ASSERT_EQ(events.ended.size(), 1u);
  EXPECT_EQ(events.ended[0].first, end_cause::closed_by_peer);
  // The connection goes too: the channel is not ended twice.
  feed(peer.connection_close(320, "CONNECTION_FORCED"));
  EXPECT_EQ(events.ended.size(), 1u);
  EXPECT_EQ(w->calls, 1);
}

TEST_F(channel_core_test, on_ending_comes_first_while_the_channel_still_reads_open) {
  open_core();
  events.core_state = [&] { return core->state(); };
  feed(peer.channel_close(1, 404, "NOT_FOUND"));
  ASSERT_EQ(events.ending.size(), 1u);
  EXPECT_EQ(events.ending[0], end_cause::closed_by_peer);
  EXPECT_EQ(events.state_when_ending[0], channel_state::open)
      << "a face stores the reason before any thread can see the channel closed";
  EXPECT_EQ(events.ended.size(), 1u);
}

TEST_F(channel_core_test, connection_loss_ends_unconfirmed_publishes_in_doubt) {
  open_core();
  select_confirms();
  publish();
  machine->transport_closed("connection reset by peer");
  ASSERT_EQ(events.confirms.size(), 1u);
  EXPECT_EQ(events.confirms[0].outcome, confirm_outcome::in_doubt);
  ASSERT_EQ(events.ended.size(), 1u);
  EXPECT_EQ(events.ended[0].first, end_cause::connection_lost);
  EXPECT_EQ(events.ended[0].second.reply_code, 320);
  ASSERT_TRUE(core->settings().confirms.has_value()) << "kept for a recovery to replay";
}

TEST_F(channel_core_test, a_client_close_flushes_decisions_first_and_close_ok_ends_the_life) {
  open_core();
  consume("c", false, "c");
  deliver("c", 1);
  feed(peer);
  core->ack(core->life(), 1, false, now);
  auto w = std::make_shared<test_waiter>();
  core->close(200, "bye", w);
  EXPECT_EQ(core->state(), channel_state::closing);
  EXPECT_FALSE(core->ack(core->life(), 1, false, now));
  const client_output out = written();
  ASSERT_EQ(out.frames.size(), 2u);
  EXPECT_TRUE(out.frames[0].is<codec::basic_ack>());
  EXPECT_TRUE(out.frames[1].is<codec::channel_close>());
  feed(peer.channel_close_ok(1));
  EXPECT_EQ(core->state(), channel_state::closed);
  ASSERT_TRUE(w->reply.has_value());
  EXPECT_TRUE(w->reply->is<codec::channel_close_ok>());
  ASSERT_EQ(events.ended.size(), 1u);
  EXPECT_EQ(events.ended[0].first, end_cause::closed_by_client);
}

TEST_F(channel_core_test, a_second_close_while_closing_waits_for_the_same_close_ok) {
  open_core();
  auto first = std::make_shared<test_waiter>();
  auto second = std::make_shared<test_waiter>();
  EXPECT_TRUE(core->close(200, "no reply in time", first));
  EXPECT_TRUE(core->close(200, "bye", second));
  EXPECT_EQ(frames_of<codec::channel_close>(written()).size(), 1u) << "one channel.close";
  feed(peer.channel_close_ok(1));
  EXPECT_TRUE(first->reply.has_value());
  EXPECT_TRUE(second->reply.has_value());
  EXPECT_FALSE(core->close(200, "again", std::make_shared<test_waiter>())) << "closed";
  EXPECT_TRUE(core->open(nullptr)) << "a closed channel may open again";
}

TEST_F(channel_core_test, open_is_refused_unless_the_channel_is_closed) {
  open_core();
  EXPECT_FALSE(core->open(nullptr));
  EXPECT_EQ(core->life(), 1u);
}

TEST_F(channel_core_test, a_close_waiter_fails_when_the_connection_goes_first) {
  open_core();
  auto w = std::make_shared<test_waiter>();
  core->close(200, "bye", w);
  machine->transport_closed("reset");
  EXPECT_EQ(w->failed, end_cause::connection_lost);
}

TEST_F(channel_core_test, a_close_while_opening_fails_the_open) {
  core = std::make_unique<channel_core>(1, *this, events);
  table.take(1);
  table.attach(*core);
  auto opening = std::make_shared<test_waiter>();
  core->open(opening);
  core->close(200, "never mind", nullptr);
  feed(peer.channel_open_ok(1).channel_close_ok(1));
  EXPECT_EQ(core->state(), channel_state::closed);
  EXPECT_EQ(opening->failed, end_cause::closed_by_client);
  EXPECT_EQ(events.opened, 0);
}

// What a recovery replays -----------------------------------------------------------------------

TEST_F(channel_core_test, settings_keep_qos_tx_and_client_flow_as_the_broker_acknowledged_them) {
  open_core();
  core->qos_sent({0, 10, false}, std::make_shared<test_waiter>());
  core->qos_sent({0, 100, true}, std::make_shared<test_waiter>());
  core->tx_select_sent(std::make_shared<test_waiter>());
  core->flow_sent(std::make_shared<test_waiter>());
  feed(peer.method(1, codec::basic_qos_ok{})
           .method(1, codec::basic_qos_ok{})
           .method(1, codec::tx_select_ok{})
           .method(1, codec::channel_flow_ok{false}));
  const channel_settings& s = core->settings();
  ASSERT_TRUE(s.qos_per_consumer.has_value());
  EXPECT_EQ(s.qos_per_consumer->prefetch_count, 10);
  ASSERT_TRUE(s.qos_global.has_value());
  EXPECT_EQ(s.qos_global->prefetch_count, 100);
  EXPECT_TRUE(s.tx);
  EXPECT_TRUE(core->in_tx());
  EXPECT_FALSE(s.client_flow);
  machine->transport_closed("gone");
  EXPECT_TRUE(core->settings().tx) << "settings outlive the life";
}

// Metrics (channel_core_options::metrics) ------------------------------------------------------

class channel_core_metrics_test : public channel_core_test {
 protected:
  channel_core& open_counted(channel_core_options o = {}) {
    o.metrics = counts;
    return open_core(std::move(o));
  }
  metrics::channel_snapshot snap() const { return counts->snapshot(); }

  std::shared_ptr<metrics::channel_metrics> counts = std::make_shared<metrics::channel_metrics>(1);
};

TEST_F(channel_core_metrics_test,
       count_deliveries_each_consumers_pending_and_decisions_per_delivery) {
  open_counted();
  consume("c", false, "c");
  consume("n", true, "n");
  for (std::uint64_t t = 1; t <= 4; ++t) deliver("c", t);
  deliver("n", 5);
  feed(peer);
  // One multiple ack covers 1..3; then a nack and, with a fifth delivery, a reject.
  EXPECT_TRUE(core->ack(core->life(), 3, true, now));
  EXPECT_TRUE(core->nack(core->life(), 4, false, true, now));
  deliver("c", 6);
  feed(peer);
  EXPECT_TRUE(core->reject(core->life(), 6, false, now));
  EXPECT_FALSE(core->ack(core->life(), 6, false, now)) << "refused: not counted";
  metrics::channel_snapshot s = snap();
  EXPECT_EQ(s.deliveries.delivered, 6u);
  EXPECT_EQ(s.deliveries.acked, 3u);
  EXPECT_EQ(s.deliveries.nacked, 1u);
  EXPECT_EQ(s.deliveries.rejected, 1u);
  ASSERT_EQ(s.consumers.size(), 2u);
  EXPECT_EQ(s.consumers[0].tag, "c");
  EXPECT_EQ(s.consumers[0].delivered, 5u);
  EXPECT_EQ(s.consumers[0].pending, 5);
  EXPECT_EQ(s.consumers[1].tag, "n");
  EXPECT_EQ(s.consumers[1].delivered, 1u);
  // The face's workers report handled deliveries through the consumer's recorders.
  consumer* c = core->consumers().find("c");
  ASSERT_NE(c, nullptr);
  ASSERT_NE(c->metrics, nullptr);
  EXPECT_EQ(c->channel_metrics, counts);
  c->metrics->on_handled(4);
  c->channel_metrics->record_handled(1500);
  s = snap();
  EXPECT_EQ(s.consumers[0].pending, 1);
  EXPECT_EQ(s.delivery_to_handled.count(), 1u);
}

TEST_F(channel_core_metrics_test, without_coalescing_a_multiple_decision_counts_one) {
  open_counted({.coalesce_acks = false});
  consume("c", false, "c");
  deliver("c", 1);
  deliver("c", 2);
  feed(peer);
  EXPECT_TRUE(core->ack(core->life(), 2, true, now));
  EXPECT_EQ(snap().deliveries.acked, 1u) << "the core does not know what the tag covers";
}

TEST_F(channel_core_metrics_test, count_acks_nacks_returns_and_the_latency_from_each_publish) {
  open_counted();
  select_confirms();
  const time_point t0 = now;
  publish(true, "nowhere");
  now += 2ms;
  publish();
  publish();
  core->note_published(3);
  now = t0 + 5ms;
  codec::basic_return r;
  r.reply_code = 312;
  r.reply_text = "NO_ROUTE";
  r.exchange = "ex";
  r.routing_key = "nowhere";
  feed(peer.method(1, r).header(1, 1).body(1, "b").method(1, codec::basic_ack{2, true}));
  feed(peer.method(1, codec::basic_nack{3, false, false}));
  const metrics::channel_snapshot s = snap();
  EXPECT_EQ(s.publishes.published, 3u);
  EXPECT_EQ(s.publishes.confirmed, 2u);
  EXPECT_EQ(s.publishes.nacked, 1u);
  EXPECT_EQ(s.publishes.returned, 1u);
  EXPECT_EQ(s.publishes.in_doubt, 0u);
  ASSERT_EQ(s.publish_to_confirm.count(), 3u);
  // 5 ms for the first, 3 ms for the two published 2 ms later (within the histogram's 3.2%).
  EXPECT_NEAR(static_cast<double>(s.publish_to_confirm.max()), 5e6, 5e6 * 0.032);
  EXPECT_NEAR(static_cast<double>(s.publish_to_confirm.min()), 3e6, 3e6 * 0.032);
}

TEST_F(channel_core_metrics_test, a_publish_not_stamped_by_the_face_has_no_latency) {
  open_counted();
  select_confirms();
  events.lock_publish();
  core->confirms()->on_publish(0, time_point{});
  events.unlock_publish();
  feed(peer.method(1, codec::basic_ack{1, false}));
  EXPECT_EQ(snap().publishes.confirmed, 1u);
  EXPECT_EQ(snap().publish_to_confirm.count(), 0u);
}

TEST_F(channel_core_metrics_test, timeouts_and_the_end_of_the_life_count_in_doubt_never_nacked) {
  open_counted();
  select_confirms(8, 50ms);
  publish();
  publish();
  now += 50ms;
  core->on_timer(now);  // both time out
  publish();
  machine->transport_closed("connection reset by peer");
  const metrics::channel_snapshot s = snap();
  EXPECT_EQ(s.publishes.in_doubt, 3u);
  EXPECT_EQ(s.publishes.nacked, 0u);
  EXPECT_EQ(s.publish_to_confirm.count(), 0u);
}

TEST_F(channel_core_metrics_test, a_closed_channel_is_hidden_until_the_same_core_opens_again) {
  metrics::connection_metrics conn(1, "");
  counts = conn.add_channel(1);
  events.core_state = [this] { return core->state(); };
  open_counted();
  EXPECT_EQ(conn.snapshot().open_channels, 1u);
  events.on_end = [this](end_cause) { core->open(std::make_shared<test_waiter>()); };
  feed(peer.channel_close(1, 404, "NOT_FOUND", 50, 10));
  events.on_end = nullptr;
  feed(peer.channel_open_ok(1));
  ASSERT_TRUE(core->is_open());
  EXPECT_EQ(conn.snapshot().open_channels, 1u) << "reopened from on_ended";
  core->close(200, "bye", nullptr);
  feed(peer.channel_close_ok(1));
  EXPECT_EQ(conn.snapshot().open_channels, 0u);
  EXPECT_TRUE(conn.snapshot().channels.empty());
}

// Stream consumers ------------------------------------------------------------------------------

class channel_core_stream_test : public channel_core_test {
 protected:
  // A stream consumer (consumer::stream set, as a face does for consume_options::stream_start).
  void consume_stream(std::string tag) {
    auto c = std::make_unique<test_consumer>(tag, false, tag);
    c->stream.emplace();
    auto w = std::make_shared<test_waiter>();
    core->consume_sent(std::move(c), w);
    feed(peer.method(1, codec::basic_consume_ok{tag}));
    ASSERT_TRUE(w->reply.has_value());
  }
  // A delivery carrying x-stream-offset as RabbitMQ sends it (a long).
  void deliver_offset(std::string_view tag, std::uint64_t delivery_tag, std::int64_t offset) {
    headers_.push_back(codec::encode_table({{"x-stream-offset", codec::field_value::i64(offset)}}));
    codec::basic_properties p;
    p.flags = codec::basic_properties::headers_flag;
    p.headers = codec::table_view{headers_.back()};
    codec::basic_deliver m;
    m.consumer_tag = tag;
    m.delivery_tag = delivery_tag;
    peer.method(1, m).header(1, 1, p).body(1, "m");
  }
  std::deque<std::string> headers_;
};

TEST_F(channel_core_stream_test, acked_deliveries_move_the_consumers_last_handled_offset) {
  open_core({.acks = {.max_count = 64, .max_delay = 1000us}});
  consume_stream("s");
  for (std::uint64_t t = 1; t <= 3; ++t) deliver_offset("s", t, 99 + static_cast<int>(t));
  feed(peer);
  const stream_progress* p = core->stream_progress_of("s");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->last_handled(), std::nullopt) << "delivered is not handled";
  EXPECT_TRUE(core->ack(core->life(), 1, false, now));
  EXPECT_TRUE(core->ack(core->life(), 2, false, now));
  EXPECT_EQ(p->last_handled(), 101u) << "counted when the decision is accepted, not when the "
                                        "coalesced ack leaves";
  EXPECT_EQ(p->resume_from(), stream_offset::at(102));
  EXPECT_FALSE(core->ack(core->life(), 2, false, now)) << "already decided";
  EXPECT_EQ(p->last_handled(), 101u);
}

TEST_F(channel_core_stream_test, a_refused_decision_does_not_count_as_handled) {
  open_core();
  consume_stream("s");
  deliver_offset("s", 1, 5);
  feed(peer);
  EXPECT_FALSE(core->ack(core->life() + 1, 1, false, now)) << "another life's";
  EXPECT_EQ(core->stream_progress_of("s")->last_handled(), std::nullopt);
  EXPECT_TRUE(core->reject(core->life(), 1, false, now));
  EXPECT_EQ(core->stream_progress_of("s")->last_handled(), 5u) << "a reject settles it too";
}

TEST_F(channel_core_stream_test, a_multiple_ack_settles_each_stream_consumer_up_to_its_tag) {
  open_core();
  consume_stream("a");
  consume_stream("b");
  deliver_offset("a", 1, 10);
  deliver_offset("b", 2, 70);
  deliver_offset("a", 3, 11);
  deliver_offset("b", 4, 71);
  feed(peer);
  EXPECT_TRUE(core->ack(core->life(), 3, true, now));
  EXPECT_EQ(core->stream_progress_of("a")->last_handled(), 11u);
  EXPECT_EQ(core->stream_progress_of("b")->last_handled(), 70u);
}

TEST_F(channel_core_stream_test, a_consumer_leaves_with_its_watermark_at_the_end_of_the_life) {
  open_core();
  consume_stream("s");
  deliver_offset("s", 1, 0);
  deliver_offset("s", 2, 1);
  feed(peer);
  EXPECT_TRUE(core->ack(core->life(), 1, false, now));
  machine->transport_closed("connection reset by peer");
  ASSERT_EQ(events.removed.size(), 1u);
  const consumer& gone = *events.removed[0];
  ASSERT_TRUE(gone.stream.has_value());
  EXPECT_EQ(gone.stream->last_handled(), 0u);
  EXPECT_EQ(gone.stream->pending(), 0u) << "the unsettled delivery comes again after a resume";
  EXPECT_EQ(gone.stream->resume_from(), stream_offset::at(1));
}

TEST_F(channel_core_stream_test, classic_consumers_are_not_tracked) {
  open_core();
  consume("c", false, "c");
  deliver_offset("c", 1, 3);
  feed(peer);
  EXPECT_EQ(core->stream_progress_of("c"), nullptr);
  EXPECT_EQ(core->stream_progress_of("nobody"), nullptr);
  EXPECT_TRUE(core->ack(core->life(), 1, false, now));
}

}  // namespace
}  // namespace warren::protocol
