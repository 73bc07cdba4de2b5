// One channel of the async engine: the protocol::channel_core driven from the I/O thread, and the
// blocking calls, the publish path and the consumers that application threads use on it.
//
// Where things are: channel_impl.cc (the core's events, the call machinery, close),
// channel_calls.cc (the RPCs: topology, qos, flow, tx, recover, get), publisher.cc (the publish
// path and confirms), consumer.cc (consume, cancel, the hand-off and the decisions' route).
//
// Threading. The core and everything marked "I/O thread" belong to the connection's I/O thread.
// The publish side (callbacks_, has_timeout_, undelivered_, and the core's confirms()) is guarded
// by the connection's publish lock (publish_staging::lock()). Blocking calls run on any thread
// but an I/O thread; they post their work to the I/O thread and wait for it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "codec/methods.h"
#include "engine/async/channel_link.h"
#include "engine/async/consumer.h"
#include "engine/async/engine.h"
#include "engine/async/io_thread.h"
#include "engine/async/publish_staging.h"
#include "engine/protocol/channel_core.h"

namespace warren::async::detail {

class channel_impl;

// One blocking call waiting for its reply (or, with reply_id 0, for its frame to be queued).
// Answered on the I/O thread; the promise is fulfilled after the read's deliveries are handed off.
struct rpc_call final : protocol::reply_waiter, std::enable_shared_from_this<rpc_call> {
  enum class kind : std::uint8_t {
    plain,
    open,
    close,
    consume,
    cancel,
    get,
    recover,
    qos,
    confirm_select,
    tx_select,
    flow,
  };

  // `c` may be null until the channel exists (channel.open); set it before the call starts.
  rpc_call(channel_impl* c, kind k, std::uint32_t reply, std::uint32_t alt_reply = 0)
      : ch(c), what(k), reply_id(reply), alt_reply_id(alt_reply) {}

  void on_reply(protocol::command& reply) override;
  void on_failed(protocol::end_cause cause, const protocol::close_reason& why) override;

