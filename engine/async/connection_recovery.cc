// A connection's automatic recovery (engine_options::recovery; engine/protocol/recovery.h decides
// what and when, this file does it).
//
// On the I/O thread: the loss (begin_recovery, from on_closed) ends every channel's life, keeping
// the channels that were open (with their consumers and, with republish, their unconfirmed
// publishes), and drops the transport at the end of the round; install() hands the machine a new
// transport for each attempt; give_up() ends the connection for good.
//
// On the connection's recovery thread (started at the first loss, joined by close()): the
// attempts of a recovery_schedule (connect_tcp with a deadline, then the handshake on the I/O
// thread), then the replay_plan through the channels' ordinary blocking calls, then the phase is
// open again and on_recovered runs. A loss during the replay starts a new recovery; close() stops
// it at the next step.
#include <chrono>
#include <thread>

#include "engine/async/channel_impl.h"
#include "engine/async/connection_impl.h"
#include "engine/async/engine_impl.h"
#include "engine/close_error.h"
#include "engine/io/tls.h"

namespace warren::async::detail {

using protocol::clock;
using protocol::time_point;

namespace {

constexpr std::chrono::seconds default_attempt_timeout{10};

std::chrono::nanoseconds attempt_timeout(const connection_options& o) {
  if (o.connect_timeout)
    return std::chrono::duration_cast<std::chrono::nanoseconds>(*o.connect_timeout);
  return default_attempt_timeout;
}

}  // namespace

// Any thread ------------------------------------------------------------------------------------

connection_state connection_impl::state() const noexcept {
  switch (phase_.load(std::memory_order_acquire)) {
    case phase::handshake:
    case phase::open:
      return connection_state::open;
    case phase::recovering:
      return connection_state::recovering;
    default:
      return connection_state::closed;
  }
}

void connection_impl::set_on_recovery_started(
    std::function<void(const protocol::close_reason&)> f) {
  std::lock_guard lock(cb_mu_);
  on_recovery_started_cb_ = std::move(f);
}

void connection_impl::set_on_recovered(std::function<void(const recovery_report&)> f) {
  std::lock_guard lock(cb_mu_);
  on_recovered_cb_ = std::move(f);
}

void connection_impl::set_on_recovery_failed(std::function<void(const protocol::close_reason&)> f) {
  std::lock_guard lock(cb_mu_);
  on_recovery_failed_cb_ = std::move(f);
}

std::string connection_impl::endpoint() const {
  const std::size_t i = endpoint_.load(std::memory_order_relaxed);
  return i < endpoints_.size() ? endpoints_.at(i) : opts_.host;
}

template <class F>
void connection_impl::run_hook(const F& call) {
  try {
    call();
  } catch (...) {
    // A hook's exception must not end the recovery thread.
  }
}

void connection_impl::stop_recovery() {
  {
    std::lock_guard lock(rec_mu_);
    rec_stop_ = true;
  }
  rec_cv_.notify_all();
  if (!rec_thread_.joinable()) return;
  if (rec_thread_.get_id() == std::this_thread::get_id()) {
    rec_thread_.detach();  // a hook closed its own connection: the thread ends on its own
  } else {
    rec_thread_.join();
  }
}

// I/O thread ------------------------------------------------------------------------------------

bool connection_impl::recovery_wanted(const protocol::close_reason& why) const {
  if (no_recovery_) return false;
  return protocol::should_recover(protocol::classify_loss(why, false), eng_.options.recovery);
}

void connection_impl::begin_recovery(const protocol::close_reason& why) {
  // Before the channels end: their ending reads the connection as recovering, and keeps what the
  // replay needs instead of reporting an end.
  set_phase(phase::recovering);
  {
    std::lock_guard lock(staging_.lock());
    staging_.set_recovering(true);
  }
  for (auto& [id, ch] : channels_) ch->prepare_recovery();
  life_open_ = false;
  drop_transport_ = true;
  table_.on_connection_lost(why);
  secrets_.fail_all([&](protocol::reply_expectations<char>::entry& e) {
    if (e.waiter) e.waiter->on_failed(protocol::end_cause::connection_lost, why);
  });
  staging_.notify_room();  // publishers waiting for room now wait for the recovery
  {
    std::lock_guard lock(rec_mu_);
    rec_requested_ = true;
    rec_reason_ = why;
    rec_lost_at_ = clock::now();
    rec_lost_endpoint_ = endpoint_.load(std::memory_order_relaxed);
    if (!rec_thread_.joinable() && !rec_stop_) {
      rec_thread_ = std::thread([self = shared_from_this()] { self->recovery_main(); });
    }
  }
  rec_cv_.notify_all();
}

void connection_impl::transport_lost(const protocol::close_reason& why) {
  const bool was_open = life_open_;
  life_open_ = false;
  drop_transport_ = true;
  if (auto a = std::move(attempt_)) {
    defer([a, why] { a->set_exception(error_from(why)); });
  }
  if (!was_open) return;  // an attempt's handshake failed: the recovery thread tries the next
  // The recovered transport died during the replay: the channels reopened so far end again (their
  // consumers and publishes kept as before), and the recovery starts over.
  table_.on_connection_lost(why);
  secrets_.fail_all([&](protocol::reply_expectations<char>::entry& e) {
    if (e.waiter) e.waiter->on_failed(protocol::end_cause::connection_lost, why);
  });
  {
    std::lock_guard lock(rec_mu_);
    rec_requested_ = true;
    rec_reason_ = why;
    rec_lost_at_ = clock::now();
    rec_lost_endpoint_ = endpoint_.load(std::memory_order_relaxed);
  }
  rec_cv_.notify_all();
}

void connection_impl::drop_transport() {
  drop_transport_ = false;
  if (stream_.valid()) {
    io_.loop().remove(stream_.fd());
    stream_.close();
  }
  segs_.clear();
  seg_head_ = 0;
  events_ = 0;
  rx_.release();
  // The machine holds receive buffers of partial commands: back to this thread's pool now.
  machine_.reset();
  // Publishes staged for the lost transport ended in doubt, or were kept to be republished.
  staging_.clear();
  paused_.store(false, std::memory_order_relaxed);
  rx_lowat_ = 1;
  last_read_ = time_point::min();
  batch_read_at_ = time_point::max();
  close_deadline_ = time_point::max();
  close_note_.clear();
}

void connection_impl::install(io::stream s, std::size_t endpoint,
                              std::shared_ptr<std::promise<void>> opened) {
  // The loss's transport goes at the end of its round; an attempt may come before that.
  if (drop_transport_) drop_transport();
  if (phase_.load(std::memory_order_relaxed) != phase::recovering || machine_) {
    opened->set_exception(std::make_exception_ptr(
        recoverable_connection_error("connection is no longer recovering")));
    return;
  }
  stream_ = std::move(s);
  machine_ = std::make_unique<protocol::connection_machine>(opts_.machine_config(), *this);
  // The connection's metrics outlive its transports: the new stream and machine count on.
  machine_->set_metrics(metrics_.get());
  stream_.set_metrics(metrics_.get());
  endpoint_.store(endpoint, std::memory_order_relaxed);
  attempt_ = std::move(opened);
  staging_.set_blocked(false);
  const time_point now = clock::now();
  start(now);
  // Every attempt's handshake is bounded, connect_timeout or not: a peer that accepts and says
  // nothing must not stall the recovery.
  close_deadline_ = now + std::chrono::duration_cast<clock::duration>(attempt_timeout(opts_));
}

void connection_impl::give_up(const protocol::close_reason& why) {
  if (ended()) return;
  if (auto a = std::move(attempt_)) {
    defer([a, why] { a->set_exception(error_from(why)); });
  }
  for (auto& [id, ch] : channels_) {
    if (ch->awaits_recovery()) ch->end_recovery(why);
  }
  {
    std::lock_guard lock(staging_.lock());
    staging_.set_recovering(false);
  }
  life_open_ = false;
  drop_transport_ = false;
  finish(why, true, false);
  after_feed();  // not inside a read: the replies deferred above are released here
}

// The recovery thread ---------------------------------------------------------------------------

void connection_impl::recovery_main() {
  rec_thread_id_.store(std::this_thread::get_id());
  std::unique_lock lock(rec_mu_);
  while (true) {
    rec_cv_.wait(lock, [&] { return rec_requested_ || rec_stop_; });
    if (rec_stop_) return;
    rec_requested_ = false;
    const protocol::close_reason why = rec_reason_;
    const time_point lost_at = rec_lost_at_;
    const std::size_t lost_endpoint = rec_lost_endpoint_;
    lock.unlock();
    recover_once(why, lost_at, lost_endpoint);
    lock.lock();
  }
}

bool connection_impl::recover_once(const protocol::close_reason& why, time_point lost_at,
                                   std::size_t lost_endpoint) {
  log(log_level::warning, log_component::recovery,
      "connection lost, recovery started: " + why.reply_text +
          (why.reply_code != 0 ? " (reply code " + std::to_string(why.reply_code) + ")" : ""));
  {
    std::function<void(const protocol::close_reason&)> f;
    {
      std::lock_guard lock(cb_mu_);
      f = on_recovery_started_cb_;
    }
    if (f) run_hook([&] { f(why); });
  }
  const protocol::recovery_policy& policy = eng_.options.recovery;
  protocol::recovery_schedule schedule(
      policy, endpoints_.size(), lost_endpoint, lost_at,
      reinterpret_cast<std::uintptr_t>(this) ^
          static_cast<std::uint64_t>(lost_at.time_since_epoch().count()));
  std::string error;
  while (true) {
    const std::optional<protocol::recovery_schedule::attempt> a = schedule.next();
    if (!a) {
      protocol::close_reason end = why;
      end.reply_text += "; recovery gave up after " + std::to_string(schedule.attempts()) +
                        " attempts (last: " + error + ")";
      log(log_level::error, log_component::recovery, "recovery gave up: " + end.reply_text);
      // The hook first, then the end (on_closed): once state() reads closed, it has run.
      std::function<void(const protocol::close_reason&)> f;
      {
        std::lock_guard lock(cb_mu_);
        f = on_recovery_failed_cb_;
      }
      if (f) run_hook([&] { f(end); });
      io_.run_and_wait([&] { give_up(end); });
      return false;
    }
    {
      std::unique_lock lock(rec_mu_);
      if (rec_cv_.wait_until(lock, a->at, [&] { return rec_stop_; })) return false;
    }
    if (try_endpoint(a->endpoint, error)) {
      schedule.succeeded(a->number);
      break;
    }
    schedule.failed(a->number, clock::now());
    std::lock_guard lock(rec_mu_);
    if (rec_stop_) return false;
  }
  protocol::recovery_report report;
  report.trigger = protocol::classify_loss(why, false);
  report.reason = why.reply_text;
  report.attempts = schedule.attempts();
  report.endpoint = endpoint();
  if (!replay(report)) return false;  // lost again, or closed: the main loop decides
  bool finished = false;
  std::uint64_t in_doubt = 0, republished = 0;
  io_.run_and_wait([&] {
    if (phase_.load(std::memory_order_relaxed) != phase::recovering || drop_transport_ ||
        !life_open_) {
      return;
    }
    for (auto& [id, ch] : channels_) {
      if (ch->awaits_recovery()) ch->end_recovery({320, "channel not recovered", 0, 0, false});
      in_doubt += ch->in_doubt_count();
      republished += ch->republished_count();
    }
    {
      std::lock_guard lock(staging_.lock());
      staging_.set_recovering(false);
    }
    set_phase(phase::open);
    staging_.notify_room();
    if (metrics_) metrics_->on_recovered();
    finished = true;
  });
  if (!finished) return false;
  report.in_doubt = in_doubt - in_doubt_seen_;
  report.republished = republished - republished_seen_;
  in_doubt_seen_ = in_doubt;
  republished_seen_ = republished;
  report.took = clock::now() - lost_at;
  for (const protocol::recovery_failure& f : report.failures) {
    log(log_level::warning, log_component::recovery,
        "replay refused: " + f.entity + ": " + f.reply_text +
            (f.reply_code != 0 ? " (reply code " + std::to_string(f.reply_code) + ")" : ""));
  }
  if (log_.enabled(log_level::info)) {
    log(log_level::info, log_component::recovery,
        "recovered after " + std::to_string(report.attempts) + " attempt(s) in " +
            std::to_string(
                std::chrono::duration_cast<std::chrono::milliseconds>(report.took).count()) +
            " ms, to " + report.endpoint + ": " + std::to_string(report.republished) +
            " publishes republished, " + std::to_string(report.in_doubt) + " in doubt, " +
            std::to_string(report.failures.size()) + " entities refused");
  }
  std::function<void(const recovery_report&)> f;
  {
    std::lock_guard lock(cb_mu_);
    f = on_recovered_cb_;
  }
  if (f) run_hook([&] { f(report); });
  return true;
}

bool connection_impl::try_endpoint(std::size_t endpoint, std::string& error) {
  const std::string& where = endpoints_.at(endpoint);
  io::host_port peer;
  const std::uint16_t default_port = opts_.ssl ? io::default_amqps_port : io::default_amqp_port;
  if (auto e = io::parse_host_port(where, default_port, peer); e) {
    error = where + ": " + e.message;
    return false;
  }
  const auto timeout = std::chrono::duration_cast<clock::duration>(attempt_timeout(opts_));
  const time_point deadline = clock::now() + timeout;
  const auto settings = io::effective_socket_settings(opts_.socket_settings, false);
  io::io_error err;
  io::unique_fd fd = io::connect_tcp(peer, settings, deadline, err);
  if (!fd.valid()) {
    error = where + ": " + err.message;
    return false;
  }
  std::unique_ptr<io::tls_session> tls;
  if (opts_.ssl) {
    auto ctx = io::tls_context::create(*opts_.ssl, err);
    if (ctx) tls = io::tls_session::create(ctx, peer.host, err);
    if (!tls) {
      error = where + ": " + err.message;
      return false;
    }
  }
  auto s = std::make_shared<io::stream>(io::stream::open(std::move(fd), std::move(tls), err));
  if (err) {
    error = where + ": " + err.message;
    return false;
  }
  auto opened = std::make_shared<std::promise<void>>();
  std::future<void> f = opened->get_future();
  io_.post([self = shared_from_this(), s, endpoint, opened] {
    self->install(std::move(*s), endpoint, opened);
  });
  // The I/O thread's handshake deadline (install) answers first; this one only guards against a
  // lost answer.
  if (f.wait_for(timeout + std::chrono::seconds(2)) != std::future_status::ready) {
    io_.run_and_wait([&] {
      if (attempt_ == opened && machine_)
        machine_->transport_closed("recovery handshake timed out");
      after_feed();
    });
    error = where + ": handshake timed out";
    return false;
  }
  try {
    f.get();
    return true;
  } catch (const std::exception& e) {
    error = where + ": " + e.what();
    return false;
  }
}

bool connection_impl::replay(protocol::recovery_report& report) {
  std::vector<std::shared_ptr<channel_impl>> chans;
  std::vector<protocol::channel_replay> replays;
  io_.run_and_wait([&] {
    for (auto& [id, ch] : channels_) {
      if (!ch->awaits_recovery()) continue;
      chans.push_back(ch);
      replays.push_back({id, ch->core().settings()});
    }
  });
  protocol::replay_plan plan(std::move(replays), topology_.snapshot(),
                             eng_.options.recovery_filter);
  auto channel_of = [&](std::uint16_t id) -> channel_impl& {
    for (auto& c : chans) {
      if (c->id() == id) return *c;
    }
    throw std::logic_error("replay: no channel " + std::to_string(id));
  };
  auto interrupted = [&] {
    std::lock_guard lock(rec_mu_);
    return rec_requested_ || rec_stop_;
  };
  std::shared_ptr<channel_impl> rc;  // exchanges, queues and bindings are declared on it
  auto replay_channel = [&]() -> channel_impl& {
    if (!rc || !rc->is_open()) rc = open_channel();
    return *rc;
  };
  using kind = protocol::replay_step::kind;
  for (const protocol::replay_step& st : plan.steps()) {
    if (interrupted()) return false;
    try {
      switch (st.what) {
        case kind::channel_open: {
          channel_impl& ch = channel_of(st.channel);
          auto call =
              std::make_shared<rpc_call>(&ch, rpc_call::kind::open, codec::channel_open_ok::id);
          std::future<protocol::command> f = call->done.get_future();
          io_.post([self = shared_from_this(), ch = ch.shared_from_this(), call] {
            if (!self->machine_open() || !self->life_open_) {
              call->done.set_exception(
                  std::make_exception_ptr(recoverable_connection_error("connection lost again")));
              return;
            }
            ch->open(call);
          });
          if (f.wait_for(eng_.options.rpc_timeout) != std::future_status::ready) {
            const std::exception_ptr why =
                std::make_exception_ptr(rpc_timed_out("channel.open", eng_.options.rpc_timeout));
            io_.run_and_wait([&] { ch.abandon(*call, why); });
            std::rethrow_exception(why);
          }
          f.get();
          break;
        }
        case kind::qos_global:
        case kind::qos_per_consumer: {
          const auto& s = plan.channel(st).settings;
          const protocol::qos_settings q =
              st.what == kind::qos_global ? *s.qos_global : *s.qos_per_consumer;
          channel_of(st.channel).basic_qos(q.prefetch_size, q.prefetch_count, q.global);
          break;
        }
        case kind::confirm_select: {
          const auto& c = *plan.channel(st).settings.confirms;
          channel_of(st.channel)
              .confirm_select(c.window,
                              std::chrono::duration_cast<std::chrono::milliseconds>(c.timeout));
          break;
        }
        case kind::tx_select:
          channel_of(st.channel).tx(codec::tx_select::id);
          break;
        case kind::client_flow:
          channel_of(st.channel).flow(false);
          break;
        case kind::exchange: {
          const protocol::exchange_record& e = plan.exchange(st);
          exchange_declare_options o = e.options;
          o.nowait = false;
          o.passive = false;
          const std::string args = encode_arguments(o.arguments);
          replay_channel().call(exchange_declare_method(e.name, e.type, o, args),
                                codec::exchange_declare_ok::id);
          break;
        }
        case kind::queue: {
          const protocol::queue_record& q = plan.queue(st);
          queue_declare_options o = q.options;
          o.nowait = false;
          o.passive = false;
          const std::string args = encode_arguments(o.arguments);
          protocol::command reply = replay_channel().call(
              queue_declare_method(plan.declare_name(st), o, args), codec::queue_declare_ok::id);
          codec::queue_declare_ok ok;
          reply.decode(ok);
          const std::string old = q.name;
          const std::string now(ok.queue);
          plan.succeeded(st, now);
          if (now != old) {
            topology_.change([&](protocol::topology& t) { t.rename_queue(old, now); });
          }
          continue;
        }
        case kind::binding: {
          const protocol::binding_record& b = plan.binding(st);
          bind_options o;
          o.arguments = b.arguments;
          const std::string args = encode_arguments(o.arguments);
          if (b.what == protocol::binding_record::kind::queue) {
            replay_channel().call(
                queue_bind_method(b.destination, b.source, b.routing_key, o, args),
                codec::queue_bind_ok::id);
          } else {
            replay_channel().call(
                exchange_bind_method(b.destination, b.source, b.routing_key, o, args),
                codec::exchange_bind_ok::id);
          }
          break;
        }
        case kind::consumer:
          channel_of(st.channel).resubscribe(plan.consumer(st));
          break;
      }
      plan.succeeded(st);
    } catch (const amqp_error& e) {
      plan.failed(st, e.reply_code(), e.what());
    } catch (const std::exception& e) {
      plan.failed(st, 0, e.what());
    }
  }
  if (rc) {
    try {
      rc->close();
    } catch (...) {
    }
  }
  const protocol::recovery_report& r = plan.report();
  report.channels = r.channels;
  report.exchanges = r.exchanges;
  report.queues = r.queues;
  report.bindings = r.bindings;
  report.consumers = r.consumers;
  report.renamed_queues = r.renamed_queues;
  report.failures = r.failures;
  return !interrupted();
}

}  // namespace warren::async::detail
