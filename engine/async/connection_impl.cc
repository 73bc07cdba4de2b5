#include "engine/async/connection_impl.h"

#include <algorithm>
#include <stdexcept>

#include "engine/async/channel_impl.h"
#include "engine/async/engine_impl.h"
#include "engine/close_error.h"

namespace warren::async::detail {

using protocol::clock;
using protocol::time_point;

namespace {

constexpr std::chrono::seconds close_timeout{5};

// A connection.update-secret waiting for its -ok.
struct secret_call final : protocol::reply_waiter, std::enable_shared_from_this<secret_call> {
  explicit secret_call(channel_link& l) : link(l) {}
  void on_reply(protocol::command&) override {
    link.defer([self = shared_from_this()] { self->done.set_value(); });
  }
  void on_failed(protocol::end_cause, const protocol::close_reason& why) override {
    // The exception is made where it is delivered (see on_closed).
    link.defer([self = shared_from_this(), why] { self->done.set_exception(error_from(why)); });
  }
  channel_link& link;
  std::promise<void> done;
};

}  // namespace

connection_impl::connection_impl(engine_impl& e, io_thread& t, const connection_options& o,
                                 io::stream s, protocol::endpoint_list endpoints,
                                 std::size_t endpoint)
    : eng_(e),
      io_(t),
      opts_(o),
      max_pending_(std::max<std::size_t>(e.options.max_pending_deliveries, 2)),
      metrics_(e.options.metrics ? e.options.metrics->add_connection(o.connection_name) : nullptr),
      log_(o.log.with_secret(o.password)),
      staging_(e.options.max_outgoing_bytes),
      machine_(std::make_unique<protocol::connection_machine>(o.machine_config(), *this)),
      stream_(std::move(s)),
      rx_(t.pool()),
      endpoints_(std::move(endpoints)),
      endpoint_(endpoint) {
  machine_->set_metrics(metrics_.get());
  stream_.set_metrics(metrics_.get());
  staging_.set_metrics(metrics_.get());
}

metrics::connection_snapshot connection_impl::metrics_snapshot() const {
  if (!metrics_) return {};
  return metrics_->snapshot();
}

void connection_impl::log(log_level level, std::string_view component,
                          std::string_view message) const {
  if (!log_.enabled(level)) return;
  log_.log(level, component,
           opts_.connection_name.empty() ? std::string(message)
                                         : opts_.connection_name + ": " + std::string(message));
}

connection_impl::~connection_impl() {
  stop_recovery();
}

void connection_impl::set_phase(phase p) {
  phase_.store(p, std::memory_order_release);
}

std::size_t connection_impl::replies_awaited() const noexcept {
  const phase p = phase_.load(std::memory_order_relaxed);
  // While recovering, a handshake or the replay's calls wait: nothing is held back.
  const std::size_t own =
      p == phase::handshake || p == phase::closing || p == phase::recovering ? 1 : 0;
  return channel_waits_ + own + secrets_.waiting();
}

void connection_impl::waiting(int delta) {
  channel_waits_ = static_cast<std::size_t>(static_cast<std::ptrdiff_t>(channel_waits_) + delta);
  if (delta > 0) reply_awaited();
}

// The machine's events --------------------------------------------------------------------------

void connection_impl::on_open() {
  frame_max_.store(machine_->frame_max(), std::memory_order_release);
  table_.set_channel_max(machine_->channel_max());
  close_deadline_ = time_point::max();
  life_open_ = true;
  if (phase_.load(std::memory_order_relaxed) == phase::recovering) {
    // A recovery attempt's handshake: its thread goes on with the replay.
    if (auto a = std::move(attempt_)) defer([a] { a->set_value(); });
    return;
  }
  set_phase(phase::open);
  defer([this] { opened_.set_value(); });
}

void connection_impl::on_command(protocol::command& cmd) {
  if (cmd.channel != 0) {
    table_.on_command(cmd, feed_now_);
    return;
  }
  // Channel 0: the machine passes on update-secret-ok alone.
  protocol::reply_expectations<char>::entry e;
  if (secrets_.take(cmd.id(), e) == protocol::reply_expectations<char>::match::answered) {
    e.waiter->on_reply(cmd);
  }
}

void connection_impl::on_channel_closed(std::uint16_t channel, const protocol::close_reason& why) {
  table_.on_channel_closed(channel, why);
}

void connection_impl::log_end(const protocol::close_reason& why, phase at) const {
  const log_level level = at == phase::closing ? log_level::info : log_level::warning;
  if (!log_.enabled(level)) return;
  std::string m = at == phase::closing     ? "closed"
                  : at == phase::handshake ? "connection failed during the handshake"
                                           : "connection lost";
  m += ": " + why.reply_text;
  if (why.reply_code != 0) m += " (reply code " + std::to_string(why.reply_code) + ")";
  log(level, m);
}

void connection_impl::on_blocked(std::string_view why) {
  staging_.set_blocked(true);
  if (log_.enabled(log_level::warning)) {
    log(log_level::warning, "blocked by the broker (" + std::string(why) +
                                "): publishing waits until connection.unblocked");
  }
  std::function<void(std::string_view)> f;
  {
    std::lock_guard lock(cb_mu_);
    f = on_blocked_cb_;
  }
  if (f) f(why);
}

void connection_impl::on_unblocked() {
  staging_.set_blocked(false);
  log(log_level::info, "unblocked by the broker: publishing resumes");
  staging_.notify_room();
  std::function<void()> f;
  {
    std::lock_guard lock(cb_mu_);
    f = on_unblocked_cb_;
  }
  if (f) f();
}

void connection_impl::on_closed(const protocol::close_reason& machine_reason) {
  // What the machine reports, plus what only this side knows (a timed-out close handshake
  // after a client close is reported by the machine as that close).
  protocol::close_reason why = machine_reason;
  if (!close_note_.empty() && why.reply_text.find(close_note_) == std::string::npos) {
    why.reply_text += "; " + close_note_;
  }
  const phase p = phase_.load(std::memory_order_relaxed);
  if (p == phase::recovering) {
    transport_lost(why);
    return;
  }
  if (p == phase::open && recovery_wanted(why)) {
    begin_recovery(why);
    return;
  }
  finish(why, frame_max_.load(std::memory_order_relaxed) != 0, p == phase::handshake);
}

void connection_impl::finish(const protocol::close_reason& why, bool was_open, bool connecting) {
  log_end(why, phase_.load(std::memory_order_relaxed));
  set_phase(phase::ended);
  table_.on_connection_lost(why);
  secrets_.fail_all([&](protocol::reply_expectations<char>::entry& e) {
    if (e.waiter) e.waiter->on_failed(protocol::end_cause::connection_lost, why);
  });
  {
    std::lock_guard lock(state_mu_);
    reason_ = why;
  }
  ended_cv_.notify_all();
  staging_.notify_room();
  std::function<void(const protocol::close_reason&)> f;
  {
    std::lock_guard lock(cb_mu_);
    f = on_closed_cb_;
  }
  if (!was_open) {
    // The exception is made inside the deferred call and moved into the promise, so no copy of
    // it stays on this thread: its refcount lives in uninstrumented libsupc++, and TSan reported
    // the I/O thread's late release racing with the caller's rethrow.
    if (connecting && !close_note_.empty()) {
      // A deadline ended a handshake (no open-ok, no close from the peer): connect_timeout passed.
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          opts_.connect_timeout.value_or(std::chrono::seconds(0)))
                          .count();
      const bool tls = stream_.is_tls();
      defer([this, ms, tls] {
        opened_.set_exception(std::make_exception_ptr(
            amqp_timeout(std::string(tls ? "TLS and " : "") +
                         "AMQP handshake not finished within connect_timeout (" +
                         std::to_string(ms) + " ms): the peer sent no connection.open-ok")));
      });
    } else {
      defer([this, why] { opened_.set_exception(error_from(why)); });
    }
  }
  if (f) f(why);
}

