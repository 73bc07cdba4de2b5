// The blocking channel: a protocol::channel_core driven from the caller's thread. What stays here
// is what is truly blocking: waiting (pumping the connection until the core has answered),
// py-amqp's names and exceptions, and running user callbacks outside the core's calls.
#include <algorithm>

#include "engine/client/connection.h"
#include "engine/close_error.h"

namespace warren {
namespace {

using protocol::clock;
using protocol::time_point;

void check_shortstr(std::string_view what, std::string_view v) {
  if (v.size() > 255) {
    throw std::invalid_argument(std::string(what) + " longer than 255 octets");
  }
}

}  // namespace

// A consumer as the core keeps it, with this face's callbacks.
struct channel::consumer final : protocol::consumer {
  consumer_callback callback;
  cancel_callback on_cancel;
};

// One call waiting for its reply: the core answers or fails it inside feed(), and the caller's
// wait loop reads it.
struct channel::reply_slot final : protocol::reply_waiter {
  explicit reply_slot(warren::connection& c) : conn(c) {}
  void on_reply(protocol::command& reply) override {
    this->reply = std::move(reply);
    // What arrived after the reply runs once the call has it (see connection::hold_at_).
    conn.hold_incoming();
  }
  void on_failed(protocol::end_cause c, const protocol::close_reason& w) override {
    failed = true;
    cause = c;
    why = w;
  }
  bool done() const noexcept { return reply.has_value() || failed; }

