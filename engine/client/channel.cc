#include <algorithm>

#include "engine/client/connection.h"

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

channel::channel(warren::connection& conn, std::uint16_t id) : conn_(conn), id_(id) {}

template <class M>
void channel::send(const M& m) {
  if (conn_.machine_.send(id_, m) != codec::errc::ok) {
    throw std::invalid_argument(std::string("cannot encode ") + std::string(M::name) +
                                ": a name is longer than 255 octets");
  }
}

void channel::ensure_open() {
  conn_.throw_if_failed();
  if (pending_error_) std::rethrow_exception(std::exchange(pending_error_, nullptr));
  conn_.raise_pending();
  if (!is_open_ && !opening_) {
    // py-amqp: RecoverableConnectionError('connection already closed') from send_method, since
    // its closed channel has no connection any more. Same class, same shape (no reply code).
    throw recoverable_connection_error("channel " + std::to_string(id_) + " already closed");
  }
}

protocol::command channel::wait_for(std::initializer_list<std::uint32_t> replies,
                                    std::optional<seconds_f> timeout) {
  return wait_for(replies, conn_.deadline_after(timeout));
}

protocol::command channel::wait_for(std::initializer_list<std::uint32_t> replies,
                                    time_point deadline) {
  const std::uint32_t generation = generation_;
  auto take_reply = [&]() -> std::optional<protocol::command> {
    for (auto it = replies_.begin(); it != replies_.end(); ++it) {
      if (std::find(replies.begin(), replies.end(), it->id()) != replies.end()) {
        protocol::command c = std::move(*it);
        replies_.erase(it);
        return c;
      }
    }
    return std::nullopt;
  };
  try {
    for (;;) {
      if (std::optional<protocol::command> c = take_reply()) return std::move(*c);
      if (pending_error_) std::rethrow_exception(std::exchange(pending_error_, nullptr));
      conn_.throw_if_failed();
      if (!conn_.pump(deadline)) {
        throw amqp_timeout("timed out waiting for a reply on channel " + std::to_string(id_));
      }
    }
  } catch (...) {
    // The call gives up, but the channel lives on when the error was not its own close (a
    // basic.return without a handler, a callback's exception, a timeout): its reply, now or
    // when it comes, must not be taken for a later call's.
    if (generation == generation_ && conn_.connected_locked()) {
      if (std::optional<protocol::command> c = take_reply()) {
        discard_reply(*c);
      } else {
        abandoned_.emplace_back(replies);
      }
    }
    throw;
  }
}

void channel::discard_reply(protocol::command& reply) {
  if (!reply.is<codec::basic_consume_ok>()) return;
  // basic_consume raised, so nobody consumes under this tag: stop the broker's deliveries, or
  // they would be rejected and redelivered forever. Deliveries already in flight stay unacked
  // until the channel closes (rejecting them could name a no-ack delivery, a channel error).
  codec::basic_consume_ok ok;
  reply.decode(ok);
  const std::string tag(ok.consumer_tag);
  codec::basic_cancel m;
  m.consumer_tag = tag;
  m.nowait = true;
  send(m);
  remember_cancelled_no_ack(tag);
}

protocol::command channel::call_and_wait(std::initializer_list<std::uint32_t> replies,
                                         std::optional<seconds_f> timeout) {
  return wait_for(replies, timeout);
}

void channel::open() {
  std::unique_lock lock(conn_.mu_);
  conn_.throw_if_failed();
  if (is_open_) return;
  pending_error_ = nullptr;
  replies_.clear();
  abandoned_.clear();
  conn_.machine_.open_channel(id_);
  opening_ = true;
  while (!is_open_) {
    if (pending_error_) std::rethrow_exception(std::exchange(pending_error_, nullptr));
    conn_.throw_if_failed();
    conn_.pump(time_point::max());
  }
}

