#include "engine/protocol/channel_core.h"

#include <algorithm>
#include <string>
#include <utility>

namespace warren::protocol {

namespace {

// The publish lock, taken through the handler, for a scope.
class publish_guard {
 public:
  explicit publish_guard(channel_handler& h) : h_(h) { h_.lock_publish(); }
  ~publish_guard() { h_.unlock_publish(); }
  publish_guard(const publish_guard&) = delete;
  publish_guard& operator=(const publish_guard&) = delete;

 private:
  channel_handler& h_;
};

confirm_outcome outcome_of(end_cause cause) noexcept {
  return cause == end_cause::connection_lost ? confirm_outcome::in_doubt
                                             : confirm_outcome::channel_closed;
}

}  // namespace

void send_ack_action(connection_machine& m, std::uint16_t channel, const ack_action& a) {
  switch (a.what) {
    case ack_action::kind::ack: {
      codec::basic_ack f;
      f.delivery_tag = a.delivery_tag;
      f.multiple = a.multiple;
      m.send(channel, f);
      return;
    }
    case ack_action::kind::nack: {
      codec::basic_nack f;
      f.delivery_tag = a.delivery_tag;
      f.multiple = a.multiple;
      f.requeue = a.requeue;
      m.send(channel, f);
      return;
    }
    case ack_action::kind::reject: {
      codec::basic_reject f;
      f.delivery_tag = a.delivery_tag;
      f.requeue = a.requeue;
      m.send(channel, f);
      return;
    }
  }
}

channel_core::channel_core(std::uint16_t id, channel_wire& wire, channel_handler& handler,
                           channel_core_options options)
    : id_(id),
      wire_(wire),
      handler_(handler),
      coalesce_(options.coalesce_acks),
      consumers_(options.cancelled_memory),
      coalescer_(options.acks),
      metrics_(std::move(options.metrics)) {}

channel_core::~channel_core() = default;

// Opening and closing ---------------------------------------------------------------------------

bool channel_core::open(std::shared_ptr<reply_waiter> waiter) {
  if (state() != channel_state::closed) return false;
  ++life_;
  if (metrics_) metrics_->mark_open();
  state_.store(channel_state::opening, std::memory_order_release);
  flow_.store(true, std::memory_order_release);
  wire_.open_channel(id_);
  effect e;
  e.what = effect::kind::open;
  expected_.push(codec::channel_open_ok::id, std::move(waiter), std::move(e));
  sync_waiting();
  return true;
}

bool channel_core::close(std::uint16_t reply_code, std::string_view reply_text,
                         std::shared_ptr<reply_waiter> waiter, std::uint16_t class_id,
                         std::uint16_t method_id) {
  const channel_state s = state();
  if (s == channel_state::closed) return false;
  if (waiter) close_waiters_.push_back(std::move(waiter));
  sync_waiting();
  if (s == channel_state::closing) return true;
  flush_acks();
  state_.store(channel_state::closing, std::memory_order_release);
  wire_.close_channel(id_, reply_code, reply_text, class_id, method_id);
  return true;
}

// Calls -----------------------------------------------------------------------------------------

void channel_core::expect(std::uint32_t reply_id, std::shared_ptr<reply_waiter> waiter,
                          std::uint32_t alt_reply_id) {
  expected_.push(reply_id, std::move(waiter), effect{}, alt_reply_id);
  sync_waiting();
}

void channel_core::consume_sent(std::unique_ptr<consumer> c, std::shared_ptr<reply_waiter> waiter) {
  if (!waiter) {
    // nowait: deliveries may follow at once, so the consumer is there before them.
    attach_metrics(*c);
    if (std::unique_ptr<consumer> replaced = consumers_.add(std::move(c))) {
      handler_.on_consumer_removed(std::move(replaced));
    }
    return;
  }
  if (c->tag.empty()) consumers_.named_consume_pending(+1);
  effect e;
  e.what = effect::kind::consume;
  e.subscriber = std::move(c);
  expected_.push(codec::basic_consume_ok::id, std::move(waiter), std::move(e));
  sync_waiting();
}

void channel_core::cancel_sent(std::string_view consumer_tag,
                               std::shared_ptr<reply_waiter> waiter) {
  if (!waiter) {
    if (std::unique_ptr<consumer> c = consumers_.remove(consumer_tag)) {
      handler_.on_consumer_removed(std::move(c));
    }
    return;
  }
  effect e;
  e.what = effect::kind::cancel;
  expected_.push(codec::basic_cancel_ok::id, std::move(waiter), std::move(e));
  sync_waiting();
}

void channel_core::get_sent(bool no_ack, std::shared_ptr<reply_waiter> waiter) {
  effect e;
  e.what = effect::kind::get;
  e.no_ack = no_ack;
  expected_.push(codec::basic_get_ok::id, std::move(waiter), std::move(e),
                 codec::basic_get_empty::id);
  sync_waiting();
}

void channel_core::recover_sent(std::shared_ptr<reply_waiter> waiter) {
  // The decisions held went before the method (flush_acks); what is still undecided the broker
  // now takes back, so a decision on it would name a tag the broker no longer knows.
  coalescer_.reset();
  forget_unsettled_stream_deliveries();
  if (!waiter) return;
  ++recovering_;
  effect e;
  e.what = effect::kind::recover;
  expected_.push(codec::basic_recover_ok::id, std::move(waiter), std::move(e));
  sync_waiting();
}

void channel_core::qos_sent(qos_settings q, std::shared_ptr<reply_waiter> waiter) {
  effect e;
  e.what = effect::kind::qos;
  e.qos = q;
  expected_.push(codec::basic_qos_ok::id, std::move(waiter), std::move(e));
  sync_waiting();
}

void channel_core::confirm_select_sent(confirm_tracker_options o,
                                       std::shared_ptr<reply_waiter> waiter) {
  start_confirms(o);
  if (!waiter) return;
  expected_.push(codec::confirm_select_ok::id, std::move(waiter));
  sync_waiting();
}

void channel_core::tx_select_sent(std::shared_ptr<reply_waiter> waiter) {
  effect e;
  e.what = effect::kind::tx_select;
  expected_.push(codec::tx_select_ok::id, std::move(waiter), std::move(e));
  sync_waiting();
}

void channel_core::flow_sent(std::shared_ptr<reply_waiter> waiter) {
  effect e;
  e.what = effect::kind::flow;
  expected_.push(codec::channel_flow_ok::id, std::move(waiter), std::move(e));
  sync_waiting();
}

bool channel_core::abandon(const reply_waiter* waiter) {
  bool found = expected_.abandon(waiter);
  if (!found) {
    const auto it = std::find_if(close_waiters_.begin(), close_waiters_.end(),
                                 [&](const auto& w) { return w.get() == waiter; });
    if (it != close_waiters_.end()) {
      close_waiters_.erase(it);
      found = true;
    }
  }
  sync_waiting();
  return found;
}

void channel_core::sync_waiting() {
  const std::size_t now_waiting = expected_.waiting() + close_waiters_.size();
  if (now_waiting == waiting_) return;
  const int delta = static_cast<int>(now_waiting) - static_cast<int>(waiting_);
  waiting_ = now_waiting;
  handler_.on_waiting(delta);
}

bool channel_core::cancel_now(std::string_view consumer_tag) {
  std::unique_ptr<consumer> c = consumers_.remove(consumer_tag);
  if (!c) return false;
  wire_.send_cancel(id_, consumer_tag);
  handler_.on_consumer_removed(std::move(c));
  return true;
}

void channel_core::start_confirms(const confirm_tracker_options& o) {
  tracker_.emplace(o);
  confirm_timeouts_ = o.timeout.count() > 0;
  settings_.confirms = o;
}

// Delivery decisions ----------------------------------------------------------------------------

bool channel_core::decide(std::uint32_t life, ack_action a, time_point now) {
  if (life != life_ || state() != channel_state::open) return false;
  bool accepted = true;
  std::uint64_t covered = 1;  // deliveries the decision covers, for the metrics
  if (!coalesce_) {
    wire_.send_ack(id_, a);
  } else {
    const std::size_t held = coalescer_.held();
    switch (a.what) {
      case ack_action::kind::ack:
        accepted = coalescer_.ack(a.delivery_tag, a.multiple, now);
        break;
      case ack_action::kind::nack:
        accepted = coalescer_.nack(a.delivery_tag, a.multiple, a.requeue, now);
        break;
      case ack_action::kind::reject:
        accepted = coalescer_.reject(a.delivery_tag, a.requeue, now);
        break;
    }
    // Each delivery a decision covers is held once (until it goes on the wire).
    covered = coalescer_.held() - held;
  }
  if (accepted && metrics_) count_decisions(a.what, covered);
  if (accepted && streams_) {
    consumers_.for_each([&](consumer& c) {
      if (c.stream) c.stream->on_settled(a.delivery_tag, a.multiple);
    });
  }
  return accepted;
}

void channel_core::count_decisions(ack_action::kind what, std::uint64_t n) noexcept {
  switch (what) {
    case ack_action::kind::ack:
      metrics_->on_delivery_acked(n);
      return;
    case ack_action::kind::nack:
      metrics_->on_delivery_nacked(n);
      return;
    case ack_action::kind::reject:
      metrics_->on_delivery_rejected(n);
      return;
  }
}

const stream_progress* channel_core::stream_progress_of(std::string_view consumer_tag) {
  const consumer* c = consumers_.find(consumer_tag);
  return c != nullptr && c->stream ? &*c->stream : nullptr;
}

void channel_core::forget_unsettled_stream_deliveries() {
  if (!streams_) return;
  consumers_.for_each([](consumer& c) {
    if (c.stream) c.stream->forget_unsettled();
  });
}

bool channel_core::ack(std::uint32_t life, std::uint64_t tag, bool multiple, time_point now) {
  return decide(life, {ack_action::kind::ack, tag, multiple, false}, now);
}

bool channel_core::nack(std::uint32_t life, std::uint64_t tag, bool multiple, bool requeue,
                        time_point now) {
  return decide(life, {ack_action::kind::nack, tag, multiple, requeue}, now);
}

bool channel_core::reject(std::uint32_t life, std::uint64_t tag, bool requeue, time_point now) {
  return decide(life, {ack_action::kind::reject, tag, false, requeue}, now);
}

void channel_core::send_actions() {
  for (const ack_action& a : actions_) wire_.send_ack(id_, a);
  actions_.clear();
}

void channel_core::flush_acks() {
  if (coalescer_.held() == 0) return;
  actions_.clear();
  coalescer_.flush(actions_);
  send_actions();
}

bool channel_core::configure_acks(const ack_coalescer_options& o) {
  if (!consumers_.empty() || coalescer_.unsettled() != 0) return false;
  coalescer_ = ack_coalescer(o);
  return true;
}

// Timers ----------------------------------------------------------------------------------------

void channel_core::poll_acks(time_point now) {
  if (state() != channel_state::open || coalescer_.held() == 0 ||
      now < coalescer_.next_deadline()) {
    return;
  }
  actions_.clear();
  coalescer_.poll(now, actions_);
  send_actions();
}

void channel_core::on_timer(time_point now) {
  poll_acks(now);
  if (!confirm_timeouts_) return;
  bool ended = false;
  {
    publish_guard lock(handler_);
    if (tracker_ && now >= tracker_->next_deadline()) {
      tracker_->on_timer(now, [&](const confirm_event& e) {
        ended = true;
        record_confirm(e, now);
        handler_.on_confirm(e);
      });
    }
  }
  if (ended) handler_.after_confirms();
}

time_point channel_core::next_deadline() const {
  time_point t = state() == channel_state::open ? coalescer_.next_deadline() : time_point::max();
  if (confirm_timeouts_) {
    publish_guard lock(handler_);
    if (tracker_) t = std::min(t, tracker_->next_deadline());
  }
  return t;
}

// The receive side ------------------------------------------------------------------------------

void channel_core::on_command(command& cmd, time_point now) {
  switch (cmd.id()) {
    case codec::basic_deliver::id:
      on_deliver(cmd, now);
      return;
    case codec::basic_ack::id:
    case codec::basic_nack::id:
      on_confirm_command(cmd, now);
      return;
    case codec::basic_return::id:
      on_return_command(cmd);
      return;
    case codec::channel_flow::id:
      on_flow_command(cmd);
      return;
    case codec::basic_cancel::id:
      on_cancel_command(cmd);
      return;
    case codec::channel_close_ok::id:
      on_close_ok(cmd);
      return;
    default:
      on_reply(cmd, now);
      return;
  }
}

void channel_core::on_deliver(command& cmd, time_point now) {
  // Decoded by the machine's one-pass path, or here (into the command, not a copy).
  if (!cmd.has_deliver) {
    if (cmd.decode(cmd.deliver) != codec::errc::ok) return;
    cmd.has_deliver = true;
  }
  const codec::basic_deliver& m = cmd.deliver;
  consumer* c = consumers_.find(m.consumer_tag);
  if (c == nullptr) {
    on_unknown_consumer(m.consumer_tag, m.delivery_tag, now);
    return;
  }
  if (coalesce_) coalescer_.on_delivery(m.delivery_tag, !c->no_ack && recovering_ == 0);
  if (metrics_) {
    metrics_->on_delivered();
    if (c->metrics) c->metrics->on_delivered();
  }
  if (c->stream) {
    streams_ = true;
    c->stream->on_delivery(m.delivery_tag, cmd.has_content
                                               ? stream_offset_header(cmd.header.properties)
                                               : std::nullopt);
  }
  handler_.on_delivery(*c, cmd);
}

void channel_core::on_unknown_consumer(std::string_view tag, std::uint64_t delivery_tag,
                                       time_point now) {
  // While a basic.recover is unanswered the broker requeues whatever reaches us meanwhile.
  const bool owed = recovering_ == 0 &&
                    consumers_.on_unknown(tag) == consumer_table::unknown_verdict::reject &&
                    state() == channel_state::open;
  if (!coalesce_) {
    if (owed) wire_.send_ack(id_, {ack_action::kind::reject, delivery_tag, false, true});
    return;
  }
  coalescer_.on_delivery(delivery_tag, owed);
  // A multiple ack must not span it first: the held decisions go now, then the reject.
  if (owed && coalescer_.reject(delivery_tag, true, now)) flush_acks();
}

void channel_core::on_confirm_command(command& cmd, time_point now) {
  const bool is_ack = cmd.id() == codec::basic_ack::id;
  std::uint64_t tag = 0;
  bool multiple = false;
  if (is_ack) {
    codec::basic_ack m;
    if (cmd.decode(m) != codec::errc::ok) return;
    tag = m.delivery_tag;
    multiple = m.multiple;
  } else {
    codec::basic_nack m;
    if (cmd.decode(m) != codec::errc::ok) return;
    tag = m.delivery_tag;
    multiple = m.multiple;
  }
  bool known = true;
  bool settled = false;
  {
    publish_guard lock(handler_);
    if (!tracker_) return;
    auto complete = [&](const confirm_event& e) {
      settled = true;
      record_confirm(e, now);
      handler_.on_confirm(e);
    };
    known = is_ack ? tracker_->on_ack(tag, multiple, complete)
                   : tracker_->on_nack(tag, multiple, complete);
  }
  if (settled) handler_.after_confirms();
  handler_.on_confirm_frame(is_ack, tag, multiple);
  if (!known && state() == channel_state::open) {
    close(406,
          "PRECONDITION_FAILED - unknown delivery tag " + std::to_string(tag) +
              " in a publisher confirm",
          nullptr);
  }
}

void channel_core::on_return_command(command& cmd) {
  codec::basic_return m;
  if (cmd.decode(m) != codec::errc::ok) return;
  if (metrics_) metrics_->on_returned();
  {
    publish_guard lock(handler_);
    if (tracker_) tracker_->on_return(m.exchange, m.routing_key, m.reply_code, m.reply_text);
  }
  handler_.on_return(cmd, m);
}

void channel_core::on_flow_command(command& cmd) {
  codec::channel_flow m;
  if (cmd.decode(m) != codec::errc::ok) return;
  flow_.store(m.active, std::memory_order_release);
  handler_.on_flow(m.active);
}

void channel_core::on_cancel_command(command& cmd) {
  codec::basic_cancel m;
  if (cmd.decode(m) != codec::errc::ok) return;
  std::unique_ptr<consumer> c = consumers_.remove(m.consumer_tag);
  if (c) handler_.on_consumer_cancelled(std::move(c));
}

void channel_core::on_close_ok(command& cmd) {
  if (state() != channel_state::closing) return;
  std::vector<std::shared_ptr<reply_waiter>> waiters;
  waiters.swap(close_waiters_);
  close_reason why;
  why.reply_code = 200;
  why.reply_text = "channel closed by client";
  end(end_cause::closed_by_client, why);
  sync_waiting();
  for (auto& w : waiters) w->on_reply(cmd);
}

void channel_core::on_reply(command& cmd, time_point now) {
  expectations::entry e;
  switch (expected_.take(cmd.id(), e)) {
    case expectations::match::none:
      return;  // answers no call of ours
    case expectations::match::dropped:
      apply(e.effect, cmd, true, now);
      return;
    case expectations::match::answered:
      sync_waiting();
      apply(e.effect, cmd, false, now);
      if (e.waiter) e.waiter->on_reply(cmd);
      return;
  }
}

void channel_core::apply(effect& e, command& reply, bool late, time_point now) {
  switch (e.what) {
    case effect::kind::none:
      return;
    case effect::kind::open:
      // A late open-ok still opens the channel: the face that gave up closes it (its policy).
      if (state() == channel_state::opening) {
        state_.store(channel_state::open, std::memory_order_release);
        handler_.on_open();
      }
      return;
    case effect::kind::consume: {
      codec::basic_consume_ok m;
      reply.decode(m);
      std::unique_ptr<consumer> c = std::move(e.subscriber);
      if (c->tag.empty()) {
        consumers_.named_consume_pending(-1);
        c->tag = std::string(m.consumer_tag);
      }
      if (late) {
        // Nobody consumes under this tag: stop the broker's deliveries (those in flight meet the
        // unknown-consumer rule, which now knows the tag if it was no-ack).
        if (c->no_ack) consumers_.remember_cancelled(c->tag);
        wire_.send_cancel(id_, c->tag);
        handler_.on_consumer_removed(std::move(c));
        return;
      }
      attach_metrics(*c);
      if (std::unique_ptr<consumer> replaced = consumers_.add(std::move(c))) {
        handler_.on_consumer_removed(std::move(replaced));
      }
      return;
    }
    case effect::kind::cancel: {
      codec::basic_cancel_ok m;
      reply.decode(m);
      if (std::unique_ptr<consumer> c = consumers_.remove(m.consumer_tag)) {
        handler_.on_consumer_removed(std::move(c));
      }
      return;
    }
    case effect::kind::get: {
      if (!reply.is<codec::basic_get_ok>()) return;
      // Its tag is in the channel's sequence: the coalescer learns it here, in wire order, before
      // anyone can settle it.
      codec::basic_get_ok m;
      reply.decode(m);
      const bool owed = !e.no_ack && recovering_ == 0;
      if (!late) {
        if (metrics_) metrics_->on_delivered();
        if (coalesce_) coalescer_.on_delivery(m.delivery_tag, owed);
        return;
      }
      // Nobody will see this message: give it back.
      if (!owed) return;
      if (!coalesce_) {
        wire_.send_ack(id_, {ack_action::kind::reject, m.delivery_tag, false, true});
        return;
      }
      coalescer_.on_delivery(m.delivery_tag, true);
      if (coalescer_.reject(m.delivery_tag, true, now)) flush_acks();
      return;
    }
    case effect::kind::recover:
      if (recovering_ > 0) --recovering_;
      return;
    case effect::kind::qos:
      (e.qos.global ? settings_.qos_global : settings_.qos_per_consumer) = e.qos;
      return;
    case effect::kind::tx_select:
      settings_.tx = true;
      return;
    case effect::kind::flow: {
      codec::channel_flow_ok m;
      if (reply.decode(m) == codec::errc::ok) settings_.client_flow = m.active;
      return;
    }
  }
}

// The end of a life -----------------------------------------------------------------------------

void channel_core::on_closed_by_peer(const close_reason& why) {
  end(end_cause::closed_by_peer, why);
}

void channel_core::on_connection_lost(const close_reason& why) {
  end(end_cause::connection_lost, why);
}

void channel_core::end(end_cause cause, const close_reason& why) {
  if (state() == channel_state::closed) return;
  handler_.on_ending(cause, why);
  state_.store(channel_state::closed, std::memory_order_release);
  bool ended = false;
  {
    publish_guard lock(handler_);
    if (tracker_ && keep_unconfirmed_ && cause == end_cause::connection_lost) {
      tracker_->take_outstanding([&](const confirm_event& e) { handler_.on_kept(e); });
      tracker_.reset();
    } else if (tracker_) {
      tracker_->fail_all(outcome_of(cause), why.reply_code, why.reply_text,
                         [&](const confirm_event& e) {
                           ended = true;
                           record_confirm(e, time_point{});
                           handler_.on_confirm(e);
                         });
      tracker_.reset();
    }
  }
  confirm_timeouts_ = false;
  if (ended) handler_.after_confirms();
  coalescer_.reset();
  actions_.clear();
  recovering_ = 0;
  // A stream consumer leaves with its watermark (what a recovery resumes after); what it had not
  // settled comes again.
  forget_unsettled_stream_deliveries();
  consumers_.clear(
      [&](std::unique_ptr<consumer> c) { handler_.on_consumer_removed(std::move(c)); });
  expected_.fail_all([&](expectations::entry& e) {
    if (e.effect.subscriber) handler_.on_consumer_removed(std::move(e.effect.subscriber));
    if (e.waiter) e.waiter->on_failed(cause, why);
  });
  std::vector<std::shared_ptr<reply_waiter>> closing;
  closing.swap(close_waiters_);
  sync_waiting();
  for (auto& w : closing) w->on_failed(cause, why);
  if (metrics_) metrics_->mark_closed();
  handler_.on_ended(cause, why);
}

// Metrics ---------------------------------------------------------------------------------------

void channel_core::record_confirm(const confirm_event& e, time_point now) noexcept {
  if (!metrics_) return;
  switch (e.outcome) {
    case confirm_outcome::ack:
    case confirm_outcome::nack: {
      if (e.outcome == confirm_outcome::ack) {
        metrics_->on_confirmed();
      } else {
        metrics_->on_nacked();
      }
      // time_point{}: the face did not stamp the publish.
      if (e.published != time_point{} && now >= e.published) {
        metrics_->record_confirm_latency(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - e.published).count()));
      }
      return;
    }
    case confirm_outcome::timeout:
    case confirm_outcome::in_doubt:
    case confirm_outcome::channel_closed:
      metrics_->on_in_doubt();
      return;
  }
}

void channel_core::attach_metrics(consumer& c) {
  if (!metrics_ || c.metrics) return;
  c.metrics = metrics_->add_consumer(c.tag);
  c.channel_metrics = metrics_;
}

}  // namespace warren::protocol