  warren::connection& conn;
  std::optional<protocol::command> reply;
  bool failed = false;
  protocol::end_cause cause = protocol::end_cause::closed_by_client;
  protocol::close_reason why;
  bool get_no_ack = false;  // basic.get: the message needs no decision
};

channel::channel(warren::connection& conn, std::uint16_t id)
    : conn_(conn),
      // The blocking API's callers name delivery tags themselves, as py-amqp's do: decisions go
      // to the wire as given, not through a coalescer.
      core_(id, conn, handler_, protocol::channel_core_options{.coalesce_acks = false}) {}

channel::~channel() = default;

template <class M>
void channel::send(const M& m) {
  if (conn_.machine_.send(core_.id(), m) != codec::errc::ok) {
    throw std::invalid_argument(std::string("cannot encode ") + std::string(M::name) +
                                ": a name is longer than 255 octets");
  }
}

template <class M>
protocol::command channel::call(const M& m, std::uint32_t reply_id) {
  send(m);
  auto w = std::make_shared<reply_slot>(conn_);
  core_.expect(reply_id, w);
  return wait_reply(w, time_point::max());
}

template <class M>
void channel::call_unless(bool nowait, const M& m, std::uint32_t reply_id) {
  if (nowait) {
    send(m);
  } else {
    call(m, reply_id);
  }
}

void channel::ensure_open() {
  conn_.throw_if_failed();
  conn_.raise_pending();
  const protocol::channel_state s = core_.state();
  if (s == protocol::channel_state::closed || s == protocol::channel_state::closing) {
    // py-amqp: RecoverableConnectionError('connection already closed') from send_method, since
    // its closed channel has no connection any more. Same class, same shape (no reply code).
    throw recoverable_connection_error("channel " + std::to_string(core_.id()) + " already closed");
  }
}

protocol::command channel::wait_reply(const std::shared_ptr<reply_slot>& w, time_point deadline) {
  struct release {
    warren::connection& conn;
    ~release() { conn.release_incoming(); }
  } guard{conn_};
  try {
    for (;;) {
      if (w->reply) return std::move(*w->reply);
      if (w->failed) throw_failed(*w);
      conn_.throw_if_failed();
      if (!conn_.pump(deadline)) {
        throw amqp_timeout("timed out waiting for a reply on channel " +
                           std::to_string(core_.id()));
      }
    }
  } catch (...) {
    // The call gives up, but the channel lives on when the error was not its own end (a
    // basic.return without a handler, a callback's exception, a timeout).
    if (w->reply) {
      discard_reply(*w);
    } else if (!w->failed) {
      core_.abandon(w.get());
    }
    throw;
  }
}

void channel::throw_failed(const reply_slot& w) {
  switch (w.cause) {
    case protocol::end_cause::connection_lost:
      conn_.throw_if_failed();
      throw recoverable_connection_error("connection closed while waiting on channel " +
                                         std::to_string(core_.id()));
    case protocol::end_cause::closed_by_peer:
      // Normally raised already, from the read that brought the close (connection::pending_error_);
      // here when a nested call took that one.
      std::rethrow_exception(error_from(w.why));
    case protocol::end_cause::closed_by_client:
      break;
  }
  throw recoverable_connection_error("channel " + std::to_string(core_.id()) + " already closed");
}

void channel::discard_reply(reply_slot& w) {
  protocol::command& reply = *w.reply;
  if (reply.is<codec::basic_consume_ok>()) {
    // basic_consume raised, so nobody consumes under this tag: stop the broker's deliveries, or
    // they would be rejected and redelivered forever.
    codec::basic_consume_ok ok;
    if (reply.decode(ok) == codec::errc::ok) core_.cancel_now(ok.consumer_tag);
  } else if (reply.is<codec::basic_get_ok>() && !w.get_no_ack) {
    // Nobody will see this message: give it back.
    codec::basic_get_ok ok;
    if (reply.decode(ok) == codec::errc::ok) {
      core_.reject(core_.life(), ok.delivery_tag, true, conn_.feed_now_);
    }
  }
}

void channel::open() {
  std::unique_lock lock(conn_.mu_);
  conn_.throw_if_failed();
  if (core_.is_open()) return;
  if (core_.state() == protocol::channel_state::closed) {
    // A new life: what the last one left unreported goes with it.
    nacked_.clear();
    auto w = std::make_shared<reply_slot>(conn_);
    core_.open(w);
    wait_reply(w, time_point::max());
    return;
  }
  // Opening already (a revival after the broker closed the channel): wait for it.
  while (core_.state() == protocol::channel_state::opening) {
    conn_.throw_if_failed();
    conn_.pump(time_point::max());
  }
  if (!core_.is_open()) {
    throw recoverable_connection_error("channel " + std::to_string(core_.id()) +
                                       " closed while opening");
  }
}

void channel::close(std::uint16_t reply_code, std::string_view reply_text,
                    std::pair<std::uint16_t, std::uint16_t> method_sig) {
  std::unique_lock lock(conn_.mu_);
  if (core_.state() == protocol::channel_state::closed) return;
  if (!conn_.connected_locked()) {
    end_locally();
    return;
  }
  auto w = std::make_shared<reply_slot>(conn_);
  core_.close(reply_code, reply_text, w, method_sig.first, method_sig.second);
  struct settle {
    channel& ch;
    // However the wait ends, the channel is closed on this side when close() returns.
    ~settle() {
      ch.end_locally();
      ch.conn_.release_incoming();
    }
  } guard{*this};
  const time_point deadline = clock::now() + std::chrono::seconds(10);
  // The machine reads closed without a close-ok when our close crossed the broker's.
  while (!w->done() && conn_.machine_.state_of(core_.id()) != protocol::channel_state::closed) {
    if (!conn_.pump(deadline)) break;
  }
}

void channel::end_locally() {
  if (core_.state() == protocol::channel_state::closed) return;
  ending_locally_ = true;
  struct reset {
    bool& flag;
    ~reset() { flag = false; }
  } guard{ending_locally_};
  protocol::close_reason why;
  why.reply_code = 200;
  why.reply_text = "channel closed by client";
  core_.on_closed_by_peer(why);
}

bool channel::flow(bool active) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::channel_flow m;
  m.active = active;
  send(m);
  auto w = std::make_shared<reply_slot>(conn_);
  core_.flow_sent(w);
  codec::channel_flow_ok ok;
  wait_reply(w, time_point::max()).decode(ok);
  return ok.active;
}

// exchange -----------------------------------------------------------------------------------

void channel::exchange_declare(std::string_view exchange, std::string_view type,
                               const exchange_declare_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  const std::string args = encode_arguments(o.arguments);
  const codec::exchange_declare m = exchange_declare_method(exchange, type, o, args);
  call_unless(o.nowait, m, codec::exchange_declare_ok::id);
}

void channel::exchange_delete(std::string_view exchange, bool if_unused, bool nowait) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::exchange_delete m;
  m.exchange = exchange;
  m.if_unused = if_unused;
  m.nowait = nowait;
  call_unless(nowait, m, codec::exchange_delete_ok::id);
}

