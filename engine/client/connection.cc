#include "engine/client/connection.h"

#include <sys/uio.h>

#include <algorithm>
#include <cstring>

#include "engine/close_error.h"

namespace warren {
namespace {

using protocol::clock;
using protocol::time_point;

std::chrono::milliseconds ms_until(time_point deadline) {
  if (deadline == time_point::max()) return io::infinite;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

// connection_machine::on_start fails the connection with a local 403 (not by_peer) when the
// broker offers none of the configured mechanisms, before it chooses one; no other local 403
// comes before a mechanism is chosen.
bool no_common_mechanism(const protocol::close_reason& why, const protocol::connection_machine& m) {
  return !why.by_peer && why.reply_code == access_refused::code && m.chosen_mechanism().empty();
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) out += (out.empty() ? "" : ", ") + w;
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// connection

connection::connection(connection_options options, warren::client_options client)
    : options_(std::move(options)),
      client_(std::move(client)),
      machine_(options_.machine_config(), *this) {}

connection::~connection() {
  try {
    if (connected()) close();
  } catch (...) {
    // A destructor must not throw; the socket is closed below either way.
  }
  stop_heartbeat_thread();
  transport_.close();
}

time_point connection::deadline_after(std::optional<seconds_f> t) const {
  if (!t) return time_point::max();
  return clock::now() + std::chrono::duration_cast<clock::duration>(*t);
}

bool connection::connected() const {
  std::lock_guard lock(mu_);
  return connected_locked();
}

bool connection::connected_locked() const noexcept {
  return transport_.fd() >= 0 && machine_.state() != protocol::connection_state::closed &&
         !connection_error_;
}

void connection::connect() {
  std::unique_lock lock(mu_);
  if (connected() && opened_) return;
  const time_point deadline = deadline_after(options_.connect_timeout);
  io::host_port hp;
  const std::uint16_t default_port = options_.ssl ? io::default_amqps_port : io::default_amqp_port;
  if (auto err = io::parse_host_port(options_.host, default_port, hp)) {
    throw recoverable_connection_error(err.message);
  }
  io::transport_options topts;
  topts.socket_settings = options_.socket_settings;
  topts.tls = options_.ssl;
  // A write the broker stopped taking must not hide the connection.blocked it sent first.
  topts.read_while_writing = true;
  if (options_.connect_timeout) {
    topts.connect_timeout =
        std::chrono::duration_cast<std::chrono::milliseconds>(*options_.connect_timeout);
  }
  if (auto err = transport_.connect(hp, topts, deadline)) {
    if (err.code == io::io_errc::timeout) throw amqp_timeout(err.message);
    throw recoverable_connection_error(err.message);
  }
  machine_.start(clock::now());
  while (!opened_) {
    throw_if_failed();
    if (!pump(deadline)) {
      transport_.close();
      throw amqp_timeout("timed out during the AMQP handshake with " + options_.host);
    }
  }
  throw_if_failed();
  if (client_.background_heartbeat && machine_.heartbeat() > 0) start_heartbeat_thread();
  if (client_.on_open) client_.on_open(*this);
}

warren::channel& connection::channel(std::uint16_t id) {
  std::unique_lock lock(mu_);
  throw_if_failed();
  if (!opened_) throw recoverable_connection_error("not connected: call connect() first");
  if (id == 0) {
    id = table_.allocate();
    if (id == 0) {
      throw resource_error("RESOURCE_ERROR - no free channel ids (channel_max " +
                           std::to_string(machine_.channel_max()) + ")");
    }
  } else if (id > table_.channel_max()) {
    throw resource_error("RESOURCE_ERROR - channel id " + std::to_string(id) +
                         " above channel_max " + std::to_string(machine_.channel_max()));
  } else {
    table_.take(id);  // false when taken already: its channel is below
  }
  auto it = channels_.find(id);
  if (it != channels_.end()) {
    if (!it->second->is_open()) it->second->open();
    return *it->second;
  }
  auto ch = std::make_unique<warren::channel>(*this, id);
  warren::channel& ref = *ch;
  channels_.emplace(id, std::move(ch));
  table_.attach(ref.core_);
  // With confirm_publish, confirms are selected at the channel's first publish (see
  // channel::basic_publish), as py-amqp does, not here.
  ref.open();
  return ref;
}

void connection::close(std::uint16_t reply_code, std::string_view reply_text,
                       std::pair<std::uint16_t, std::uint16_t> method_sig) {
  std::unique_lock lock(mu_);
  stop_heartbeat_thread();
  if (transport_.fd() < 0) return;
  if (!connection_error_ && machine_.state() != protocol::connection_state::closed &&
      machine_.state() != protocol::connection_state::initial) {
    closing_by_user_ = true;
    machine_.close(reply_code, reply_text, method_sig.first, method_sig.second);
    const time_point deadline = clock::now() + std::chrono::seconds(5);
    try {
      while (machine_.state() != protocol::connection_state::closed && pump(deadline)) {
      }
    } catch (const std::exception&) {
      // The broker went away during the close handshake: the connection is closed either way.
    }
  }
  // Every channel ends once (those the close-ok already ended are skipped).
  table_.on_connection_lost(machine_.closed_reason());
  transport_.close();
}

void connection::flush(time_point deadline) {
  if (!machine_.has_output()) return;
  std::string_view out = machine_.output();
  iovec iov{const_cast<char*>(out.data()), out.size()};
  io::io_error err = transport_.write_all(&iov, 1, ms_until(deadline));
  if (err) {
    // What the broker sent while the write waited (connection.blocked, typically) is read and
    // dispatched first, so on_blocked runs before the write's error is raised.
    feed_buffered_input();
    // A partial write leaves the stream mid-frame: the connection cannot be used again.
    const bool timed_out = err.code == io::io_errc::timeout;
    machine_.transport_closed(err.message);
    transport_.close();
    if (timed_out) {
      throw amqp_timeout("write timed out" + std::string(machine_.blocked()
                                                             ? " (the broker has blocked this "
                                                               "connection: connection.blocked)"
                                                             : ""));
    }
    throw_if_failed();
    return;
  }
  machine_.consume_output(out.size(), clock::now());
  if (transport_.has_buffered_input()) feed_buffered_input();
}

void connection::feed_buffered_input() {
  // Not re-entered: feeding may queue output, whose flush may stall and read again; what that
  // reads is fed by this loop.
  if (feeding_buffered_ || !transport_.is_open()) return;
  feeding_buffered_ = true;
  struct reset {
    bool& flag;
    ~reset() { flag = false; }
  } guard{feeding_buffered_};
  // Fed a read at a time, so that what the receive buffer holds is never more than a frame begun.
  bool fed = false;
  while (transport_.has_buffered_input()) {
    rx_.make_room();
    io::io_error err;
    const std::size_t got =
        transport_.read_some(rx_.space(), rx_.space_size(), std::chrono::milliseconds(0), err);
    if (err || got == 0) break;
    rx_.received(got);
    feed_now_ = clock::now();
    rx_.consume(machine_.feed(rx_.unconsumed(), rx_.owner(), feed_now_));
    fed = true;
  }
  if (fed) dispatch_incoming();
}

bool connection::pump(time_point deadline) {
  const time_point write_deadline = std::min(
      deadline, client_.write_timeout ? deadline_after(client_.write_timeout) : time_point::max());
  flush(write_deadline);
  if (machine_.state() == protocol::connection_state::closed) return true;

  for (;;) {
    const time_point timer = machine_.next_timer();
    const time_point wake = std::min(deadline, timer);
    const time_point read_deadline =
        client_.read_timeout ? std::min(wake, deadline_after(client_.read_timeout)) : wake;
    // Room to read into (engine/receive_buffer.h); again each time round, since a flush below may
    // have fed what a stalled write read meanwhile.
    rx_.make_room();
    io::io_error err;
    const std::size_t got =
        transport_.read_some(rx_.space(), rx_.space_size(), ms_until(read_deadline), err);
    const time_point now = clock::now();
    if (!err) {
      rx_.received(got);
      feed_now_ = now;
      rx_.consume(machine_.feed(rx_.unconsumed(), rx_.owner(), now));
      machine_.on_timer(now);
      flush(write_deadline);
      dispatch_incoming();
      raise_pending();
      throw_if_failed();
      return true;
    }
    if (err.code != io::io_errc::timeout) {
      machine_.transport_closed(err.message);
      throw_if_failed();
      return true;
    }
    if (now >= timer) {
      machine_.on_timer(now);
      flush(write_deadline);
      throw_if_failed();
    }
    if (now >= deadline) return false;
    if (client_.read_timeout && read_deadline < wake && now >= read_deadline) {
      throw amqp_timeout("read timed out");
    }
  }
}

void connection::throw_if_failed() {
  if (connection_error_) {
    if (transport_.fd() >= 0) {
      // Best effort: let our connection.close or close-ok reach the broker.
      try {
        flush(clock::now() + std::chrono::milliseconds(200));
      } catch (...) {
      }
      transport_.close();
    }
    std::rethrow_exception(connection_error_);
  }
}

void connection::dispatch_incoming() {
  if (dispatching_) return;
  dispatching_ = true;
  struct reset {
    bool& flag;
    ~reset() { flag = false; }
  } guard{dispatching_};
  while (!incoming_.empty() && hold_at_ != 0) {
    incoming_event ev = std::move(incoming_.front());
    incoming_.pop_front();
    if (hold_at_ != no_hold) --hold_at_;
    try {
      switch (ev.what) {
        case incoming_event::kind::command:
        case incoming_event::kind::returned:
        case incoming_event::kind::confirm: {
          // After a close (by a callback, say) nothing more is delivered, as in py-amqp; nor
          // anything of a channel life that has ended since it arrived.
          if (!connected_locked()) break;
          auto it = channels_.find(ev.channel);
          if (it == channels_.end()) break;
          warren::channel& ch = *it->second;
          if (ch.core_.life() != ev.life || !ch.core_.is_open()) break;
          if (ev.what == incoming_event::kind::command) {
            ch.dispatch(ev.cmd);
          } else if (ev.what == incoming_event::kind::returned) {
            ch.dispatch_return(ev.cmd);
          } else {
            ch.dispatch_confirm(ev.ack, ev.tag, ev.multiple);
          }
          break;
        }
        case incoming_event::kind::blocked:
          if (client_.on_blocked) client_.on_blocked(ev.reason);
          break;
        case incoming_event::kind::unblocked:
          if (client_.on_unblocked) client_.on_unblocked();
          break;
      }
    } catch (...) {
      // Raised from the dispatching call once the queue is empty; later events still run.
      if (!pending_error_) pending_error_ = std::current_exception();
    }
  }
}

void connection::release_incoming() {
  if (hold_at_ == no_hold) return;
  hold_at_ = no_hold;
  dispatch_incoming();
}

void connection::raise_pending() {
  if (pending_error_) {
    std::exception_ptr e = std::exchange(pending_error_, nullptr);
    std::rethrow_exception(e);
  }
}

void connection::read_pending_before_publish() {
  if (!blocked_negotiated_) return;
  const time_point now = clock::now();
  const std::uint64_t sent = transport_.bytes_sent();
  // Once per interval, or sooner after many bytes: large messages fill the socket buffers (and
  // a blocked broker's) in far less than an interval.
  if (now < next_pending_check_ && sent - sent_at_check_ < pending_check_bytes &&
      !transport_.has_buffered_input()) {
    return;
  }
  next_pending_check_ = now + pending_check_interval;
  sent_at_check_ = sent;
  io::io_error err;
  // A deadline of `now` makes pump() read at most once and never wait; a socket error goes to
  // pump() too, which reports it.
  if (transport_.wait_readable(std::chrono::milliseconds(0), err) || err) pump(now);
}

void connection::drain_events(std::optional<seconds_f> timeout) {
  std::unique_lock lock(mu_);
  throw_if_failed();
  raise_pending();
  if (!opened_) throw recoverable_connection_error("not connected: call connect() first");
  const time_point deadline = deadline_after(timeout);
  const std::uint64_t before = events_handled_;
  while (events_handled_ == before) {
    if (!pump(deadline)) throw amqp_timeout("drain_events: no event within the timeout");
  }
}

void connection::heartbeat_tick(int /*rate*/) {
  std::unique_lock lock(mu_);
  throw_if_failed();
  if (machine_.heartbeat() == 0) return;
  // As py-amqp: any traffic in either direction counts as a heartbeat.
  const time_point now = clock::now();
  const std::uint64_t sent = bytes_sent(), recv = bytes_recv();
  if (prev_sent_ != sent) last_heartbeat_sent_ = now;
  if (prev_recv_ != recv) last_heartbeat_received_ = now;
  prev_sent_ = sent;
  prev_recv_ = recv;
  const auto hb = std::chrono::seconds(machine_.heartbeat());
  if (now > last_heartbeat_sent_ + hb) {
    machine_.send_heartbeat();
    flush(now + hb);
    last_heartbeat_sent_ = clock::now();
  }
  if (last_heartbeat_received_ != time_point{} && last_heartbeat_received_ + 2 * hb < now) {
    machine_.fail(320, "CONNECTION_FORCED - Too many heartbeats missed");
    throw_if_failed();
  }
}

void connection::send_heartbeat() {
  std::unique_lock lock(mu_);
  throw_if_failed();
  machine_.send_heartbeat();
  flush(deadline_after(client_.write_timeout));
  last_heartbeat_sent_ = clock::now();
}

void connection::update_secret(std::string_view new_secret, std::string_view reason) {
  std::unique_lock lock(mu_);
  throw_if_failed();
  machine_.update_secret(new_secret, reason);
  update_secret_ok_ = false;
  while (!update_secret_ok_) pump(time_point::max());
}

bool connection::is_alive() {
  std::unique_lock lock(mu_);
  if (!connected()) return false;
  try {
    machine_.send_heartbeat();
    flush(clock::now() + std::chrono::seconds(1));
    // Pick up a close or EOF the broker may already have sent.
    io::io_error err;
    if (transport_.wait_readable(std::chrono::milliseconds(0), err)) pump(clock::now());
    if (err) return false;
  } catch (const std::exception&) {
    return false;
  }
  return connected();
}

// connection_handler ------------------------------------------------------------------------

void connection::on_open() {
  opened_ = true;
  ++events_handled_;
  // py-amqp's test in basic_publish: the capability as claimed in start-ok.
  const codec::field_value* caps = machine_.client_properties().find("capabilities");
  const codec::field_table* t = caps != nullptr ? caps->as_table() : nullptr;
  const codec::field_value* blocked = t != nullptr ? t->find("connection.blocked") : nullptr;
  blocked_negotiated_ =
      blocked != nullptr && blocked->as_boolean() != nullptr && *blocked->as_boolean();
}

void connection::on_tuned() {
  table_.set_channel_max(machine_.channel_max());
  if (client_.on_tune_ok) client_.on_tune_ok();
}

void connection::on_command(protocol::command& cmd) {
  ++events_handled_;
  if (cmd.channel == 0) {
    if (cmd.is<codec::connection_update_secret_ok>()) update_secret_ok_ = true;
    return;
  }
  auto it = channels_.find(cmd.channel);
  if (it == channels_.end()) return;
  warren::channel& ch = *it->second;
  if (ch.on_command_received(cmd)) return;
  incoming_.push_back(
      {incoming_event::kind::command, std::move(cmd), ch.core_.life(), ch.channel_id()});
}

void connection::on_channel_closed(std::uint16_t id, const protocol::close_reason& why) {
  ++events_handled_;
  // At once (no user code runs): a wait on this channel, even one inside a callback, must see
  // the error.
  table_.on_channel_closed(id, why);
}

void connection::on_blocked(std::string_view reason) {
  ++events_handled_;
  incoming_.push_back({incoming_event::kind::blocked, {}, 0, 0, std::string(reason)});
}

void connection::on_unblocked() {
  ++events_handled_;
  incoming_.push_back({incoming_event::kind::unblocked});
}

void connection::on_closed(const protocol::close_reason& why) {
  ++events_handled_;
  if (!connection_error_) {
    if (closing_by_user_ && !why.by_peer) {
      connection_error_ = std::make_exception_ptr(
          recoverable_connection_error("connection already closed by the client"));
    } else if (no_common_mechanism(why, machine_)) {
      // py-amqp raises ConnectionError itself here (no reply code), with this text; the
      // machine's 403 would make it the channel-class access_refused.
      std::vector<std::string> offer;
      for (const auto& c : options_.machine_config().authentication) offer.push_back(c.mechanism);
      connection_error_ = std::make_exception_ptr(
          connection_error("Couldn't find appropriate auth mechanism (can offer: " + join(offer) +
                           "; available: " + join(machine_.mechanisms()) + ")"));
    } else {
      connection_error_ = error_from(why);
    }
  }
  table_.on_connection_lost(why);
}

// protocol::channel_wire ----------------------------------------------------------------------

void connection::send_ack(std::uint16_t channel, const protocol::ack_action& a) {
  if (connected_locked()) protocol::send_ack_action(machine_, channel, a);
}

void connection::send_cancel(std::uint16_t channel, std::string_view consumer_tag) {
  if (!connected_locked()) return;
  codec::basic_cancel m;
  m.consumer_tag = consumer_tag;
  m.nowait = true;
  machine_.send(channel, m);
}

void connection::open_channel(std::uint16_t channel) {
  if (connected_locked()) machine_.open_channel(channel);
}

void connection::close_channel(std::uint16_t channel, std::uint16_t reply_code,
                               std::string_view reply_text, std::uint16_t class_id,
                               std::uint16_t method_id) {
  if (connected_locked()) {
    machine_.close_channel(channel, reply_code, reply_text, class_id, method_id);
  }
}

// Background heartbeat ------------------------------------------------------------------------

void connection::start_heartbeat_thread() {
  stop_heartbeat_thread();
  hb_stop_ = false;
  heartbeat_thread_ = std::thread([this] {
    const auto period = std::chrono::milliseconds(machine_.heartbeat() * 1000 / 4 + 1);
    std::unique_lock wait_lock(hb_mu_);
    while (!hb_cv_.wait_for(wait_lock, period, [this] { return hb_stop_; })) {
      std::unique_lock lock(mu_, std::try_to_lock);
      // When the owner holds the lock it is inside a call, and pump() runs the timers itself.
      if (!lock.owns_lock() || !connected_locked()) continue;
      try {
        machine_.send_heartbeat_if_idle(clock::now());
        flush(clock::now() + std::chrono::seconds(machine_.heartbeat()));
      } catch (...) {
        // The owner's next call reports the failure.
      }
    }
  });
}

void connection::stop_heartbeat_thread() {
  if (!heartbeat_thread_.joinable()) return;
  {
    std::lock_guard g(hb_mu_);
    hb_stop_ = true;
  }
  hb_cv_.notify_all();
  // The thread may be waiting for mu_, which our caller holds: it only try-locks, so join is
  // safe.
  heartbeat_thread_.join();
}

}  // namespace warren
