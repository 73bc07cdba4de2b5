#include "engine/async/consumer.h"

#include "engine/async/channel_impl.h"

namespace warren::async::detail {

namespace {
thread_local int handlers_running = 0;
}  // namespace

// consumer_ref ------------------------------------------------------------------------------------

consumer_ref::consumer_ref(const consumer_ref& o) noexcept : p_(o.p_) {
  if (p_ != nullptr) p_->refs.fetch_add(1, std::memory_order_relaxed);
}

consumer_ref::~consumer_ref() {
  if (p_ != nullptr && p_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete p_;
}

// The route ---------------------------------------------------------------------------------------

void consumer_impl::handled(std::size_t n) noexcept {
  const auto count = static_cast<std::int64_t>(n);
  if (ch->pending.fetch_sub(count, std::memory_order_acq_rel) == count && !no_ack) {
    // Nothing left to handle on this channel: the held decisions can go now (channel_impl::apply).
    ack_request r;
    r.ch = ch;
    // The channel's life now: a mailbox kept across a recovery serves the recovered consumer.
    r.life = ch->life_now();
    r.what = ack_request::kind::idle;
    ch->io().post_ack(std::move(r));
  }
  ch->link().delivery_handled(n);
}

bool route_decision(const consumer_ref& c, std::uint64_t tag, int kind, bool multiple,
                    bool requeue) {
  // A delivery of a lost connection's life: the broker has requeued it (and will redeliver it,
  // redelivered set); its tag means nothing on the recovered channel.
  if (!c || c->no_ack || !c->ch->is_open() || c->life != c->ch->life_now()) return false;
  ack_request r;
  r.ch = c->ch;
  r.tag = tag;
  r.life = c->life;
  r.what = static_cast<ack_request::kind>(kind);
  r.multiple = multiple;
  r.requeue = requeue;
  c->ch->io().post_ack(std::move(r));
  return true;
}

// The hand-off ------------------------------------------------------------------------------------

void consumer_entry::post_batch() {
  const std::size_t n = batch.size();
  route->refs.fetch_add(static_cast<std::int64_t>(uncounted), std::memory_order_relaxed);
  uncounted = 0;
  route->ch->pending.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
  box->post_bulk(batch.begin(), n);
  batch.clear();
}

bool in_handler() noexcept {
  return handlers_running != 0;
}

std::function<void(delivery&)> counted_handler(delivery_handler h, const consumer_entry* self) {
  return [h = std::move(h), self](delivery& d) {
    struct guard {
      ~guard() { --handlers_running; }
    } g;
    ++handlers_running;
    h(d);
    // Set at registration, before any delivery reached the mailbox.
    if (self->channel_metrics) {
      const protocol::time_point handed = delivery_stamp::of(d);
      const protocol::time_point now = protocol::clock::now();
      if (handed != protocol::time_point{} && now >= handed) {
        self->channel_metrics->record_handled(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - handed).count()));
      }
    }
  };
}

// On the channel ----------------------------------------------------------------------------------

void channel_impl::on_delivery(protocol::consumer& c, protocol::command& cmd) {
  consumer_entry& e = static_cast<consumer_entry&>(c);
  if (e.batch.empty()) link_->hand_off(e);
  delivery& d = e.batch.emplace_back();
  fill(d, cmd, cmd.deliver);
  d.consumer_tag_ = cmd.deliver.consumer_tag;
  d.handed_ = link_->feed_time();
  d.consumer_ = consumer_ref::adopt(e.route.get());  // counted in bulk by post_batch()
  ++e.uncounted;
  // The machine keeps each buffer once (usually all three parts sit in one).
  for (int i = 0; i < 3; ++i) d.keep_[i] = std::move(cmd.keep[i]);
}

