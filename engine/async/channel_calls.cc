// The channel's blocking RPCs other than publishing and consuming: topology (recorded in the
// connection's topology record once the broker accepted them), qos, flow, tx, recover, get.
#include "engine/async/channel_impl.h"

namespace warren::async::detail {

using kind = rpc_call::kind;

queue_declare_ok channel_impl::queue_declare(std::string_view queue,
                                             const queue_declare_options& o) {
  const std::string args = encode_arguments(o.arguments);
  protocol::command c =
      call(queue_declare_method(queue, o, args), o.nowait ? 0 : codec::queue_declare_ok::id);
  codec::queue_declare_ok ok;
  if (o.nowait) {
    ok.queue = queue;
  } else {
    c.decode(ok);
  }
  queue_declare_ok r{std::string(ok.queue), ok.message_count, ok.consumer_count};
  topology_.change([&](protocol::topology& t) { t.declare_queue(r.queue, o, queue.empty()); });
  return r;
}

void channel_impl::exchange_declare(std::string_view exchange, std::string_view type,
                                    const exchange_declare_options& o) {
  const std::string args = encode_arguments(o.arguments);
  call(exchange_declare_method(exchange, type, o, args),
       o.nowait ? 0 : codec::exchange_declare_ok::id);
  topology_.change([&](protocol::topology& t) { t.declare_exchange(exchange, type, o); });
}

void channel_impl::bind(protocol::binding_record::kind k, bool add, std::string_view destination,
                        std::string_view source, std::string_view routing_key,
                        const bind_options& o) {
  const std::string args = encode_arguments(o.arguments);
  using bk = protocol::binding_record::kind;
  if (k == bk::queue && add) {
    call(queue_bind_method(destination, source, routing_key, o, args),
         o.nowait ? 0 : codec::queue_bind_ok::id);
  } else if (k == bk::queue) {
    // queue.unbind has no nowait bit: its -ok always comes.
    call(queue_unbind_method(destination, source, routing_key, args), codec::queue_unbind_ok::id);
  } else if (add) {
    call(exchange_bind_method(destination, source, routing_key, o, args),
         o.nowait ? 0 : codec::exchange_bind_ok::id);
  } else {
    call(exchange_unbind_method(destination, source, routing_key, o, args),
         o.nowait ? 0 : codec::exchange_unbind_ok::id);
  }
  topology_.change([&](protocol::topology& t) {
    if (add) {
      t.bind(k, destination, source, routing_key, o.arguments);
    } else {
      t.unbind(k, destination, source, routing_key, o.arguments);
    }
  });
}

std::uint32_t channel_impl::queue_purge(std::string_view queue, bool nowait) {
  codec::queue_purge m;
  m.queue = queue;
  m.nowait = nowait;
  protocol::command c = call(m, nowait ? 0 : codec::queue_purge_ok::id);
  codec::queue_purge_ok ok;
  if (!nowait) c.decode(ok);
  return ok.message_count;
}

std::uint32_t channel_impl::queue_delete(std::string_view queue, const queue_delete_options& o) {
  protocol::command c =
      call(queue_delete_method(queue, o), o.nowait ? 0 : codec::queue_delete_ok::id);
  codec::queue_delete_ok ok;
  if (!o.nowait) c.decode(ok);
  topology_.change([&](protocol::topology& t) { t.delete_queue(queue); });
  return ok.message_count;
}

void channel_impl::exchange_delete(std::string_view exchange, bool if_unused, bool nowait) {
  codec::exchange_delete m;
  m.exchange = exchange;
  m.if_unused = if_unused;
  m.nowait = nowait;
  call(m, nowait ? 0 : codec::exchange_delete_ok::id);
  topology_.change([&](protocol::topology& t) { t.delete_exchange(exchange); });
}

void channel_impl::basic_qos(std::uint32_t prefetch_size, std::uint16_t prefetch_count,
                             bool global) {
  codec::basic_qos m;
  m.prefetch_size = prefetch_size;
  m.prefetch_count = prefetch_count;
  m.global = global;
  auto c = std::make_shared<rpc_call>(this, kind::qos, codec::basic_qos_ok::id);
  c->qos = {prefetch_size, prefetch_count, global};
  call(m, std::move(c));
}

bool channel_impl::flow(bool active) {
  codec::channel_flow m;
  m.active = active;
  protocol::command c =
      call(m, std::make_shared<rpc_call>(this, kind::flow, codec::channel_flow_ok::id));
  codec::channel_flow_ok ok;
  c.decode(ok);
  return ok.active;
}

void channel_impl::tx(std::uint32_t method_id) {
  switch (method_id) {
    case codec::tx_select::id:
      call(codec::tx_select{},
           std::make_shared<rpc_call>(this, kind::tx_select, codec::tx_select_ok::id));
      return;
    case codec::tx_commit::id:
      call(codec::tx_commit{}, codec::tx_commit_ok::id);
      return;
    default:
      call(codec::tx_rollback{}, codec::tx_rollback_ok::id);
      return;
  }
}

std::optional<delivery> channel_impl::basic_get(std::string_view queue, bool no_ack) {
  codec::basic_get m;
  m.queue = queue;
  m.no_ack = no_ack;
  auto call_state = std::make_shared<rpc_call>(this, kind::get, codec::basic_get_ok::id,
                                               codec::basic_get_empty::id);
  call_state->no_ack = no_ack;
  protocol::command c = call(m, call_state);
  if (c.is<codec::basic_get_empty>()) return std::nullopt;
  codec::basic_get_ok ok;
  c.decode(ok);
  std::optional<delivery> r(std::in_place);
  delivery& d = *r;
  fill(d, c, ok);
  d.message_count_ = ok.message_count;
  // No consumer: a route of its own (owned by the delivery and its copies alone, so it cannot
  // keep the channel alive in a cycle) sends the decision to the channel's I/O thread.
  auto* route = new consumer_impl();
  route->ch = shared_from_this();
  route->no_ack = no_ack;
  route->life = call_state->life;
  d.consumer_ = consumer_ref::adopt(route);
  for (int i = 0; i < 3; ++i) d.keep_[i] = std::move(c.keep[i]);  // the views' buffers
  return r;
}

// Both recovers forget the channel's undecided deliveries once the held decisions have gone
// (start_call sends those first): the broker requeues them, so a later decision on one would
// name a tag it no longer knows. basic.recover also makes the deliveries that arrive before its
// recover-ok owed nothing (the broker requeues them too).
void channel_impl::basic_recover(bool requeue, bool wait) {
  if (wait) {
    codec::basic_recover m;
    m.requeue = requeue;
    call(m, std::make_shared<rpc_call>(this, kind::recover, codec::basic_recover_ok::id));
    return;
  }
  codec::basic_recover_async m;
  m.requeue = requeue;
  call(m, std::make_shared<rpc_call>(this, kind::recover, 0));
}

}  // namespace warren::async::detail