void channel::exchange_bind(std::string_view destination, std::string_view source,
                            std::string_view routing_key, const bind_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  const std::string args = encode_arguments(o.arguments);
  const codec::exchange_bind m = exchange_bind_method(destination, source, routing_key, o, args);
  call_unless(o.nowait, m, codec::exchange_bind_ok::id);
}

void channel::exchange_unbind(std::string_view destination, std::string_view source,
                              std::string_view routing_key, const bind_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  const std::string args = encode_arguments(o.arguments);
  const codec::exchange_unbind m =
      exchange_unbind_method(destination, source, routing_key, o, args);
  call_unless(o.nowait, m, codec::exchange_unbind_ok::id);
}

// queue --------------------------------------------------------------------------------------

queue_declare_ok channel::queue_declare(std::string_view queue, const queue_declare_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  const std::string args = encode_arguments(o.arguments);
  const codec::queue_declare m = queue_declare_method(queue, o, args);
  if (o.nowait) {
    send(m);
    return {std::string(queue), 0, 0};
  }
  codec::queue_declare_ok ok;
  protocol::command c = call(m, codec::queue_declare_ok::id);
  c.decode(ok);
  return {std::string(ok.queue), ok.message_count, ok.consumer_count};
}

void channel::queue_bind(std::string_view queue, std::string_view exchange,
                         std::string_view routing_key, const bind_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  const std::string args = encode_arguments(o.arguments);
  const codec::queue_bind m = queue_bind_method(queue, exchange, routing_key, o, args);
  call_unless(o.nowait, m, codec::queue_bind_ok::id);
}

void channel::queue_unbind(std::string_view queue, std::string_view exchange,
                           std::string_view routing_key, const bind_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  const std::string args = encode_arguments(o.arguments);
  // queue.unbind has no nowait bit: the -ok always comes.
  call(queue_unbind_method(queue, exchange, routing_key, args), codec::queue_unbind_ok::id);
}

std::uint32_t channel::queue_purge(std::string_view queue, bool nowait) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::queue_purge m;
  m.queue = queue;
  m.nowait = nowait;
  if (nowait) {
    send(m);
    return 0;
  }
  codec::queue_purge_ok ok;
  call(m, codec::queue_purge_ok::id).decode(ok);
  return ok.message_count;
}

std::uint32_t channel::queue_delete(std::string_view queue, const queue_delete_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  const codec::queue_delete m = queue_delete_method(queue, o);
  if (o.nowait) {
    send(m);
    return 0;
  }
  codec::queue_delete_ok ok;
  call(m, codec::queue_delete_ok::id).decode(ok);
  return ok.message_count;
}

// basic --------------------------------------------------------------------------------------

void channel::basic_qos(std::uint32_t prefetch_size, std::uint16_t prefetch_count, bool a_global) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::basic_qos m;
  m.prefetch_size = prefetch_size;
  m.prefetch_count = prefetch_count;
  m.global = a_global;
  send(m);
  auto w = std::make_shared<reply_slot>(conn_);
  core_.qos_sent({prefetch_size, prefetch_count, a_global}, w);
  wait_reply(w, time_point::max());
}

std::string channel::basic_consume(std::string_view queue, consumer_callback callback,
                                   const consume_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  if (o.nowait && o.consumer_tag.empty()) {
    throw std::invalid_argument("basic_consume with nowait needs a consumer_tag");
  }
  if (is_stream_consume(o)) {
    // The broker requires a consumer prefetch and manual acks: refused before anything is sent.
    std::optional<std::uint16_t> prefetch;
    if (const auto& q = core_.settings().qos_per_consumer) prefetch = q->prefetch_count;
    check_consume(queue, o, prefetch);
  }
  const std::string args = encode_arguments(consume_arguments(o));
  const codec::basic_consume m = consume_method(queue, o, args);
  auto c = std::make_unique<consumer>();
  c->tag = o.consumer_tag;
  c->no_ack = o.no_ack;
  c->callback = std::move(callback);
  c->on_cancel = o.on_cancel;
  // The core follows a stream consumer's deliveries and decisions (stream_last_handled).
  if (is_stream_consume(o)) c->stream.emplace();
  send(m);
  std::string tag = o.consumer_tag;
  if (o.nowait) {
    core_.consume_sent(std::move(c), nullptr);
  } else {
    // The core registers the consumer at consume-ok, inside the read that brings it, so the
    // deliveries that follow in the same read find it.
    auto w = std::make_shared<reply_slot>(conn_);
    core_.consume_sent(std::move(c), w);
    codec::basic_consume_ok ok;
    protocol::command reply = wait_reply(w, time_point::max());
    reply.decode(ok);
    tag = std::string(ok.consumer_tag);
  }
  // A callback run by the wait may have cancelled it already.
  if (o.no_ack && core_.consumers().find(tag) != nullptr) no_ack_consumers_.push_back(tag);
  return tag;
}