void channel::close(std::uint16_t reply_code, std::string_view reply_text,
                    std::pair<std::uint16_t, std::uint16_t> method_sig) {
  std::unique_lock lock(conn_.mu_);
  if (!is_open_ || !conn_.connected_locked()) {
    is_open_ = false;
    return;
  }
  conn_.machine_.close_channel(id_, reply_code, reply_text, method_sig.first, method_sig.second);
  is_open_ = false;
  opening_ = false;
  ++generation_;
  const time_point deadline = clock::now() + std::chrono::seconds(10);
  while (conn_.machine_.state_of(id_) != protocol::channel_state::closed) {
    if (!conn_.pump(deadline)) break;
  }
  replies_.clear();
  abandoned_.clear();
  early_deliveries_.clear();
  consumers_.clear();
  no_ack_consumers_.clear();
  cancelled_no_ack_.clear();
  confirm_mode_ = false;
}

bool channel::flow(bool active) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::channel_flow m;
  m.active = active;
  send(m);
  codec::channel_flow_ok ok;
  wait_for({codec::channel_flow_ok::id}, std::nullopt).decode(ok);
  return ok.active;
}

// exchange -----------------------------------------------------------------------------------

void channel::exchange_declare(std::string_view exchange, std::string_view type,
                               const exchange_declare_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  std::string args = encode_arguments(o.arguments);
  send(exchange_declare_method(exchange, type, o, args));
  if (!o.nowait) wait_for({codec::exchange_declare_ok::id}, std::nullopt);
}

void channel::exchange_delete(std::string_view exchange, bool if_unused, bool nowait) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::exchange_delete m;
  m.exchange = exchange;
  m.if_unused = if_unused;
  m.nowait = nowait;
  send(m);
  if (!nowait) wait_for({codec::exchange_delete_ok::id}, std::nullopt);
}

void channel::exchange_bind(std::string_view destination, std::string_view source,
                            std::string_view routing_key, const bind_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  std::string args = encode_arguments(o.arguments);
  codec::exchange_bind m;
  m.destination = destination;
  m.source = source;
  m.routing_key = routing_key;
  m.nowait = o.nowait;
  m.arguments = codec::table_view{args};
  send(m);
  if (!o.nowait) wait_for({codec::exchange_bind_ok::id}, std::nullopt);
}

void channel::exchange_unbind(std::string_view destination, std::string_view source,
                              std::string_view routing_key, const bind_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  std::string args = encode_arguments(o.arguments);
  codec::exchange_unbind m;
  m.destination = destination;
  m.source = source;
  m.routing_key = routing_key;
  m.nowait = o.nowait;
  m.arguments = codec::table_view{args};
  send(m);
  if (!o.nowait) wait_for({codec::exchange_unbind_ok::id}, std::nullopt);
}

// queue --------------------------------------------------------------------------------------

queue_declare_ok channel::queue_declare(std::string_view queue, const queue_declare_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  std::string args = encode_arguments(o.arguments);
  send(queue_declare_method(queue, o, args));
  if (o.nowait) return {std::string(queue), 0, 0};
  codec::queue_declare_ok ok;
  protocol::command c = wait_for({codec::queue_declare_ok::id}, std::nullopt);
  c.decode(ok);
  return {std::string(ok.queue), ok.message_count, ok.consumer_count};
}

void channel::queue_bind(std::string_view queue, std::string_view exchange,
                         std::string_view routing_key, const bind_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  std::string args = encode_arguments(o.arguments);
  codec::queue_bind m;
  m.queue = queue;
  m.exchange = exchange;
  m.routing_key = routing_key;
  m.nowait = o.nowait;
  m.arguments = codec::table_view{args};
  send(m);
  if (!o.nowait) wait_for({codec::queue_bind_ok::id}, std::nullopt);
}

void channel::queue_unbind(std::string_view queue, std::string_view exchange,
                           std::string_view routing_key, const bind_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  std::string args = encode_arguments(o.arguments);
  codec::queue_unbind m;
  m.queue = queue;
  m.exchange = exchange;
  m.routing_key = routing_key;
  m.arguments = codec::table_view{args};
  send(m);
  // queue.unbind has no nowait bit: the -ok always comes.
  wait_for({codec::queue_unbind_ok::id}, std::nullopt);
}

std::uint32_t channel::queue_purge(std::string_view queue, bool nowait) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::queue_purge m;
  m.queue = queue;
  m.nowait = nowait;
  send(m);
  if (nowait) return 0;
  codec::queue_purge_ok ok;
  protocol::command c = wait_for({codec::queue_purge_ok::id}, std::nullopt);
  c.decode(ok);
  return ok.message_count;
}