  channel_impl* ch;
  const kind what;
  const std::uint32_t reply_id;  // 0: nowait, no reply comes
  const std::uint32_t alt_reply_id;
  std::promise<protocol::command> done;
  std::unique_ptr<consumer_entry> consumer;    // consume
  std::string consumer_tag;                    // cancel
  bool no_ack = false;                         // get
  std::uint32_t life = 0;                      // get: the channel's life the get-ok came in
  protocol::qos_settings qos;                  // qos
  protocol::confirm_tracker_options confirms;  // confirm_select
};

class channel_impl final : public protocol::channel_handler,
                           public std::enable_shared_from_this<channel_impl> {
 public:
  // What the connection hands a channel.
  struct environment {
    std::shared_ptr<channel_link> link;
    io_thread& io;
    publish_staging& staging;
    recorded_topology& topology;
    workers::worker_pool& pool;
    const engine_options& options;
    std::uint32_t frame_max;
    bool republish;  // recovery_policy::republish: keep the frames of unconfirmed publishes
    std::shared_ptr<metrics::channel_metrics> metrics;  // null: the engine records none
  };

  channel_impl(std::uint16_t id, environment env);
  ~channel_impl() override;

  std::uint16_t id() const noexcept { return core_.id(); }
  bool is_open() const noexcept { return core_.is_open(); }
  bool flow_active() const noexcept { return core_.flow_active(); }
  // The error that closed the channel (null while open, or after a close by this client).
  std::exception_ptr error() const;

  // I/O thread -----------------------------------------------------------------------------------
  protocol::channel_core& core() noexcept { return core_; }
  // channel.open for the connection (the call is answered by open-ok).
  void open(std::shared_ptr<rpc_call> call);
  // A decision routed to this thread; true when the channel was not touched yet this round (the
  // caller then calls send_due_acks once for it).
  bool apply(const ack_request& r, protocol::time_point now);
  void send_due_acks(protocol::time_point now);
  // Timers (held decisions, confirm timeouts) and confirm callbacks, each service round.
  void service(protocol::time_point now);
  protocol::time_point next_deadline() const { return core_.next_deadline(); }
  // A call's frame goes out and its reply is expected (or, nowait, its effect happens now).
  void start_call(std::shared_ptr<rpc_call> c, out_buffer frame, protocol::time_point now);
  // The engine's policy for a call that got no reply in time: the call gives up (its late reply
  // will answer nobody) and the channel closes with `why` as its error.
  void abandon(rpc_call& c, std::exception_ptr why);

  // Recovery (I/O thread). Before the connection's loss ends the channel's life: the channel is
  // to be reopened if it was open (or opening); its consumers are then kept (stashed) for the
  // replay rather than retired, and, with republish, its unconfirmed publishes too.
  void prepare_recovery();
  bool awaits_recovery() const noexcept { return awaits_recovery_; }
  // The recovery ended: consumers not resubscribed are retired, kept publishes not republished
  // complete in_doubt; a channel that is not open now is closed for good, with `why` as its error.
  void end_recovery(const protocol::close_reason& why);
  // Publishes reported in doubt and republished so far (any thread).
  std::uint64_t in_doubt_count() const noexcept {
    return in_doubt_.load(std::memory_order_relaxed);
  }
  std::uint64_t republished_count() const noexcept {
    return republished_.load(std::memory_order_relaxed);
  }
  // The life the channel is in (any thread): a delivery of another life cannot be settled.
  std::uint32_t life_now() const noexcept { return life_now_.load(std::memory_order_acquire); }
  // Recovery thread: basic.consume again for the kept consumer of record `r` (its tag, handler
  // and mailbox), waiting for consume-ok. Throws as basic_consume does, or std::runtime_error when
  // no consumer with that tag was kept.
  void resubscribe(const protocol::consumer_record& r);

  // Any thread but an I/O thread: calls ----------------------------------------------------------
  template <class M>
  protocol::command call(const M& m, std::shared_ptr<rpc_call> c);
  // A plain call of `m`, answered by `reply_id` (0: nowait).
  template <class M>
  protocol::command call(const M& m, std::uint32_t reply_id) {
    return call(m, std::make_shared<rpc_call>(this, rpc_call::kind::plain, reply_id));
  }
  void throw_if_closed() const;
  bool awaits_recovery_flag() const noexcept {
    return awaits_recovery_flag_.load(std::memory_order_acquire);
  }
  void close();

  // channel_calls.cc
  queue_declare_ok queue_declare(std::string_view queue, const queue_declare_options& o);
  void exchange_declare(std::string_view exchange, std::string_view type,
                        const exchange_declare_options& o);
  void bind(protocol::binding_record::kind k, bool add, std::string_view destination,
            std::string_view source, std::string_view routing_key, const bind_options& o);
  std::uint32_t queue_purge(std::string_view queue, bool nowait);
  std::uint32_t queue_delete(std::string_view queue, const queue_delete_options& o);
  void exchange_delete(std::string_view exchange, bool if_unused, bool nowait);
  void basic_qos(std::uint32_t prefetch_size, std::uint16_t prefetch_count, bool global);
  bool flow(bool active);
  void tx(std::uint32_t method_id);  // tx.select, tx.commit or tx.rollback
  std::optional<delivery> basic_get(std::string_view queue, bool no_ack);
  void basic_recover(bool requeue, bool wait);

  // publisher.cc: the publish path (any thread)
  publish_status try_publish(std::string_view exchange, std::string_view routing_key,
                             const codec::basic_properties& props, std::string_view body,
                             const publish_options& o, confirm_callback& on_confirm);
  publish_status publish(std::string_view exchange, std::string_view routing_key,
                         const codec::basic_properties& props, std::string_view body,
                         protocol::time_point deadline, const publish_options& o,
                         confirm_callback& on_confirm);
  std::future<confirm_result> publish_confirmed(std::string_view exchange,
                                                std::string_view routing_key,
                                                const codec::basic_properties& props,
                                                std::string_view body, const publish_options& o);
  void confirm_select(std::size_t window, std::chrono::milliseconds timeout);
  bool wait_for_confirms(protocol::time_point deadline);
  std::size_t outstanding_confirms() const noexcept {
    return outstanding_.load(std::memory_order_relaxed);
  }
  void set_on_return(std::function<void(const returned_message&)> f);

  // consumer.cc
  std::string basic_consume(std::string_view queue, delivery_handler handler,
                            const consumer_options& o, const ack_coalescing& ac,
                            unsigned concurrency);
  void basic_cancel(std::string_view consumer_tag, bool nowait);

  // Deliveries posted to this channel's consumers and not yet handled (any thread).
  std::atomic<std::int64_t> pending{0};

  // The fields basic.deliver and basic.get-ok share, viewing `cmd`'s buffers.
  template <class M>
  static void fill(delivery& d, const protocol::command& cmd, const M& m) {
    d.header_ = cmd.header;
    d.body_ = cmd.body;
    d.exchange_ = m.exchange;
    d.routing_key_ = m.routing_key;
    d.tag_ = m.delivery_tag;
    d.redelivered_ = m.redelivered;
  }

  io_thread& io() noexcept { return io_; }
  channel_link& link() noexcept { return *link_; }
  const engine_options& options() const noexcept { return options_; }
  // The error a call failing with `cause` throws.
  std::exception_ptr error_for(protocol::end_cause cause, const protocol::close_reason& why) const;

 private:
  // protocol::channel_handler (I/O thread)
  void on_delivery(protocol::consumer& c, protocol::command& cmd) override;
  void lock_publish() override { staging_.lock().lock(); }
  void unlock_publish() override { staging_.lock().unlock(); }
  void on_confirm(const protocol::confirm_event& e) override;
  void after_confirms() override { complete_confirms(); }
  void on_return(protocol::command& cmd, const codec::basic_return& m) override;
  void on_flow(bool active) override;
  void on_consumer_cancelled(std::unique_ptr<protocol::consumer> c) override;
  void on_consumer_removed(std::unique_ptr<protocol::consumer> c) override;
  void on_waiting(int delta) override { link_->waiting(delta); }
  void on_kept(const protocol::confirm_event& e) override;
  void on_open() override { life_now_.store(core_.life(), std::memory_order_release); }
  void on_ending(protocol::end_cause cause, const protocol::close_reason& why) override;
  void on_ended(protocol::end_cause cause, const protocol::close_reason& why) override;

  // Runs the confirm callbacks gathered under the lock, outside it (I/O thread).
  void complete_confirms();
  // confirm.select's frame joins the publish stream, with the tracker started in the same
  // critical section (see channel_core::confirm_select_sent).
  void start_confirm_select(std::shared_ptr<rpc_call> c, out_buffer frame);
  void set_error(std::exception_ptr e, bool replace);
  protocol::command wait_reply(std::future<protocol::command>& f, rpc_call& c,
                               std::string_view what);
  void post_call(std::shared_ptr<rpc_call> c, out_buffer frame);

  protocol::channel_core core_;
  std::shared_ptr<channel_link> link_;
  io_thread& io_;
  publish_staging& staging_;
  recorded_topology& topology_;
  workers::worker_pool& pool_;
  const engine_options& options_;
  const std::uint32_t frame_max_;

  // I/O thread.
  std::function<void(const returned_message&)> on_return_;
  bool acks_touched_ = false;
  struct done_confirm {
    confirm_result result;
    confirm_callback callback;
  };
  std::vector<done_confirm> done_;  // completions gathered under the lock

  // Publish lock.
  std::vector<confirm_callback> callbacks_;  // per sequence & mask_
  std::uint64_t mask_ = 0;
  bool has_timeout_ = false;
  std::size_t undelivered_ = 0;  // settled, callback not yet returned

  // Recovery.
  const bool republish_;
  bool awaits_recovery_ = false;                          // I/O thread
  std::atomic<bool> awaits_recovery_flag_{false};         // the same, for any thread
  std::vector<std::unique_ptr<consumer_entry>> stashed_;  // I/O thread: consumers to resubscribe
  struct kept_publish {
    std::string frames;
    confirm_callback callback;
    std::uint64_t token = 0;
  };
  std::vector<std::string> frames_;  // publish lock, per sequence & mask_ (republish only)
  std::vector<kept_publish> kept_;   // publish lock: to republish after the next confirm.select
  std::atomic<std::uint32_t> life_now_{0};
  std::atomic<std::uint64_t> in_doubt_{0};
  std::atomic<std::uint64_t> republished_{0};

  std::atomic<std::size_t> outstanding_{0};
  mutable std::mutex err_mu_;
  std::exception_ptr error_;
};

// What a blocking call throws when engine_options::rpc_timeout passes without its reply.
amqp_timeout rpc_timed_out(std::string_view what, std::chrono::milliseconds after);
// Throws std::logic_error on an I/O thread (a blocking call would wait for itself).
void check_not_io(std::string_view what);
// The method `m` as one frame on `channel`; std::invalid_argument when it cannot be encoded.
template <class M>
out_buffer encode_frame(std::uint16_t channel, const M& m);

template <class M>
out_buffer encode_frame(std::uint16_t channel, const M& m) {
  std::string s;
  codec::writer w(s);
  const codec::errc e = codec::encode_method_frame(channel, m, w);
  w.finish();
  if (e != codec::errc::ok) {
    throw std::invalid_argument(std::string(M::name) + ": arguments cannot be encoded");
  }
  out_buffer frame;
  frame.append(s);
  return frame;
}

template <class M>
protocol::command channel_impl::call(const M& m, std::shared_ptr<rpc_call> c) {
  check_not_io(M::name);
  throw_if_closed();
  std::future<protocol::command> f = c->done.get_future();
  post_call(c, encode_frame(id(), m));
  return wait_reply(f, *c, M::name);
}

}  // namespace warren::async::detail
