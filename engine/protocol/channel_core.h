// One AMQP channel's rules, sans-I/O, driven by both faces (the blocking API in engine/client and
// the async engine in engine/async): what a channel is, independent of who waits and how.
//
// Per channel it holds, each stored once:
//   - the state (closed, opening, open, closing) and the life: a counter bumped each time the
//     channel opens, so that deliveries and events of an earlier life of the same id are told
//     apart (a decision on a delivery of an ended life is refused);
//   - the replies its calls wait for (reply_expectations: one rule for a call that gives up);
//   - its consumers and the unknown-consumer rule (consumer_table), broker-side basic.cancel, and
//     each stream consumer's progress (the offset its application last handled: streams.h);
//   - publisher confirms (confirm_tracker) from confirm.select-ok on, flow (channel.flow from the
//     broker), tx mode, the qos and client flow last acknowledged (what a recovery replays);
//   - delivery decisions through an ack_coalescer (or sent at once, for a face whose callers name
//     tags themselves).
//
// How a face drives it:
//   - it sends methods itself (encoded where it likes) and, right after queueing one for the wire,
//     tells the core what reply to expect (expect(), consume_sent(), ...), in wire order;
//   - it hands the core every command the connection_machine reports for this channel
//     (on_command), and the channel's end (on_closed_by_peer, on_connection_lost);
//   - it calls on_timer() by next_deadline() (held acks, confirm timeouts);
//   - the core answers through two narrow interfaces handed to it: channel_wire (its own frames:
//     acks, rejects, a cancel, channel.open and channel.close) and channel_handler (events:
//     deliveries, confirms, returns, flow, consumers leaving, open, end).
// The core never reaches into its owner, never blocks, reads no clock and starts no thread.
//
// Threading. Everything is for one thread at a time, the channel's owner (the async engine's I/O
// thread, the blocking API's calling thread), except:
//   - state(), is_open(), flow_active(): any thread (atomics written by the owner);
//   - the publish side, can_publish() and confirms() (and the confirm_tracker it returns): any
//     thread holding the face's publish lock. The core takes that same lock, through
//     channel_handler::lock_publish/unlock_publish, around every use of the tracker on its own
//     side (confirm.select-ok, basic.ack/nack/return, confirm timeouts, the end of a life), and
//     calls on_confirm() with it held and after_confirms() once it is released.
// A face with one thread leaves lock_publish/unlock_publish empty.
//
// Re-entrancy: handler events may call back into the core (a delivery handler's decision, a
// consumer's cancel, a new open after an end) except on_command(); the core calls on_ended() last,
// when its state for the ended life is settled, so a face may open the channel again from there.
//
// Cost on the hot paths: a delivery is one cached consumer lookup, one coalescer step and one
// virtual call (on_delivery); a decision is one coalescer step; a publish is can_publish() and the
// tracker's on_publish under the face's lock. No allocation and no std::function per message.
//
// Recovery (engine/protocol/recovery.h): a new life restarts confirm sequence numbers (the tracker
// is rebuilt at each confirm.select) and refuses decisions on the old life's deliveries;
// settings() is what a recovered channel replays (qos, confirm mode, tx, flow). A connection loss
// ends every unconfirmed publish in_doubt (never a nack), or, with keep_unconfirmed_on_loss, hands
// them to the face (on_kept) to publish again on the recovered channel.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "codec/methods.h"
#include "engine/metrics/metrics.h"
#include "engine/protocol/ack_coalescer.h"
#include "engine/protocol/confirm_tracker.h"
#include "engine/protocol/connection_machine.h"
#include "engine/protocol/consumer_table.h"
#include "engine/protocol/reply_expectations.h"