void channel::basic_cancel(std::string_view consumer_tag, bool nowait) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::basic_cancel m;
  m.consumer_tag = consumer_tag;
  m.nowait = nowait;
  send(m);
  if (nowait) {
    core_.cancel_sent(consumer_tag, nullptr);
  } else {
    auto w = std::make_shared<reply_slot>(conn_);
    core_.cancel_sent(consumer_tag, w);
    wait_reply(w, time_point::max());
  }
  std::erase(no_ack_consumers_, consumer_tag);
}

std::optional<message> channel::basic_get(std::string_view queue, bool no_ack) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::basic_get m;
  m.queue = queue;
  m.no_ack = no_ack;
  send(m);
  auto w = std::make_shared<reply_slot>(conn_);
  w->get_no_ack = no_ack;
  core_.get_sent(no_ack, w);
  protocol::command c = wait_reply(w, time_point::max());
  if (c.is<codec::basic_get_empty>()) return std::nullopt;
  codec::basic_get_ok ok;
  c.decode(ok);
  message msg = make_message(c);
  delivery_info& info = msg.delivery_info();
  info.delivery_tag = ok.delivery_tag;
  info.redelivered = ok.redelivered;
  info.exchange = ok.exchange;
  info.routing_key = ok.routing_key;
  info.message_count = ok.message_count;
  return msg;
}

void channel::select_confirms(bool nowait, time_point deadline) {
  codec::confirm_select m;
  m.nowait = nowait;
  send(m);
  std::shared_ptr<reply_slot> w = nowait ? nullptr : std::make_shared<reply_slot>(conn_);
  if (core_.confirms() != nullptr) {
    // Selected on the wire already (an earlier call gave up before its -ok): the broker numbers
    // publishes from that first select on, so the tracker stays; this call waits for its own -ok.
    if (w) core_.expect(codec::confirm_select_ok::id, w);
  } else {
    protocol::confirm_tracker_options t;
    t.window = conn_.client_.confirm_window;
    core_.confirm_select_sent(t, w);
  }
  if (w) wait_reply(w, deadline);
  confirm_selected_ = true;
}

void channel::wait_for_window(time_point deadline) {
  for (;;) {
    const protocol::confirm_tracker* t = core_.confirms();
    if (t == nullptr || !t->full()) return;
    conn_.throw_if_failed();
    if (!conn_.pump(deadline)) {
      throw amqp_timeout("confirm window full: " + std::to_string(t->outstanding()) +
                         " publishes unconfirmed on channel " + std::to_string(core_.id()) +
                         " at the publish timeout (client_options::confirm_window)");
    }
  }
}