// What a channel asks of its connection --------------------------------------------------------

void connection_impl::send_frame(out_buffer frame) {
  if (metrics_) metrics_->on_frames_sent();  // one method frame, encoded by the channel
  seal(clock::now());
  push_segment(std::move(frame));
}

void connection_impl::retire(std::unique_ptr<consumer_entry> e) {
  // While a read's deliveries wait to be posted, a consumer among them must outlive the post:
  // it joins the retired ones after the read (after_feed).
  if (!batch_owners_.empty()) {
    to_retire_.push_back(std::move(e));
    return;
  }
  std::lock_guard lock(retired_mu_);
  retired_.push_back(std::move(e));
}

void connection_impl::send_ack(std::uint16_t channel, const protocol::ack_action& a) {
  if (machine_open()) protocol::send_ack_action(*machine_, channel, a);
}

void connection_impl::send_cancel(std::uint16_t channel, std::string_view consumer_tag) {
  if (!machine_open()) return;
  codec::basic_cancel m;
  m.consumer_tag = consumer_tag;
  m.nowait = true;
  machine_->send(channel, m);
}

void connection_impl::open_channel(std::uint16_t channel) {
  if (!machine_open()) return;
  seal(clock::now());
  machine_->open_channel(channel);
}

void connection_impl::close_channel(std::uint16_t channel, std::uint16_t reply_code,
                                    std::string_view reply_text, std::uint16_t class_id,
                                    std::uint16_t method_id) {
  if (!machine_open()) return;
  seal(clock::now());
  machine_->close_channel(channel, reply_code, reply_text, class_id, method_id);
}