namespace warren::protocol {

// Where a channel core's own frames go: its connection, which writes them after everything it
// queued before (a face implements it over its connection_machine, e.g. with send_ack_action).
// Every call happens on the channel's owner thread. After the connection is gone the face makes
// them no-ops.
class channel_wire {
 public:
  virtual ~channel_wire() = default;
  // basic.ack, basic.nack or basic.reject.
  virtual void send_ack(std::uint16_t channel, const ack_action& a) = 0;
  // basic.cancel with nowait (for a consumer whose basic.consume's caller gave up).
  virtual void send_cancel(std::uint16_t channel, std::string_view consumer_tag) = 0;
  // channel.open, through connection_machine::open_channel.
  virtual void open_channel(std::uint16_t channel) = 0;
  // channel.close, through connection_machine::close_channel.
  virtual void close_channel(std::uint16_t channel, std::uint16_t reply_code,
                             std::string_view reply_text, std::uint16_t class_id,
                             std::uint16_t method_id) = 0;
};

// Queues `a` as its method on `m` (the usual channel_wire::send_ack).
void send_ack_action(connection_machine& m, std::uint16_t channel, const ack_action& a);

// What a channel core reports. Called on the owner thread, from inside the core's calls.
class channel_handler {
 public:
  virtual ~channel_handler() = default;

  // A basic.deliver for `c` (cmd.has_deliver: cmd.deliver is decoded; its views and the body
  // live in cmd.keep's buffers: move those out to keep the delivery). Hot path.
  virtual void on_delivery(consumer& c, command& cmd) = 0;

  // The face's publish lock (see the header comment).
  virtual void lock_publish() {}
  virtual void unlock_publish() {}
  // One publish ended (ack, nack, timeout, or the end of the life). Publish lock held: record it,
  // run user code in after_confirms().
  virtual void on_confirm(const confirm_event& /*e*/) {}
  // keep_unconfirmed_on_loss: a publish outstanding when the connection was lost, handed over
  // instead of ended (event.outcome in_doubt; sequence and token as registered), in sequence
  // order, publish lock held. The face keeps it to publish again on the recovered channel, or
  // completes it in doubt itself; it must not drop it.
  virtual void on_kept(const confirm_event& /*e*/) {}
  // After a run of on_confirm calls, the publish lock released.
  virtual void after_confirms() {}
  // A basic.ack or basic.nack frame from the broker, after the tracker settled it (py-amqp's
  // channel events report the raw frame).
  virtual void on_confirm_frame(bool /*ack*/, std::uint64_t /*tag*/, bool /*multiple*/) {}
  // A basic.return (the tracker has already marked its mandatory publish). `cmd` holds the
  // message.
  virtual void on_return(command& /*cmd*/, const codec::basic_return& /*m*/) {}

  // channel.flow from the broker: publishing may go on (true) or must pause (false).
  virtual void on_flow(bool /*active*/) {}
  // The broker cancelled `c` (basic.cancel): it has left the table.
  virtual void on_consumer_cancelled(std::unique_ptr<consumer> c) = 0;
  // `c` left the table for any other reason: cancel-ok, a nowait cancel, a replaced tag, a
  // consume whose call gave up, the end of the life. The face releases it (e.g. drains its
  // handler off this thread).
  virtual void on_consumer_removed(std::unique_ptr<consumer> c) = 0;

  // The number of calls on this channel waiting for a reply changed by `delta` (a call's
  // expectation or a close waiting for close-ok: counted from the call's send to its reply, its
  // failure, or its caller giving up). A face that must never hold a reply back (receive
  // batching) keeps the sum over its channels.
  virtual void on_waiting(int /*delta*/) {}