void channel::basic_publish(const message& msg, std::string_view exchange,
                            std::string_view routing_key, const publish_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  check_shortstr("exchange", exchange);
  check_shortstr("routing_key", routing_key);
  // py-amqp waits `confirm_timeout or timeout`: a missing (or zero) confirm_timeout falls back
  // to the publish timeout, and with neither the wait is unbounded. One deadline covers the
  // confirm.select below and the wait for the ack.
  const std::optional<seconds_f> wait =
      o.confirm_timeout && o.confirm_timeout->count() > 0 ? o.confirm_timeout : o.timeout;
  const bool confirm_publish = conn_.client_.confirm_publish;
  const time_point confirm_deadline =
      confirm_publish ? conn_.deadline_after(wait) : time_point::max();
  const char* const bound = wait == o.confirm_timeout ? " within confirm_timeout"
                                                      : " within timeout (no confirm_timeout)";
  const std::optional<seconds_f> write_bound = o.timeout ? o.timeout : conn_.client_.write_timeout;
  // py-amqp's basic_publish_confirm selects confirms at the first publish. confirm_selected_
  // belongs to the channel's current life (its end clears it), so a revived or reopened channel
  // selects again before it publishes: with confirm_publish every publish is confirmed.
  // (py-amqp keeps its flag across a revival and then waits for an ack that never comes.)
  if (confirm_publish && !confirm_selected_) {
    try {
      select_confirms(false, confirm_deadline);
    } catch (const amqp_timeout&) {
      throw amqp_timeout("no confirm.select-ok on channel " + std::to_string(core_.id()) + bound +
                         " (confirm_publish selects confirms at a channel's first publish)");
    }
  }
  // py-amqp's drain_events(timeout=0) before the write: connection.blocked reaches on_blocked
  // even when nothing else reads, and an error already sent is raised before anything is written.
  conn_.read_pending_before_publish();
  if (core_.confirms() != nullptr) wait_for_window(conn_.deadline_after(write_bound));
  std::string headers;
  codec::basic_properties props = msg.props().to_wire(headers);
  codec::basic_publish m;
  m.exchange = exchange;
  m.routing_key = routing_key;
  m.mandatory = o.mandatory;
  m.immediate = o.immediate;
  if (conn_.machine_.send_publish(core_.id(), m, props, msg.body()) != codec::errc::ok) {
    throw std::invalid_argument("message properties cannot be encoded (a value too long?)");
  }
  // The broker numbers every publish after confirm.select on the wire; the tracker follows it.
  // It has no timeout here (the waits below have deadlines), so no time is read.
  protocol::confirm_tracker* tracker = core_.confirms();
  const std::uint64_t seq =
      tracker != nullptr ? tracker->on_publish(0, time_point{}, o.mandatory, exchange, routing_key)
                         : 0;
  if (seq != 0 && confirm_publish) confirm_waits_.push_back({seq});
  struct unwait {
    std::vector<confirm_wait>& waits;
    std::uint64_t seq;
    ~unwait() {
      if (seq == 0) return;
      std::erase_if(waits, [&](const confirm_wait& w) { return w.sequence == seq; });
    }
  } guard{confirm_waits_, confirm_publish ? seq : 0};
  try {
    conn_.flush(conn_.deadline_after(write_bound));
  } catch (const amqp_timeout& e) {
    // flush's only amqp_timeout is its write deadline. py-amqp raises RecoverableChannelError
    // for it here, not socket.timeout.
    throw recoverable_channel_error(
        std::string(e.what()) + "; the connection is closed",
        {codec::basic_publish::class_id, codec::basic_publish::method_id},
        std::string(codec::basic_publish::name));
  }
  if (guard.seq == 0) return;
  auto mine = [&]() -> const confirm_wait& {
    return *std::find_if(confirm_waits_.begin(), confirm_waits_.end(),
                         [&](const confirm_wait& w) { return w.sequence == seq; });
  };
  while (!mine().done) {
    conn_.throw_if_failed();
    if (!conn_.pump(confirm_deadline)) {
      throw amqp_timeout("no publisher confirm for delivery tag " + std::to_string(seq) + bound);
    }
  }
  conn_.throw_if_failed();
  if (mine().outcome != protocol::confirm_outcome::ack) {
    throw message_nacked("message was nacked by the broker (delivery tag " + std::to_string(seq) +
                         ")");
  }
}

void channel::wait_for_confirms(std::optional<seconds_f> timeout) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  const time_point deadline = conn_.deadline_after(timeout);
  for (;;) {
    const protocol::confirm_tracker* t = core_.confirms();
    if (t == nullptr || t->outstanding() == 0) break;
    conn_.throw_if_failed();
    if (!conn_.pump(deadline)) {
      throw amqp_timeout(std::to_string(t->outstanding()) +
                         " publishes still unconfirmed at the timeout");
    }
  }
  if (!nacked_.empty()) {
    std::string tags;
    for (auto t : nacked_) tags += (tags.empty() ? "" : ", ") + std::to_string(t);
    nacked_.clear();
    throw message_nacked("the broker nacked delivery tags " + tags);
  }
}