std::uint32_t channel::queue_delete(std::string_view queue, const queue_delete_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::queue_delete m;
  m.queue = queue;
  m.if_unused = o.if_unused;
  m.if_empty = o.if_empty;
  m.nowait = o.nowait;
  send(m);
  if (o.nowait) return 0;
  codec::queue_delete_ok ok;
  protocol::command c = wait_for({codec::queue_delete_ok::id}, std::nullopt);
  c.decode(ok);
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
  wait_for({codec::basic_qos_ok::id}, std::nullopt);
  if (!a_global) consumer_prefetch_ = prefetch_count;
}

std::string channel::basic_consume(std::string_view queue, consumer_callback callback,
                                   const consume_options& o) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  if (o.nowait && o.consumer_tag.empty()) {
    throw std::invalid_argument("basic_consume with nowait needs a consumer_tag");
  }
  check_consume(queue, o, consumer_prefetch_);
  std::string args = encode_arguments(consume_arguments(o));
  codec::basic_consume m;
  m.queue = queue;
  m.consumer_tag = o.consumer_tag;
  m.no_local = o.no_local;
  m.no_ack = o.no_ack;
  m.exclusive = o.exclusive;
  m.nowait = o.nowait;
  m.arguments = codec::table_view{args};
  // Registered before sending: deliveries may follow consume-ok in the same read.
  std::string tag = o.consumer_tag;
  consumer entry{std::move(callback), o.on_cancel, o.no_ack, std::nullopt};
  if (is_stream_consume(o)) entry.stream.emplace();
  if (!tag.empty()) consumers_[tag] = entry;
  std::erase(cancelled_no_ack_, tag);
  send(m);
  if (!o.nowait) {
    codec::basic_consume_ok ok;
    if (tag.empty()) ++awaiting_consume_ok_;
    protocol::command c;
    try {
      c = wait_for({codec::basic_consume_ok::id}, std::nullopt);
    } catch (...) {
      // The call failed, so no consumer stays registered (wait_for cancels it on the broker).
      if (tag.empty()) {
        --awaiting_consume_ok_;
      } else {
        consumers_.erase(tag);
      }
      throw;
    }
    c.decode(ok);
    if (tag.empty()) {
      --awaiting_consume_ok_;
      tag = std::string(ok.consumer_tag);
      consumers_[tag] = std::move(entry);
      // Deliveries that arrived with the consume-ok, before the tag was known, go first in
      // line, through the same checks as any other (a callback may close the connection).
      for (auto d = early_deliveries_.rbegin(); d != early_deliveries_.rend(); ++d) {
        conn_.incoming_.push_front(
            {connection::incoming_event::kind::command, std::move(*d), generation_, {}});
      }
      early_deliveries_.clear();
      conn_.dispatch_incoming();
    }
  }
  if (o.no_ack) no_ack_consumers_.push_back(tag);
  return tag;
}

void channel::basic_cancel(std::string_view consumer_tag, bool nowait) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::basic_cancel m;
  m.consumer_tag = consumer_tag;
  m.nowait = nowait;
  send(m);
  if (!nowait) wait_for({codec::basic_cancel_ok::id}, std::nullopt);
  auto it = consumers_.find(consumer_tag);
  if (it != consumers_.end()) {
    if (it->second.no_ack) remember_cancelled_no_ack(consumer_tag);
    consumers_.erase(it);
  }
  std::erase(no_ack_consumers_, std::string(consumer_tag));
}

