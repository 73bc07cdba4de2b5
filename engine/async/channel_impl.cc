#include "engine/async/channel_impl.h"

#include <stdexcept>
#include <string>

#include "engine/close_error.h"

namespace warren::async::detail {

using protocol::clock;
using protocol::time_point;

namespace {

std::exception_ptr channel_closed_error() {
  return std::make_exception_ptr(recoverable_connection_error("channel is closed"));
}

confirm_result to_result(const protocol::confirm_event& e) {
  confirm_result r{};
  r.what = static_cast<confirm_result::outcome>(e.outcome);
  r.sequence = e.sequence;
  r.returned = e.returned;
  r.reply_code = e.reply_code;
  r.reply_text = std::string(e.reply_text);
  return r;
}

}  // namespace

amqp_timeout rpc_timed_out(std::string_view what, std::chrono::milliseconds after) {
  return amqp_timeout(std::string(what) + ": no reply within " + std::to_string(after.count()) +
                      " ms");
}

void check_not_io(std::string_view what) {
  if (io_thread::current() != nullptr) {
    throw std::logic_error(std::string(what) + ": blocking call on an I/O thread");
  }
}

// rpc_call ----------------------------------------------------------------------------------------

void rpc_call::on_reply(protocol::command& reply) {
  if (what == kind::get) life = ch->core().life();
  auto c = std::make_shared<protocol::command>(std::move(reply));
  ch->link().defer([self = shared_from_this(), c] { self->done.set_value(std::move(*c)); });
}

void rpc_call::on_failed(protocol::end_cause cause, const protocol::close_reason& why) {
  if (what == kind::close) {
    // The channel is closed either way: a close does not fail.
    ch->link().defer([self = shared_from_this()] { self->done.set_value(protocol::command{}); });
    return;
  }
  const std::exception_ptr err = ch->error_for(cause, why);
  ch->link().defer([self = shared_from_this(), err] { self->done.set_exception(err); });
}

// channel_impl ----------------------------------------------------------------------------------

namespace {
protocol::channel_core_options core_options(std::shared_ptr<metrics::channel_metrics> m) {
  protocol::channel_core_options o;
  o.metrics = std::move(m);
  return o;
}
}  // namespace

channel_impl::channel_impl(std::uint16_t id, environment env)
    : core_(id, env.link->wire(), *this, core_options(std::move(env.metrics))),
      link_(std::move(env.link)),
      io_(env.io),
      staging_(env.staging),
      topology_(env.topology),
      pool_(env.pool),
      options_(env.options),
      frame_max_(env.frame_max),
      republish_(env.republish) {
  core_.keep_unconfirmed_on_loss(republish_);
}

channel_impl::~channel_impl() = default;

std::exception_ptr channel_impl::error() const {
  std::lock_guard lock(err_mu_);
  return error_;
}

void channel_impl::set_error(std::exception_ptr e, bool replace) {
  std::lock_guard lock(err_mu_);
  if (replace || !error_) error_ = std::move(e);
}

std::exception_ptr channel_impl::error_for(protocol::end_cause cause,
                                           const protocol::close_reason& why) const {
  if (cause != protocol::end_cause::closed_by_client) return error_from(why);
  std::exception_ptr e = error();
  return e ? e : channel_closed_error();
}

void channel_impl::throw_if_closed() const {
  if (core_.is_open()) return;
  if (staging_.recovering() && awaits_recovery_flag()) {
    throw recoverable_connection_error("connection is recovering");
  }
  std::exception_ptr e = error();
  std::rethrow_exception(e ? e : channel_closed_error());
}

// I/O thread ------------------------------------------------------------------------------------

void channel_impl::open(std::shared_ptr<rpc_call> call) {
  core_.open(std::move(call));
}

bool channel_impl::apply(const ack_request& r, time_point now) {
  const std::uint32_t life = r.life;
  bool ok = false;
  switch (r.what) {
    case ack_request::kind::ack:
      ok = core_.ack(life, r.tag, r.multiple, now);
      break;
    case ack_request::kind::nack:
      ok = core_.nack(life, r.tag, r.multiple, r.requeue, now);
      break;
    case ack_request::kind::reject:
      ok = core_.reject(life, r.tag, r.requeue, now);
      break;
    case ack_request::kind::idle:
      // Nothing left to handle on this channel: no more decisions are coming soon, so the held
      // ones go now instead of waiting for max_delay.
      if (pending.load(std::memory_order_acquire) == 0 && life == core_.life()) {
        core_.flush_acks();
      }
      return false;
  }
  if (!ok || acks_touched_) return false;
  acks_touched_ = true;
  return true;
}

void channel_impl::send_due_acks(time_point now) {
  acks_touched_ = false;
  core_.poll_acks(now);
}

void channel_impl::service(time_point now) {
  core_.on_timer(now);
  complete_confirms();
}

void channel_impl::post_call(std::shared_ptr<rpc_call> c, out_buffer frame) {
  io_.post([self = shared_from_this(), c = std::move(c),
            fr = std::make_shared<out_buffer>(std::move(frame))]() mutable {
    self->start_call(std::move(c), std::move(*fr), clock::now());
  });
}

protocol::command channel_impl::wait_reply(std::future<protocol::command>& f, rpc_call& c,
                                           std::string_view what) {
  if (f.wait_for(options_.rpc_timeout) != std::future_status::ready) {
    const std::exception_ptr why =
        std::make_exception_ptr(rpc_timed_out(what, options_.rpc_timeout));
    // Waited for, so that is_open() is false once the call has thrown.
    io_.run_and_wait([this, &c, &why] { abandon(c, why); });
    throw rpc_timed_out(what, options_.rpc_timeout);
  }
  return f.get();
}

void channel_impl::start_call(std::shared_ptr<rpc_call> c, out_buffer frame, time_point now) {
  if (!core_.is_open()) {
    std::exception_ptr e = error();
    c->done.set_exception(e ? e : channel_closed_error());
    return;
  }
  // Decisions made before this call go first, so that tx.commit covers a handler's ack and
  // basic.recover does not give back what was acked: the ones still queued for this thread,
  // then every one this channel holds.
  io_.apply_acks(now);
  core_.flush_acks();
  if (c->what == rpc_call::kind::confirm_select) {
    start_confirm_select(std::move(c), std::move(frame));
    return;
  }
  // Publishes staged before this call go first: a thread that publishes and then declares or
  // deletes sees its operations reach the broker in that order.
  link_->send_frame(std::move(frame));
  const bool nowait = c->reply_id == 0;
  const std::shared_ptr<protocol::reply_waiter> waiter = nowait ? nullptr : c;
  switch (c->what) {
    case rpc_call::kind::consume:
      c->consumer->route->life = core_.life();
      // nowait: registered now, before its first delivery can arrive.
      core_.consume_sent(std::move(c->consumer), waiter);
      break;
    case rpc_call::kind::cancel:
      core_.cancel_sent(c->consumer_tag, waiter);
      break;
    case rpc_call::kind::get:
      core_.get_sent(c->no_ack, waiter);
      break;
    case rpc_call::kind::recover:
      core_.recover_sent(waiter);
      break;
    case rpc_call::kind::qos:
      core_.qos_sent(c->qos, waiter);
      break;
    case rpc_call::kind::tx_select:
      core_.tx_select_sent(waiter);
      break;
    case rpc_call::kind::flow:
      core_.flow_sent(waiter);
      break;
    default:
      if (!nowait) core_.expect(c->reply_id, waiter, c->alt_reply_id);
      break;
  }
  // nowait: no reply will come, so nothing waits for one (it would take the next call's reply).
  if (nowait) c->done.set_value(protocol::command{});
}

void channel_impl::abandon(rpc_call& c, std::exception_ptr why) {
  core_.abandon(&c);
  if (core_.state() == protocol::channel_state::closed) return;
  set_error(std::move(why), false);
  // The calls still waiting fail when close-ok arrives (the channel's end); if it never does,
  // their callers time out too.
  core_.close(200, "closed by client: no reply in time", nullptr);
}

void channel_impl::close() {
  check_not_io("channel.close");
  auto c = std::make_shared<rpc_call>(this, rpc_call::kind::close, 0);
  std::future<protocol::command> f = c->done.get_future();
  io_.post([self = shared_from_this(), c] {
    if (!self->core_.is_open()) {
      c->done.set_value(protocol::command{});
      return;
    }
    // Decisions made before the close go first, as before any call (start_call): the ones still
    // queued for this thread (core_.close() sends those the channel holds). Once it is closing,
    // a queued one is dropped, and the broker would requeue a message that was handled.
    self->io_.apply_acks(clock::now());
    if (!self->core_.close(200, "closed by client", c)) c->done.set_value(protocol::command{});
  });
  if (f.wait_for(options_.rpc_timeout) != std::future_status::ready) {
    // The close-ok may still come and end the channel; nobody waits for it now.
    io_.run_and_wait([this, &c] { core_.abandon(c.get()); });
    throw rpc_timed_out("channel.close", options_.rpc_timeout);
  }
  try {
    f.get();
  } catch (...) {
  }
  topology_.change([&](protocol::topology& t) { t.close_channel(id()); });
  link_->drain_retired();
}

// Events of the core (I/O thread) ----------------------------------------------------------------

void channel_impl::on_confirm(const protocol::confirm_event& e) {
  if (e.outcome == protocol::confirm_outcome::in_doubt) {
    in_doubt_.fetch_add(1, std::memory_order_relaxed);
  }
  done_.push_back({to_result(e), std::move(callbacks_[e.sequence & mask_])});
  ++undelivered_;
  const protocol::confirm_tracker* t = core_.confirms();
  outstanding_.store(t != nullptr ? t->outstanding() : 0, std::memory_order_relaxed);
}

void channel_impl::complete_confirms() {
  if (done_.empty()) return;
  std::vector<done_confirm> run;
  run.swap(done_);
  for (auto& d : run) {
    if (!d.callback) continue;
    try {
      d.callback(d.result);
    } catch (...) {
      // A callback's exception must not take down the I/O thread; the contract says keep
      // callbacks short and non-throwing, so it is dropped.
    }
  }
  bool room = true;
  {
    std::lock_guard lock(staging_.lock());
    undelivered_ -= run.size();
    // A publisher waiting for the window is woken once a quarter of it is free, not at every
    // ack the broker sends: one wake-up per window/4 publishes instead of one per ack frame (a
    // futex round trip each). wait_for_confirms waits for none outstanding, below the mark.
    if (const protocol::confirm_tracker* t = core_.confirms()) {
      room = t->outstanding() <= t->window() - t->window() / 4;
    }
  }
  run.clear();
  if (done_.empty()) done_.swap(run);  // keep the capacity
  if (room) staging_.notify_room();
}

void channel_impl::on_return(protocol::command& cmd, const codec::basic_return& m) {
  if (!on_return_) return;
  returned_message r;
  r.reply_code = m.reply_code;
  r.reply_text = m.reply_text;
  r.exchange = m.exchange;
  r.routing_key = m.routing_key;
  r.header = &cmd.header;
  r.body = cmd.body;
  try {
    on_return_(r);
  } catch (...) {
  }
}

void channel_impl::on_flow(bool /*active*/) {
  staging_.notify_room();
}

void channel_impl::on_consumer_cancelled(std::unique_ptr<protocol::consumer> c) {
  std::unique_ptr<consumer_entry> e(static_cast<consumer_entry*>(c.release()));
  if (link_->log().enabled(log_level::warning)) {
    link_->log().log(log_level::warning, log_component::consumer,
                     "consumer " + e->tag + " on channel " + std::to_string(id()) +
                         " cancelled by the broker (basic.cancel: its queue was deleted, or it "
                         "failed over); no more deliveries come to it");
  }
  topology_.change([&](protocol::topology& t) { t.cancel(id(), e->tag); });
  if (e->on_cancel) {
    try {
      e->on_cancel(e->tag);
    } catch (...) {
    }
  }
  link_->retire(std::move(e));
}

void channel_impl::on_consumer_removed(std::unique_ptr<protocol::consumer> c) {
  // A stream consumer's progress goes into its topology record, for a recovery to resume after
  // (a record already removed by a cancel or a close is not there to take it).
  if (c->stream && c->stream->last_handled()) {
    topology_.change(
        [&](protocol::topology& t) { t.stream_handled(id(), c->tag, *c->stream->last_handled()); });
  }
  std::unique_ptr<consumer_entry> e(static_cast<consumer_entry*>(c.release()));
  if (awaits_recovery_ && staging_.recovering()) {
    // Kept with its mailbox for the replay: its handler goes on with the recovered consumer,
    // so the deliveries of the two never run at once (concurrency holds across the recovery).
    stashed_.push_back(std::move(e));
    return;
  }
  link_->retire(std::move(e));
}

void channel_impl::on_ending(protocol::end_cause cause, const protocol::close_reason& why) {
  // A loss that is being recovered is not this channel's end: no error stays behind.
  if (awaits_recovery_ && staging_.recovering() && cause == protocol::end_cause::connection_lost) {
    return;
  }
  // Before the channel reads closed: a publisher that sees it closed finds the reason.
  if (cause != protocol::end_cause::closed_by_client) set_error(error_from(why), true);
}

// Recovery ---------------------------------------------------------------------------------------

void channel_impl::prepare_recovery() {
  const protocol::channel_state s = core_.state();
  awaits_recovery_ = s == protocol::channel_state::open || s == protocol::channel_state::opening;
  awaits_recovery_flag_.store(awaits_recovery_, std::memory_order_release);
}

void channel_impl::on_kept(const protocol::confirm_event& e) {
  const std::uint64_t slot = e.sequence & mask_;
  kept_.push_back({std::move(frames_[slot]), std::move(callbacks_[slot]), e.token});
}

void channel_impl::end_recovery(const protocol::close_reason& why) {
  awaits_recovery_ = false;
  awaits_recovery_flag_.store(false, std::memory_order_release);
  for (auto& e : stashed_) link_->retire(std::move(e));
  stashed_.clear();
  std::vector<kept_publish> left;
  {
    std::lock_guard lock(staging_.lock());
    left.swap(kept_);
    for (kept_publish& k : left) {
      confirm_result r{};
      r.what = confirm_result::outcome::in_doubt;
      r.reply_code = why.reply_code;
      r.reply_text = why.reply_text;
      done_.push_back({std::move(r), std::move(k.callback)});
      ++undelivered_;
    }
  }
  in_doubt_.fetch_add(left.size(), std::memory_order_relaxed);
  if (!core_.is_open()) set_error(error_from(why), false);
  complete_confirms();
  staging_.notify_room();
}

void channel_impl::on_ended(protocol::end_cause, const protocol::close_reason&) {
  complete_confirms();
  // Publishers waiting for room or for confirms see the channel closed.
  staging_.notify_room();
}

}  // namespace warren::async::detail