void channel::basic_ack(std::uint64_t delivery_tag, bool multiple) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  // Not sent while the channel reopens after the broker closed it: the broker took back every
  // delivery of the life that ended, so no tag of it can be acked.
  core_.ack(core_.life(), delivery_tag, multiple, conn_.feed_now_);
  conn_.flush(conn_.deadline_after(conn_.client_.write_timeout));
}

void channel::basic_nack(std::uint64_t delivery_tag, bool multiple, bool requeue) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  core_.nack(core_.life(), delivery_tag, multiple, requeue, conn_.feed_now_);
  conn_.flush(conn_.deadline_after(conn_.client_.write_timeout));
}

void channel::basic_reject(std::uint64_t delivery_tag, bool requeue) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  core_.reject(core_.life(), delivery_tag, requeue, conn_.feed_now_);
  conn_.flush(conn_.deadline_after(conn_.client_.write_timeout));
}

std::optional<std::uint64_t> channel::stream_last_handled(std::string_view consumer_tag) {
  std::lock_guard lock(conn_.mu_);
  const protocol::stream_progress* p = core_.stream_progress_of(consumer_tag);
  return p != nullptr ? p->last_handled() : std::nullopt;
}

void channel::basic_recover(bool requeue) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::basic_recover m;
  m.requeue = requeue;
  send(m);
  auto w = std::make_shared<reply_slot>(conn_);
  core_.recover_sent(w);
  wait_reply(w, time_point::max());
}

void channel::basic_recover_async(bool requeue) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::basic_recover_async m;
  m.requeue = requeue;
  send(m);
  core_.recover_sent(nullptr);
  conn_.flush(conn_.deadline_after(conn_.client_.write_timeout));
}

void channel::confirm_select(bool nowait) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  if (confirm_selected_) return;
  select_confirms(nowait, time_point::max());
}

void channel::tx_select() {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  send(codec::tx_select{});
  auto w = std::make_shared<reply_slot>(conn_);
  core_.tx_select_sent(w);
  wait_reply(w, time_point::max());
}

void channel::tx_commit() {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  call(codec::tx_commit{}, codec::tx_commit_ok::id);
}

void channel::tx_rollback() {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  call(codec::tx_rollback{}, codec::tx_rollback_ok::id);
}

std::vector<std::string> channel::consumer_tags() const {
  std::vector<std::string> out;
  core_.consumers().for_each([&](const protocol::consumer& c) { out.push_back(c.tag); });
  return out;
}

// incoming -----------------------------------------------------------------------------------

message channel::make_message(protocol::command& cmd) {
  message msg(cmd.body, std::move(cmd.keep[0]), std::move(cmd.keep[1]), std::move(cmd.keep[2]));
  if (properties::from_wire(cmd.header.properties, msg.props()) != codec::errc::ok) {
    throw frame_syntax_error("SYNTAX_ERROR - malformed headers table in a message");
  }
  msg.set_channel(this);
  return msg;
}

bool channel::on_command_received(protocol::command& cmd) {
  switch (cmd.id()) {
    case codec::basic_deliver::id:
    case codec::basic_cancel::id:
      // The consumer they name is looked up when they run (dispatch), so that one a callback
      // cancels meanwhile meets the unknown-consumer rule.
      return false;
    default:
      // Replies, open-ok and close-ok, flow and confirms take effect at once, so that a wait
      // inside a callback sees them; their user events are queued by the handler.
      core_.on_command(cmd, conn_.feed_now_);
      return true;
  }
}

void channel::dispatch(protocol::command& cmd) {
  if (cmd.is<codec::basic_deliver>()) {
    ready_ = nullptr;
    core_.on_command(cmd, conn_.feed_now_);
    if (ready_ == nullptr) return;  // no consumer: the core applied the unknown-consumer rule
    // A copy: the callback may cancel its own consumer, which destroys the original.
    consumer_callback cb = ready_->callback;
    ready_ = nullptr;
    const codec::basic_deliver& d = cmd.deliver;
    message msg = make_message(cmd);
    delivery_info& info = msg.delivery_info();
    info.consumer_tag = d.consumer_tag;
    info.delivery_tag = d.delivery_tag;
    info.redelivered = d.redelivered;
    info.exchange = d.exchange;
    info.routing_key = d.routing_key;
    if (cb) cb(msg);
    return;
  }
  if (cmd.is<codec::basic_cancel>()) {
    // Consumer cancel notification: the broker cancelled one of our consumers.
    codec::basic_cancel c;
    if (cmd.decode(c) != codec::errc::ok) return;
    const std::string tag(c.consumer_tag);
    cancelled_.reset();
    core_.on_command(cmd, conn_.feed_now_);
    std::unique_ptr<consumer> gone = std::move(cancelled_);
    std::erase(no_ack_consumers_, tag);
    if (gone && gone->on_cancel) {
      gone->on_cancel(tag);
    } else {
      throw consumer_cancelled(tag);
    }
  }
}