std::optional<message> channel::basic_get(std::string_view queue, bool no_ack) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::basic_get m;
  m.queue = queue;
  m.no_ack = no_ack;
  send(m);
  protocol::command c =
      wait_for({codec::basic_get_ok::id, codec::basic_get_empty::id}, std::nullopt);
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
  const time_point confirm_deadline =
      conn_.client_.confirm_publish ? conn_.deadline_after(wait) : time_point::max();
  const char* const bound = wait == o.confirm_timeout ? " within confirm_timeout"
                                                      : " within timeout (no confirm_timeout)";
  // py-amqp's basic_publish_confirm selects confirms at the first publish. confirm_mode_ belongs
  // to the channel's current life (a revival or a close clears it), so a revived or reopened
  // channel selects again before it publishes: with confirm_publish every publish is confirmed.
  // (py-amqp keeps its flag across a revival and then waits for an ack that never comes.)
  if (conn_.client_.confirm_publish && !confirm_mode_) {
    send(codec::confirm_select{});
    try {
      wait_for({codec::confirm_select_ok::id}, confirm_deadline);
    } catch (const amqp_timeout&) {
      throw amqp_timeout("no confirm.select-ok on channel " + std::to_string(id_) + bound +
                         " (confirm_publish selects confirms at a channel's first publish)");
    }
    confirm_mode_ = true;
    next_seq_ = 1;
  }
  // py-amqp's drain_events(timeout=0) before the write: connection.blocked reaches on_blocked
  // even when nothing else reads, and an error already sent is raised before anything is written.
  conn_.read_pending_before_publish();
  std::string headers;
  codec::basic_properties props = msg.props().to_wire(headers);
  codec::basic_publish m;
  m.exchange = exchange;
  m.routing_key = routing_key;
  m.mandatory = o.mandatory;
  m.immediate = o.immediate;
  if (conn_.machine_.send_publish(id_, m, props, msg.body()) != codec::errc::ok) {
    throw std::invalid_argument("message properties cannot be encoded (a value too long?)");
  }
  const std::uint64_t seq = confirm_mode_ ? next_seq_++ : 0;
  if (confirm_mode_) outstanding_.emplace(seq, true);
  try {
    conn_.flush(conn_.deadline_after(o.timeout ? o.timeout : conn_.client_.write_timeout));
  } catch (const amqp_timeout& e) {
    // flush's only amqp_timeout is its write deadline. py-amqp raises RecoverableChannelError
    // for it here, not socket.timeout.
    throw recoverable_channel_error(
        std::string(e.what()) + "; the connection is closed",
        {codec::basic_publish::class_id, codec::basic_publish::method_id},
        std::string(codec::basic_publish::name));
  }
  if (confirm_mode_ && conn_.client_.confirm_publish) {
    while (outstanding_.count(seq) != 0) {
      if (pending_error_) std::rethrow_exception(std::exchange(pending_error_, nullptr));
      conn_.throw_if_failed();
      if (!conn_.pump(confirm_deadline)) {
        throw amqp_timeout("no publisher confirm for delivery tag " + std::to_string(seq) + bound);
      }
    }
    auto nacked = std::find(nacked_.begin(), nacked_.end(), seq);
    if (nacked != nacked_.end()) {
      nacked_.erase(nacked);
      throw message_nacked("message was nacked by the broker (delivery tag " + std::to_string(seq) +
                           ")");
    }
  }
}

void channel::wait_for_confirms(std::optional<seconds_f> timeout) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  const time_point deadline = conn_.deadline_after(timeout);
  while (!outstanding_.empty()) {
    if (pending_error_) std::rethrow_exception(std::exchange(pending_error_, nullptr));
    conn_.throw_if_failed();
    if (!conn_.pump(deadline)) {
      throw amqp_timeout(std::to_string(outstanding_.size()) +
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
  codec::basic_ack m;
  m.delivery_tag = delivery_tag;
  m.multiple = multiple;
  send(m);
  stream_settled(delivery_tag, multiple);
  conn_.flush(conn_.deadline_after(conn_.client_.write_timeout));
}

void channel::basic_nack(std::uint64_t delivery_tag, bool multiple, bool requeue) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::basic_nack m;
  m.delivery_tag = delivery_tag;
  m.multiple = multiple;
  m.requeue = requeue;
  send(m);
  stream_settled(delivery_tag, multiple);
  conn_.flush(conn_.deadline_after(conn_.client_.write_timeout));
}

void channel::basic_reject(std::uint64_t delivery_tag, bool requeue) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::basic_reject m;
  m.delivery_tag = delivery_tag;
  m.requeue = requeue;
  send(m);
  stream_settled(delivery_tag, false);
  conn_.flush(conn_.deadline_after(conn_.client_.write_timeout));
}

void channel::stream_settled(std::uint64_t tag, bool multiple) {
  for (auto& [t, c] : consumers_) {
    if (c.stream) c.stream->on_settled(tag, multiple);
  }
}