  // channel.open-ok: the life began.
  virtual void on_open() {}
  // The life is about to end: called first, before state() reads closed on any thread, so that a
  // face reporting why to other threads (a publisher that sees the channel closed) has the
  // reason in place by then. Then the waits, confirms and consumers end, then on_ended.
  virtual void on_ending(end_cause /*cause*/, const close_reason& /*why*/) {}
  // The life ended (exactly once per life): waits failed, confirms ended, consumers removed.
  virtual void on_ended(end_cause /*cause*/, const close_reason& /*why*/) {}
};

struct qos_settings {
  std::uint32_t prefetch_size = 0;
  std::uint16_t prefetch_count = 0;
  bool global = false;
  friend bool operator==(const qos_settings&, const qos_settings&) = default;
};

// What the broker has acknowledged for this channel, kept across lives: what a recovered channel
// replays (the face's own options aside).
struct channel_settings {
  std::optional<qos_settings> qos_per_consumer;     // basic.qos global=false (RabbitMQ's reading)
  std::optional<qos_settings> qos_global;           // basic.qos global=true
  std::optional<confirm_tracker_options> confirms;  // confirm mode, with the face's window
  bool tx = false;                                  // tx.select-ok
  bool client_flow = true;                          // channel.flow-ok to our channel.flow
};

struct channel_core_options {
  // Decisions on deliveries go through an ack_coalescer, which knows every delivery and refuses a
  // tag that is not owed (the async engine). false: each decision goes to the wire at once, tag as
  // given (the blocking API, whose callers name tags themselves, as py-amqp's do).
  bool coalesce_acks = true;
  ack_coalescer_options acks;
  // Cancelled no-ack consumer tags remembered (consumer_table).
  std::size_t cancelled_memory = 64;
  // Where the channel's events are counted (README, "Metrics"), or null for none. The core
  // records, on the owner thread: deliveries (and each consumer's, see consumer::metrics), the
  // application's decisions as they are made (a multiple decision counts every delivery it
  // covers when coalescing; without coalescing the core cannot tell and counts one), the
  // broker's acks and nacks with their latency from the confirm_event's `published` (not
  // recorded when the face passed time_point{} to on_publish), returns, and in-doubt ends
  // (timeout, channel closed, connection lost). The face counts publishes (note_published).
  std::shared_ptr<metrics::channel_metrics> metrics;
};

class channel_core {
 public:
  // The publish side's verdict (publish lock held).
  enum class publish_gate : std::uint8_t {
    ok,
    closed,       // the channel is not open
    blocked,      // channel.flow(active=false) from the broker
    window_full,  // confirm mode and the window is full
  };

  channel_core(std::uint16_t id, channel_wire& wire, channel_handler& handler,
               channel_core_options options = {});
  channel_core(const channel_core&) = delete;
  channel_core& operator=(const channel_core&) = delete;
  ~channel_core();

  std::uint16_t id() const noexcept { return id_; }

  // Any thread ---------------------------------------------------------------------------------
  channel_state state() const noexcept { return state_.load(std::memory_order_acquire); }
  bool is_open() const noexcept { return state() == channel_state::open; }
  // False while the broker's channel.flow(active=false) is in force.
  bool flow_active() const noexcept { return flow_.load(std::memory_order_acquire); }

  // Publish lock held ---------------------------------------------------------------------------
  publish_gate can_publish() const noexcept {
    if (state() != channel_state::open) return publish_gate::closed;
    if (!flow_active()) return publish_gate::blocked;
    if (tracker_ && tracker_->full()) return publish_gate::window_full;
    return publish_gate::ok;
  }
  // n publishes accepted (the face calls it once the frames are queued).
  void note_published(std::uint64_t n = 1) noexcept {
    if (metrics_) metrics_->on_published(n);
  }
  // The channel's recorders (channel_core_options::metrics), or null. Any thread.
  metrics::channel_metrics* metrics() const noexcept { return metrics_.get(); }
  // The confirm tracker while in confirm mode, else null. The face registers each publish with
  // on_publish() under the same lock as it queues the frames, so sequences follow wire order.
  confirm_tracker* confirms() noexcept { return tracker_ ? &*tracker_ : nullptr; }
  const confirm_tracker* confirms() const noexcept { return tracker_ ? &*tracker_ : nullptr; }

  // Owner thread: opening and closing ----------------------------------------------------------
  // Sends channel.open (through the wire) and begins a new life: state opening, life + 1, the
  // waiter (may be null) answered by open-ok. False, nothing done, unless state() is closed.
  bool open(std::shared_ptr<reply_waiter> waiter);
  // Sends the held decisions, then channel.close; state closing. The waiter (may be null) is
  // answered by close-ok, after the life ended (closed_by_client), or fails with the cause that
  // ended the life otherwise. While already closing, only the waiter is added (no second
  // channel.close). False, waiter untouched, when the channel is closed.
  bool close(std::uint16_t reply_code, std::string_view reply_text,
             std::shared_ptr<reply_waiter> waiter, std::uint16_t class_id = 0,
             std::uint16_t method_id = 0);
  std::uint32_t life() const noexcept { return life_; }
  // Recovery with republish: when the connection is lost, the unconfirmed publishes are handed
  // to channel_handler::on_kept instead of ending in_doubt (a channel close still ends them).
  void keep_unconfirmed_on_loss(bool keep) noexcept { keep_unconfirmed_ = keep; }