void channel::dispatch_return(protocol::command& cmd) {
  codec::basic_return r;
  if (cmd.decode(r) != codec::errc::ok) return;
  // As py-amqp's error_for_code(reply_code, reply_text, Basic.Return, ChannelError).
  const std::exception_ptr err =
      make_error(r.reply_code, std::string(r.reply_text), codec::basic_return::class_id,
                 codec::basic_return::method_id, std::string(codec::basic_return::name));
  // Without a handler py-amqp raises it from whichever call read it; so does this (through
  // connection::dispatch_incoming), and the channel stays open.
  if (events_.basic_return.empty()) std::rethrow_exception(err);
  message msg = make_message(cmd);
  msg.delivery_info().exchange = r.exchange;
  msg.delivery_info().routing_key = r.routing_key;
  try {
    std::rethrow_exception(err);
  } catch (const amqp_error& e) {
    for (auto& cb : events_.basic_return) cb(e, r.exchange, r.routing_key, msg);
  }
}

void channel::dispatch_confirm(bool ack, std::uint64_t tag, bool multiple) {
  for (auto& cb : ack ? events_.basic_ack : events_.basic_nack) cb(tag, multiple);
}

// protocol::channel_handler ------------------------------------------------------------------

void channel::handler::on_delivery(protocol::consumer& c, protocol::command&) {
  ch_.ready_ = static_cast<consumer*>(&c);
}

void channel::handler::on_confirm(const protocol::confirm_event& e) {
  for (confirm_wait& w : ch_.confirm_waits_) {
    if (w.sequence == e.sequence && !w.done) {
      w.done = true;
      w.outcome = e.outcome;
      return;
    }
  }
  // Not awaited by a publish: reported by wait_for_confirms. A publish whose channel or
  // connection ended before its answer is reported with them, as before the core.
  if (e.outcome != protocol::confirm_outcome::ack) ch_.nacked_.push_back(e.sequence);
}

void channel::handler::on_confirm_frame(bool ack, std::uint64_t tag, bool multiple) {
  if ((ack ? ch_.events_.basic_ack : ch_.events_.basic_nack).empty()) return;
  connection::incoming_event ev{
      connection::incoming_event::kind::confirm, {}, ch_.core_.life(), ch_.core_.id()};
  ev.ack = ack;
  ev.tag = tag;
  ev.multiple = multiple;
  ch_.conn_.incoming_.push_back(std::move(ev));
}

void channel::handler::on_return(protocol::command& cmd, const codec::basic_return&) {
  ch_.conn_.incoming_.push_back({connection::incoming_event::kind::returned, std::move(cmd),
                                 ch_.core_.life(), ch_.core_.id()});
}

void channel::handler::on_consumer_cancelled(std::unique_ptr<protocol::consumer> c) {
  ch_.cancelled_.reset(static_cast<consumer*>(c.release()));
}

void channel::handler::on_consumer_removed(std::unique_ptr<protocol::consumer> c) {
  std::erase(ch_.no_ack_consumers_, c->tag);
}

void channel::handler::on_ended(protocol::end_cause cause, const protocol::close_reason& why) {
  ch_.confirm_selected_ = false;
  if (cause != protocol::end_cause::closed_by_peer || ch_.ending_locally_) return;
  // Raised from whichever call is reading (the one waiting for a reply on this channel, or
  // drain_events), as py-amqp does.
  if (!ch_.conn_.pending_error_) ch_.conn_.pending_error_ = error_from(why);
  // Revival, as py-amqp: the same id opens again at once, and the error is raised from the
  // call that is waiting (or the next call on this channel).
  ch_.core_.open(nullptr);
}

}  // namespace warren