std::optional<std::uint64_t> channel::stream_last_handled(std::string_view consumer_tag) const {
  std::lock_guard lock(conn_.mu_);
  auto it = consumers_.find(consumer_tag);
  if (it == consumers_.end() || !it->second.stream) return std::nullopt;
  return it->second.stream->last_handled();
}

void channel::basic_recover(bool requeue) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::basic_recover m;
  m.requeue = requeue;
  send(m);
  for (auto& [t, c] : consumers_) {
    if (c.stream) c.stream->forget_unsettled();  // given back: they come again
  }
  wait_for({codec::basic_recover_ok::id}, std::nullopt);
}

void channel::basic_recover_async(bool requeue) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  codec::basic_recover_async m;
  m.requeue = requeue;
  send(m);
  conn_.flush(conn_.deadline_after(conn_.client_.write_timeout));
}

void channel::confirm_select(bool nowait) {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  if (confirm_mode_) return;
  codec::confirm_select m;
  m.nowait = nowait;
  send(m);
  if (!nowait) wait_for({codec::confirm_select_ok::id}, std::nullopt);
  confirm_mode_ = true;
  next_seq_ = 1;
}

void channel::tx_select() {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  send(codec::tx_select{});
  wait_for({codec::tx_select_ok::id}, std::nullopt);
}

void channel::tx_commit() {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  send(codec::tx_commit{});
  wait_for({codec::tx_commit_ok::id}, std::nullopt);
}

void channel::tx_rollback() {
  std::unique_lock lock(conn_.mu_);
  ensure_open();
  send(codec::tx_rollback{});
  wait_for({codec::tx_rollback_ok::id}, std::nullopt);
}