// Closing ---------------------------------------------------------------------------------------

void connection_impl::begin_close() {
  if (phase_.load(std::memory_order_relaxed) == phase::recovering) {
    // Closed by the application while recovering: the recovery stops and the connection ends
    // here (a transport in its handshake or replay is dropped without a close handshake).
    give_up({200, "closed by client", 0, 0, false});
    return;
  }
  if (ended() || !machine_) return;
  const time_point now = clock::now();
  close_deadline_ = now + close_timeout;
  for (auto& [id, ch] : channels_) {
    if (ch->is_open()) ch->core().flush_acks();
  }
  seal(now);
  machine_->close(200, "closed by client");
  set_phase(phase::closing);
  reply_awaited();  // the close-ok must not wait for receive batching
}

void connection_impl::force_close(std::string_view why) {
  no_recovery_ = true;
  if (phase_.load(std::memory_order_relaxed) == phase::recovering) {
    give_up({320, std::string(why), 0, 0, false});
    return;
  }
  if (ended() || !machine_) return;
  machine_->transport_closed(why);
  after_feed();
}

// Any thread ------------------------------------------------------------------------------------

std::shared_ptr<channel_impl> connection_impl::open_channel() {
  check_not_io("open_channel");
  if (phase_.load(std::memory_order_acquire) == phase::recovering &&
      std::this_thread::get_id() != rec_thread_id_.load()) {
    throw recoverable_connection_error("connection is recovering");
  }
  if (ended()) {
    std::lock_guard lock(state_mu_);
    std::rethrow_exception(error_from(reason_));
  }
  auto call = std::make_shared<rpc_call>(nullptr, rpc_call::kind::open, codec::channel_open_ok::id);
  auto result = std::make_shared<std::shared_ptr<channel_impl>>();
  std::future<protocol::command> f = call->done.get_future();
  io_.post([self = shared_from_this(), call, result] {
    if (!self->machine_open()) {
      call->done.set_exception(
          std::make_exception_ptr(recoverable_connection_error("connection is closed")));
      return;
    }
    const std::uint16_t id = self->table_.allocate();
    if (id == 0) {
      call->done.set_exception(std::make_exception_ptr(resource_error("no free channel id")));
      return;
    }
    auto ch = std::make_shared<channel_impl>(
        id, channel_impl::environment{
                self, self->io_, self->staging_, self->topology_, self->eng_.pool,
                self->eng_.options, self->frame_max_.load(std::memory_order_relaxed),
                self->eng_.options.recovery.enabled && self->eng_.options.recovery.republish,
                self->metrics_ ? self->metrics_->add_channel(id) : nullptr});
    self->table_.attach(ch->core());
    self->channels_[id] = ch;
    *result = ch;
    call->ch = ch.get();
    ch->open(call);
  });
  if (f.wait_for(eng_.options.rpc_timeout) != std::future_status::ready) {
    // A late open-ok would leave a channel open that nobody holds: close it. `result` is
    // written on the I/O thread, so it is read there.
    const std::exception_ptr why =
        std::make_exception_ptr(rpc_timed_out("channel.open", eng_.options.rpc_timeout));
    io_.run_and_wait([&] {
      if (*result) (*result)->abandon(*call, why);
    });
    throw rpc_timed_out("channel.open", eng_.options.rpc_timeout);
  }
  f.get();
  return *result;
}