std::string channel_impl::basic_consume(std::string_view queue, delivery_handler handler,
                                        const consumer_options& o, const ack_coalescing& ac,
                                        unsigned concurrency) {
  check_not_io("basic.consume");
  if (o.nowait && o.consumer_tag.empty()) {
    throw std::invalid_argument("basic.consume with nowait needs a consumer_tag");
  }
  // A stream consumer's requirements are checked before anything is sent (engine/options.h);
  // the prefetch is read on the I/O thread, which records the broker's qos-ok.
  std::optional<std::uint16_t> prefetch;
  if (is_stream_consume(o)) {
    io_.run_and_wait([&] {
      if (const auto& q = core_.settings().qos_per_consumer) prefetch = q->prefetch_count;
    });
    check_consume(queue, o, prefetch);
  }
  const codec::field_table arguments = consume_arguments(o);
  auto entry = std::make_unique<consumer_entry>();
  entry->tag = o.consumer_tag;  // the key a nowait consumer is registered under
  entry->no_ack = o.no_ack;
  if (is_stream_consume(o)) entry->stream.emplace();
  entry->route = consumer_ref::adopt(new consumer_impl());
  entry->route->ch = shared_from_this();
  entry->route->no_ack = o.no_ack;
  entry->on_cancel = o.on_cancel;
  entry->batch.reserve(64);
  consumer_ref route = entry->route;
  const consumer_entry* self = entry.get();
  entry->box = std::make_unique<workers::mailbox<delivery>>(
      pool_, counted_handler(std::move(handler), self), std::max(1u, concurrency),
      workers::mailbox<delivery>::error_handler{},
      // The pending counts go down once per run of deliveries a worker handled, not per
      // delivery: two atomic operations on lines the I/O thread also writes.
      [route, self](std::size_t n) {
        route->handled(n);
        if (self->metrics) self->metrics->on_handled(n);
      });
  // The coalescer is per channel: the first consumer's settings apply (I/O thread).
  io_.run_and_wait([this, co = protocol::ack_coalescer_options{ac.max_count, ac.max_delay}] {
    core_.configure_acks(co);
  });
  const std::string args = encode_arguments(arguments);
  auto c = std::make_shared<rpc_call>(this, rpc_call::kind::consume,
                                      o.nowait ? 0 : codec::basic_consume_ok::id);
  c->consumer = std::move(entry);
  protocol::command reply = call(consume_method(queue, o, args), std::move(c));
  codec::basic_consume_ok ok;
  if (o.nowait) {
    ok.consumer_tag = o.consumer_tag;
  } else {
    reply.decode(ok);
  }
  std::string tag(ok.consumer_tag);
  topology_.change([&](protocol::topology& t) {
    t.consume({id(), std::string(queue), tag, o.no_ack, o.exclusive, o.no_local, arguments});
  });
  return tag;
}

void channel_impl::resubscribe(const protocol::consumer_record& r) {
  check_not_io("basic.consume");
  std::unique_ptr<consumer_entry> entry;
  io_.run_and_wait([&] {
    for (auto it = stashed_.begin(); it != stashed_.end(); ++it) {
      if ((*it)->tag == r.consumer_tag) {
        entry = std::move(*it);
        stashed_.erase(it);
        return;
      }
    }
  });
  if (!entry) {
    throw std::runtime_error("no handler kept for consumer '" + r.consumer_tag + "'");
  }
  // A new route: decisions on the lost life's deliveries keep the old one, and are refused.
  entry->route = consumer_ref::adopt(new consumer_impl());
  entry->route->ch = shared_from_this();
  entry->route->no_ack = r.no_ack;
  consumer_options o;
  o.consumer_tag = r.consumer_tag;
  o.no_local = r.no_local;
  o.no_ack = r.no_ack;
  o.exclusive = r.exclusive;
  o.arguments = r.arguments;
  const std::string args = encode_arguments(o.arguments);
  auto c = std::make_shared<rpc_call>(this, rpc_call::kind::consume, codec::basic_consume_ok::id);
  c->consumer = std::move(entry);
  call(consume_method(r.queue, o, args), std::move(c));
}

void channel_impl::basic_cancel(std::string_view consumer_tag, bool nowait) {
  codec::basic_cancel m;
  m.consumer_tag = consumer_tag;
  m.nowait = nowait;
  // With nowait there is no cancel-ok to drop the consumer on: it goes as the frame does, so
  // that the drain below waits for its handlers in flight.
  auto c = std::make_shared<rpc_call>(this, rpc_call::kind::cancel,
                                      nowait ? 0 : codec::basic_cancel_ok::id);
  c->consumer_tag = std::string(consumer_tag);
  call(m, std::move(c));
  topology_.change([&](protocol::topology& t) { t.cancel(id(), consumer_tag); });
  link_->drain_retired();
}

}  // namespace warren::async::detail