  // Owner thread: calls (right after the face queued the method; call flush_acks() before
  // queueing it, so that decisions made before the call reach the broker first) ---------------
  // A call answered by `reply_id` (or `alt_reply_id`).
  void expect(std::uint32_t reply_id, std::shared_ptr<reply_waiter> waiter,
              std::uint32_t alt_reply_id = 0);
  // basic.consume: `c` is registered when consume-ok comes, under its tag (the broker's when
  // c->tag is empty). Null waiter: nowait (c->tag must be set), registered now.
  void consume_sent(std::unique_ptr<consumer> c, std::shared_ptr<reply_waiter> waiter);
  // basic.cancel: the consumer leaves at cancel-ok; null waiter (nowait): now.
  void cancel_sent(std::string_view consumer_tag, std::shared_ptr<reply_waiter> waiter);
  // basic.get: its get-ok delivery is counted in the channel's tag sequence.
  void get_sent(bool no_ack, std::shared_ptr<reply_waiter> waiter);
  // basic.recover (waiter) or basic.recover-async (null): the broker takes back every
  // undecided delivery, so they are forgotten, and deliveries arriving before recover-ok are
  // owed nothing.
  void recover_sent(std::shared_ptr<reply_waiter> waiter);
  void qos_sent(qos_settings q, std::shared_ptr<reply_waiter> waiter);
  // confirm.select: confirm mode (a fresh tracker, sequences from 1) from now on, since the
  // broker numbers every publish that follows the method on the wire; the waiter (null: nowait)
  // is answered by select-ok, and a refusal (406, the channel closes) ends the publishes tracked
  // meanwhile with channel_closed. Call it with the publish lock held, in the same critical
  // section that queues the method ahead of any later publish (the core does not take the lock
  // here): a publish queued between the method and the tracker would be numbered by the broker
  // and not by the tracker.
  void confirm_select_sent(confirm_tracker_options o, std::shared_ptr<reply_waiter> waiter);
  void tx_select_sent(std::shared_ptr<reply_waiter> waiter);
  // channel.flow from this client: settings().client_flow records the broker's flow-ok answer.
  void flow_sent(std::shared_ptr<reply_waiter> waiter);
  // The call of `waiter` gives up (see reply_expectations; a close's waiter is simply dropped,
  // and the close-ok still ends the life). False when it was already answered or failed.
  bool abandon(const reply_waiter* waiter);
  // Calls waiting for a reply now (see channel_handler::on_waiting).
  std::size_t calls_waiting() const noexcept { return waiting_; }
  // Stops a consumer without waiting: basic.cancel nowait goes out and the consumer leaves
  // (on_consumer_removed). False when no consumer has `consumer_tag`.
  bool cancel_now(std::string_view consumer_tag);

  // Owner thread: delivery decisions -------------------------------------------------------------
  // A decision on a delivery of life `life` (the life() when it arrived). False, nothing sent,
  // when that life has ended or the channel is not open, or (coalescing) when the tag is not owed
  // (never delivered, no-ack, already decided, given back by a recover).
  bool ack(std::uint32_t life, std::uint64_t tag, bool multiple, time_point now);
  bool nack(std::uint32_t life, std::uint64_t tag, bool multiple, bool requeue, time_point now);
  bool reject(std::uint32_t life, std::uint64_t tag, bool requeue, time_point now);
  // Sends every held decision now.
  void flush_acks();
  // Sends the held decisions due at `now` (max_count reached or max_delay passed).
  void poll_acks(time_point now);
  // Replaces the coalescer's settings while nothing is owed and no consumer is registered
  // (false otherwise: the settings stay).
  bool configure_acks(const ack_coalescer_options& o);
  // Deliveries owed a decision and not yet settled on the wire (coalescing only).
  std::size_t unsettled() const noexcept { return coalescer_.unsettled(); }