std::vector<std::string> channel::consumer_tags() const {
  std::vector<std::string> out;
  for (const auto& [tag, c] : consumers_) out.push_back(tag);
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

void channel::settle_confirms(bool ack, std::uint64_t tag, bool multiple) {
  auto settle = [&](std::uint64_t t) {
    if (!ack) nacked_.push_back(t);
  };
  if (multiple) {
    auto end = outstanding_.upper_bound(tag);
    for (auto it = outstanding_.begin(); it != end; ++it) settle(it->first);
    outstanding_.erase(outstanding_.begin(), end);
  } else if (outstanding_.erase(tag) != 0) {
    settle(tag);
  }
}

bool channel::on_command_received(protocol::command& cmd) {
  switch (cmd.id()) {
    case codec::channel_open_ok::id:
      is_open_ = true;
      opening_ = false;
      return true;
    case codec::channel_flow::id: {
      codec::channel_flow f;
      cmd.decode(f);
      flow_active_ = f.active;  // the machine already answered flow-ok
      return true;
    }
    // Confirms settle at once, so that a publish waiting inside a callback sees them; the
    // events run at dispatch.
    case codec::basic_ack::id: {
      codec::basic_ack a;
      cmd.decode(a);
      settle_confirms(true, a.delivery_tag, a.multiple);
      return events_.basic_ack.empty();
    }
    case codec::basic_nack::id: {
      codec::basic_nack n;
      cmd.decode(n);
      settle_confirms(false, n.delivery_tag, n.multiple);
      return events_.basic_nack.empty();
    }
    case codec::basic_deliver::id:
    case codec::basic_return::id:
    case codec::basic_cancel::id:
      return false;
    default:
      // Replies come in the order of the calls, so the oldest abandoned wait owns this one.
      if (!abandoned_.empty() && std::find(abandoned_.front().begin(), abandoned_.front().end(),
                                           cmd.id()) != abandoned_.front().end()) {
        abandoned_.pop_front();
        discard_reply(cmd);
        return true;
      }
      replies_.push_back(std::move(cmd));
      return true;
  }
}

void channel::dispatch(protocol::command& cmd) {
  switch (cmd.id()) {
    case codec::basic_deliver::id: {
      codec::basic_deliver d;
      cmd.decode(d);
      auto it = consumers_.find(d.consumer_tag);
      if (it == consumers_.end()) {
        on_unknown_consumer(cmd, d.consumer_tag, d.delivery_tag);
        return;
      }
      message msg = make_message(cmd);
      delivery_info& info = msg.delivery_info();
      info.consumer_tag = d.consumer_tag;
      info.delivery_tag = d.delivery_tag;
      info.redelivered = d.redelivered;
      info.exchange = d.exchange;
      info.routing_key = d.routing_key;
      if (it->second.stream) {
        it->second.stream->on_delivery(
            d.delivery_tag,
            cmd.has_content ? stream_offset_header(cmd.header.properties) : std::nullopt);
      }
      consumer_callback cb = it->second.callback;  // the callback may cancel its consumer
      if (cb) cb(msg);
      return;
    }
    case codec::basic_return::id: {
      codec::basic_return r;
      cmd.decode(r);
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
      return;
    }
    case codec::basic_ack::id: {
      codec::basic_ack a;
      cmd.decode(a);
      for (auto& cb : events_.basic_ack) cb(a.delivery_tag, a.multiple);
      return;
    }
    case codec::basic_nack::id: {
      codec::basic_nack n;
      cmd.decode(n);
      for (auto& cb : events_.basic_nack) cb(n.delivery_tag, n.multiple);
      return;
    }
    case codec::basic_cancel::id: {
      // Consumer cancel notification: the broker cancelled one of our consumers.
      codec::basic_cancel c;
      cmd.decode(c);
      std::string tag(c.consumer_tag);
      auto it = consumers_.find(tag);
      cancel_callback on_cancel;
      if (it != consumers_.end()) {
        on_cancel = it->second.on_cancel;
        if (it->second.no_ack) remember_cancelled_no_ack(tag);
        consumers_.erase(it);
      }
      std::erase(no_ack_consumers_, tag);
      if (on_cancel) {
        on_cancel(tag);
      } else {
        throw consumer_cancelled(tag);
      }
      return;
    }
    default:
      return;
  }
}

void channel::remember_cancelled_no_ack(std::string_view tag) {
  // Only deliveries already in flight at the cancel can name it: a short memory is enough.
  if (cancelled_no_ack_.size() >= 64) cancelled_no_ack_.erase(cancelled_no_ack_.begin());
  cancelled_no_ack_.emplace_back(tag);
}

void channel::on_unknown_consumer(protocol::command& cmd, std::string_view consumer_tag,
                                  std::uint64_t delivery_tag) {
  if (awaiting_consume_ok_ > 0) {
    // Possibly for the server-named consumer whose consume-ok is in replies_: keep for later.
    early_deliveries_.push_back(std::move(cmd));
    return;
  }
  // A consumer cancelled (or a channel closed) while deliveries were in flight. As py-amqp
  // does, hand the message back; a no-ack delivery is already settled, and a closed channel's
  // unacked deliveries go back to the queue by themselves.
  if (!is_open_) return;
  if (std::find(cancelled_no_ack_.begin(), cancelled_no_ack_.end(), consumer_tag) !=
      cancelled_no_ack_.end()) {
    return;
  }
  codec::basic_reject r;
  r.delivery_tag = delivery_tag;
  r.requeue = true;
  send(r);
}

void channel::on_closed_by_peer(const protocol::close_reason& why) {
  std::string_view name = codec::method_name(why.class_id, why.method_id);
  // Raised from whichever call is reading (the one waiting for a reply on this channel, or
  // drain_events), as py-amqp does.
  if (!conn_.pending_error_) {
    conn_.pending_error_ =
        make_error(why.reply_code, why.reply_text, why.class_id, why.method_id, std::string(name));
  }
  consumers_.clear();
  no_ack_consumers_.clear();
  cancelled_no_ack_.clear();
  replies_.clear();
  abandoned_.clear();
  early_deliveries_.clear();
  confirm_mode_ = false;
  // Unconfirmed publishes will never be confirmed on this channel: report them as nacked.
  for (auto& [tag, pending] : outstanding_) nacked_.push_back(tag);
  outstanding_.clear();
  // Revival, as py-amqp: the same id opens again at once, and the error is raised from the
  // call that is waiting (or the next call on this channel).
  is_open_ = false;
  opening_ = true;
  ++generation_;
  conn_.machine_.open_channel(id_);
}

void channel::on_connection_lost() {
  is_open_ = false;
  opening_ = false;
  ++generation_;
  for (auto& [tag, pending] : outstanding_) nacked_.push_back(tag);
  outstanding_.clear();
}

}  // namespace warren