void connection_impl::update_secret(std::string_view new_secret, std::string_view why) {
  check_not_io("connection.update-secret");
  if (ended()) {
    std::lock_guard lock(state_mu_);
    std::rethrow_exception(error_from(reason_));
  }
  auto waiter = std::make_shared<secret_call>(*this);
  std::future<void> f = waiter->done.get_future();
  io_.post([self = shared_from_this(), waiter, secret = std::string(new_secret),
            text = std::string(why)] {
    if (!self->machine_open()) {
      waiter->done.set_exception(
          std::make_exception_ptr(recoverable_connection_error("connection is closed")));
      return;
    }
    self->seal(clock::now());  // publishes staged before the call go first
    self->machine_->update_secret(secret, text);
    self->secrets_.push(codec::connection_update_secret_ok::id, waiter);
    self->reply_awaited();
  });
  if (f.wait_for(eng_.options.rpc_timeout) != std::future_status::ready) {
    // The call keeps its place to take a late -ok, but nobody waits for it now.
    io_.run_and_wait([&] { secrets_.abandon(waiter.get()); });
    throw rpc_timed_out("connection.update-secret", eng_.options.rpc_timeout);
  }
  f.get();
}

void connection_impl::close() {
  check_not_io("connection.close");
  {
    std::lock_guard lock(rec_mu_);
    rec_stop_ = true;
  }
  rec_cv_.notify_all();
  io_.post([self = shared_from_this()] { self->begin_close(); });
  {
    std::unique_lock lock(state_mu_);
    ended_cv_.wait_for(lock, close_timeout + std::chrono::seconds(2), [&] { return ended(); });
  }
  // on_closed signals the end in the middle of the I/O thread's round; the consumers its
  // channels retired reach retired_ only at the end of that round (after_feed). A task runs
  // after it: drained before that, they would stay in retired_, whose entries hold the channel
  // and so this connection (a cycle: all of it leaked).
  io_.run_and_wait([] {});
  stop_recovery();
  drain_retired();
  std::lock_guard lock(eng_.conns_mu);
  std::erase_if(eng_.conns, [this](const auto& c) { return c.get() == this; });
}

void connection_impl::drain_retired() {
  if (in_handler() || io_thread::current() != nullptr) return;
  std::vector<std::unique_ptr<consumer_entry>> take;
  {
    std::lock_guard lock(retired_mu_);
    take.swap(retired_);
  }
  take.clear();  // each mailbox drains: handlers in flight finish here
}

void connection_impl::delivery_handled(std::size_t n) noexcept {
  const auto count = static_cast<std::int64_t>(n);
  const std::int64_t left = pending_deliveries_.fetch_sub(count, std::memory_order_acq_rel) - count;
  if (paused_.load(std::memory_order_acquire) &&
      left <= static_cast<std::int64_t>(max_pending_) / 2 &&
      !resume_posted_.exchange(true, std::memory_order_acq_rel)) {
    io_.post([self = shared_from_this()] {
      self->resume_reading();
      // Read at once: the machine's dead-peer check must see the peer's bytes (queued while
      // paused) before its next timer runs.
      if (!self->paused_.load(std::memory_order_relaxed)) self->read_some(clock::now());
    });
  }
}

std::size_t connection_impl::pending_deliveries() const noexcept {
  const std::int64_t n = pending_deliveries_.load(std::memory_order_relaxed);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

protocol::close_reason connection_impl::close_reason() const {
  std::lock_guard lock(state_mu_);
  return reason_;
}

void connection_impl::set_on_blocked(std::function<void(std::string_view)> f) {
  std::lock_guard lock(cb_mu_);
  on_blocked_cb_ = std::move(f);
}

void connection_impl::set_on_unblocked(std::function<void()> f) {
  std::lock_guard lock(cb_mu_);
  on_unblocked_cb_ = std::move(f);
}

void connection_impl::set_on_closed(std::function<void(const protocol::close_reason&)> f) {
  std::lock_guard lock(cb_mu_);
  on_closed_cb_ = std::move(f);
}

}  // namespace warren::async::detail