  // Owner thread: the receive side ---------------------------------------------------------------
  // A command for this channel, as the connection_machine reported it.
  void on_command(command& cmd, time_point now);
  // The broker closed the channel (the machine already answered close-ok).
  void on_closed_by_peer(const close_reason& why);
  // The connection ended.
  void on_connection_lost(const close_reason& why);
  // Held decisions due, and (publish lock taken) confirm timeouts.
  void on_timer(time_point now);
  // When on_timer next has work; time_point::max() when none. Takes the publish lock only while
  // confirms have a timeout.
  time_point next_deadline() const;

  // Owner thread: what is there ------------------------------------------------------------------
  consumer_table& consumers() noexcept { return consumers_; }
  const consumer_table& consumers() const noexcept { return consumers_; }
  const channel_settings& settings() const noexcept { return settings_; }
  // A stream consumer's progress (consumer::stream): the offset its application last handled,
  // for a recovery to resume after (stream_progress::resume_from()). Null when no consumer has
  // `consumer_tag` or it is not a stream consumer. Valid until the consumer leaves the table (it
  // leaves with its progress: on_consumer_removed/on_consumer_cancelled hand it over).
  const stream_progress* stream_progress_of(std::string_view consumer_tag);
  // Calls sent and not yet answered (abandoned ones included).
  std::size_t calls_pending() const noexcept { return expected_.size(); }
  bool in_tx() const noexcept { return settings_.tx; }
  // basic.recover calls sent and not yet answered.
  int recovers_pending() const noexcept { return recovering_; }

 private:
  // What a reply does besides answering its call.
  struct effect {
    enum class kind : std::uint8_t {
      none,
      open,
      consume,
      cancel,
      get,
      recover,
      qos,
      tx_select,
      flow,
    } what = kind::none;
    std::unique_ptr<protocol::consumer> subscriber;  // consume
    bool no_ack = false;                             // get
    qos_settings qos;                                // qos
  };
  using expectations = reply_expectations<effect>;

  void on_deliver(command& cmd, time_point now);
  void on_unknown_consumer(std::string_view tag, std::uint64_t delivery_tag, time_point now);
  void on_confirm_command(command& cmd, time_point now);
  // Counts a publish's end (publish lock held).
  void record_confirm(const confirm_event& e, time_point now) noexcept;
  void count_decisions(ack_action::kind what, std::uint64_t n) noexcept;
  // Gives a newly registered consumer its recorders.
  void attach_metrics(consumer& c);
  void on_return_command(command& cmd);
  void on_flow_command(command& cmd);
  void on_cancel_command(command& cmd);
  void on_close_ok(command& cmd);
  void on_reply(command& cmd, time_point now);
  // Applies a reply's effect (`late`: its call gave up).
  void apply(effect& e, command& reply, bool late, time_point now);
  void start_confirms(const confirm_tracker_options& o);  // publish lock held
  void end(end_cause cause, const close_reason& why);
  bool decide(std::uint32_t life, ack_action a, time_point now);
  void send_actions();
  // Deliveries the broker takes back (recover, the end of a life) are no longer owed.
  void forget_unsettled_stream_deliveries();
  // Recounts the calls waiting and reports a change (on_waiting).
  void sync_waiting();

  const std::uint16_t id_;
  channel_wire& wire_;
  channel_handler& handler_;
  const bool coalesce_;
  std::atomic<channel_state> state_{channel_state::closed};
  std::atomic<bool> flow_{true};
  std::uint32_t life_ = 0;
  expectations expected_;
  std::vector<std::shared_ptr<reply_waiter>> close_waiters_;
  std::size_t waiting_ = 0;  // as last reported through on_waiting
  consumer_table consumers_;
  ack_coalescer coalescer_;
  std::vector<ack_action> actions_;  // the coalescer's output, reused
  int recovering_ = 0;
  bool streams_ = false;  // a stream consumer had a delivery: decisions feed consumer::stream
  std::optional<confirm_tracker> tracker_;  // publish lock
  bool confirm_timeouts_ = false;           // tracker_ has a timeout (owner thread)
  bool keep_unconfirmed_ = false;
  channel_settings settings_;
  const std::shared_ptr<metrics::channel_metrics> metrics_;  // may be null
};

}  // namespace warren::protocol
