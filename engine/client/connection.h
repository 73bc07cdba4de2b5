// The blocking, py-amqp-compatible API: warren::connection and warren::channel.
//
// Same names and semantics as py-amqp 5.1 (snake_case, option structs where Python has
// keyword arguments); see README's table for the member-by-member mapping. Under it is the
// same sans-I/O state machine (engine/protocol) that the multithreaded engine drives.
//
// Threading: a connection and its channels belong to one thread at a time, as in py-amqp.
// The one exception is the opt-in background heartbeat (client_options::background_heartbeat),
// whose thread takes the connection's lock only to send heartbeats while the owner is not inside a
// call; the owner's calls take the same lock, and so do the accessors of what its writes
// change (connected(), bytes_sent(), bytes_recv(), sock()).
//
// Errors: every call throws py-amqp's hierarchy (engine/errors.h): a channel error from the
// broker (e.g. not_found) from the call that caused it or, when it arrives later, from the
// next call on that channel or drain_events(); a connection error from any call;
// amqp_timeout when a deadline passes. Passwords never appear in errors or logs.
// Callbacks run from whichever call reads their event (drain_events, or a call waiting for its
// reply), never inside another callback; what one raises comes from that call, except for the
// events read after the call's own reply (the deliveries that come with a basic.consume-ok, say):
// they run before the call returns, and what they raise comes from the next call.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "engine/client/message.h"
#include "engine/errors.h"
#include "engine/io/transport.h"
#include "engine/options.h"
#include "engine/protocol/channel_core.h"
#include "engine/protocol/channel_table.h"
#include "engine/protocol/connection_machine.h"
#include "engine/receive_buffer.h"
#include "engine/uri.h"

namespace warren {

class connection;
class channel;

// The blocking API's own connection options (py-amqp's Connection keyword arguments that only
// this face has); the shared ones are warren::connection_options (engine/options.h).
struct client_options {
  std::function<void(connection&)> on_open;
  std::function<void(std::string_view reason)> on_blocked;
  std::function<void()> on_unblocked;
  std::function<void()> on_tune_ok;
  // basic_publish waits for the broker's ack (py-amqp's basic_publish_confirm): a channel is put
  // in confirm mode at its first publish, and again at the first publish after the broker closed
  // it (revival) or the user closed and reopened it.
  bool confirm_publish = false;
  std::optional<seconds_f> read_timeout;
  std::optional<seconds_f> write_timeout;
  // In confirm mode, the most publishes a channel has unanswered by the broker (the span from the
  // oldest unanswered to the newest). A publish that finds it full first reads the broker's acks
  // until there is room (bounded like its write: publish_options::timeout, else write_timeout;
  // amqp_timeout when that passes). 0 is taken as 1.
  std::size_t confirm_window = 16384;
  // Sends heartbeats from a helper thread, so a caller busy elsewhere never misses one.
  bool background_heartbeat = false;
};

using consumer_callback = std::function<void(message&)>;

struct publish_options {
  bool mandatory = false;
  bool immediate = false;  // RabbitMQ rejects it (540); kept for py-amqp parity
  // Bound on writing the message when the broker applies back-pressure (connection.blocked);
  // none: client_options::write_timeout. When it passes, recoverable_channel_error (as
  // py-amqp's RecoverableChannelError) and the connection is closed, since part of the message
  // may have been written.
  std::optional<seconds_f> timeout;
  // In confirm mode with confirm_publish: how long to wait for the ack (amqp_timeout when it
  // passes). None or zero: `timeout`, as py-amqp's `confirm_timeout or timeout`; neither: no
  // bound.
  std::optional<seconds_f> confirm_timeout;
};

// Handlers of channel.events in py-amqp. With no basic_return handler, a basic.return raises
// its error (error_for_code's class for the reply code, e.g. no_route for 312, method
// basic.return) from the call that reads it, as py-amqp does: drain_events, or a call waiting
// for its reply, which gives up (its reply is dropped when it comes). The channel stays open.
using ack_callback = std::function<void(std::uint64_t delivery_tag, bool multiple)>;
using return_callback = std::function<void(const amqp_error& reason, std::string_view exchange,
                                           std::string_view routing_key, message& msg)>;
struct channel_events {
  std::vector<ack_callback> basic_ack;
  std::vector<ack_callback> basic_nack;
  std::vector<return_callback> basic_return;
};

class channel {
 public:
  std::uint16_t channel_id() const noexcept { return core_.id(); }
  bool is_open() const noexcept { return core_.is_open(); }
  warren::connection& connection() noexcept { return conn_; }

  // channel.open; called by connection::channel(). Re-opens a closed channel with the same id.
  void open();
  // channel.close; a no-op when already closed.
  void close(std::uint16_t reply_code = 0, std::string_view reply_text = "",
             std::pair<std::uint16_t, std::uint16_t> method_sig = {0, 0});
  // channel.flow: asks the broker to pause (false) or resume (true) deliveries to us.
  // Returns the broker's answer. (RabbitMQ answers active=false with 540.)
  bool flow(bool active);

  void exchange_declare(std::string_view exchange, std::string_view type,
                        const exchange_declare_options& o = {});
  void exchange_delete(std::string_view exchange, bool if_unused = false, bool nowait = false);
  void exchange_bind(std::string_view destination, std::string_view source,
                     std::string_view routing_key = "", const bind_options& o = {});
  void exchange_unbind(std::string_view destination, std::string_view source,
                       std::string_view routing_key = "", const bind_options& o = {});

  // Returns the name (server-named when `queue` is empty), message and consumer counts.
  // With nowait, returns {queue, 0, 0} without waiting.
  queue_declare_ok queue_declare(std::string_view queue = "", const queue_declare_options& o = {});
  void queue_bind(std::string_view queue, std::string_view exchange = "",
                  std::string_view routing_key = "", const bind_options& o = {});
  void queue_unbind(std::string_view queue, std::string_view exchange,
                    std::string_view routing_key = "", const bind_options& o = {});
  // Message counts (0 with nowait).
  std::uint32_t queue_purge(std::string_view queue = "", bool nowait = false);
  std::uint32_t queue_delete(std::string_view queue = "", const queue_delete_options& o = {});

  void basic_qos(std::uint32_t prefetch_size, std::uint16_t prefetch_count, bool a_global);
  // Returns the consumer tag. `callback` runs for each delivery, from whichever call on this
  // connection reads it (drain_events, or any call waiting for a reply).
  std::string basic_consume(std::string_view queue, consumer_callback callback,
                            const consume_options& o = {});
  void basic_cancel(std::string_view consumer_tag, bool nowait = false);
  // One message, or nullopt when the queue is empty.
  std::optional<message> basic_get(std::string_view queue = "", bool no_ack = false);
  // Without confirm_publish: returns once written (recoverable_channel_error when o.timeout
  // passes first). With the connection's confirm_publish: first puts the channel in confirm
  // mode if it is not (confirm.select and its -ok; precondition_failed when the channel is
  // transactional), then waits for the broker's ack; message_nacked on a nack; amqp_timeout
  // when confirm_timeout (else timeout) passes, the confirm.select included; a basic.return for
  // a mandatory publish is reported to events().basic_return before the ack.
  // When connection.blocked was negotiated, first reads what the broker has already sent, as
  // py-amqp's drain_events(timeout=0) there, so that on_blocked runs for a publisher that never
  // reads; to spare a system call per publish this happens at most once per millisecond (a
  // publish-only loop hears connection.blocked within a millisecond of publishing). What that
  // read raises (a channel or connection error, a callback's exception) comes from this call,
  // before anything is written.
  // In confirm mode, a publish that finds client_options::confirm_window publishes unanswered
  // first reads the broker's acks until there is room, within o.timeout (else write_timeout):
  // amqp_timeout, nothing written, when that passes.
  void basic_publish(const message& msg, std::string_view exchange = "",
                     std::string_view routing_key = "", const publish_options& o = {});
  // Delivery decisions, sent as given. Not sent while the channel reopens after the broker closed
  // it: the broker took back every delivery of the life that ended.
  void basic_ack(std::uint64_t delivery_tag, bool multiple = false);
  void basic_nack(std::uint64_t delivery_tag, bool multiple = false, bool requeue = true);
  void basic_reject(std::uint64_t delivery_tag, bool requeue);
  void basic_recover(bool requeue = false);
  void basic_recover_async(bool requeue = false);

  void confirm_select(bool nowait = false);
  // Whether confirm.select is in force for the channel's current life (with confirm_publish:
  // false until the first publish, and again after a revival or a reopen).
  bool in_confirm_mode() const noexcept { return confirm_selected_; }
  // The sequence number the next publish gets in confirm mode (1, 2, ...); 1 outside it.
  std::uint64_t next_publish_seq_no() const noexcept {
    const protocol::confirm_tracker* t = core_.confirms();
    return t != nullptr ? t->next_sequence() : 1;
  }
  // Waits until every publish so far is answered; message_nacked if any was nacked, or ended
  // without an answer because the channel or the connection did (an in-doubt publish is reported
  // as nacked here, as before the channel core).
  void wait_for_confirms(std::optional<seconds_f> timeout = std::nullopt);

  void tx_select();
  void tx_commit();
  void tx_rollback();

  channel_events& events() noexcept { return events_; }
  // Tags of consumers started with no_ack (py-amqp's no_ack_consumers).
  const std::vector<std::string>& no_ack_consumers() const noexcept { return no_ack_consumers_; }
  // Consumer tags currently registered on this channel.
  std::vector<std::string> consumer_tags() const;
  bool active() const noexcept { return core_.flow_active(); }
  // A stream consumer's progress (consume_options::stream_start): the offset of the last
  // delivery its application settled (basic_ack/nack/reject, or the message's ack()) such that
  // every earlier one of it was settled too; what a recovery resumes after
  // (stream_offset::at(*last + 1)). nullopt before the first, or when `consumer_tag` is no
  // stream consumer of this channel (a broker cancel or basic_cancel removes it).
  std::optional<std::uint64_t> stream_last_handled(std::string_view consumer_tag);

  channel(warren::connection& conn, std::uint16_t id);
  ~channel();
  channel(const channel&) = delete;
  channel& operator=(const channel&) = delete;

 private:
  friend class connection;
  friend class message;
  struct consumer;
  struct reply_slot;
  struct confirm_wait {
    std::uint64_t sequence = 0;
    bool done = false;
    protocol::confirm_outcome outcome = protocol::confirm_outcome::ack;
  };

  void ensure_open();
  template <class M>
  void send(const M& m);
  // Sends `m`, expects `reply_id` through the core and waits for it.
  template <class M>
  protocol::command call(const M& m, std::uint32_t reply_id);
  // call(), or with nowait only the send.
  template <class M>
  void call_unless(bool nowait, const M& m, std::uint32_t reply_id);
  // Waits until the core answered `w` or ended its channel's life. When the wait raises first (a
  // timeout, an error read meanwhile) the call gives up through the core (channel_core::abandon:
  // its reply, when it comes, answers no later call).
  protocol::command wait_reply(const std::shared_ptr<reply_slot>& w, protocol::time_point deadline);
  [[noreturn]] void throw_failed(const reply_slot& w);
  // A reply that came, but whose call raised anyway: what the core does with a late one.
  void discard_reply(reply_slot& w);
  // confirm.select (once per life on the wire; a second call only waits for its own -ok).
  void select_confirms(bool nowait, protocol::time_point deadline);
  // Reads until the confirm window has room (basic_publish).
  void wait_for_window(protocol::time_point deadline);
  // Inside feed(): passes `cmd` to the core at once and returns true, or returns false for what
  // runs user code (a delivery, the broker's basic.cancel), which dispatch(cmd) hands the core
  // later.
  bool on_command_received(protocol::command& cmd);
  // Runs user callbacks for a queued event (connection::dispatch_incoming).
  void dispatch(protocol::command& cmd);
  void dispatch_return(protocol::command& cmd);
  void dispatch_confirm(bool ack, std::uint64_t tag, bool multiple);
  message make_message(protocol::command& cmd);
  // Ends the current life as a client close without the broker's close-ok (a close that crossed
  // the broker's, or got no answer in time), so that the channel can be opened again.
  void end_locally();

  // protocol::channel_handler: inside the core's calls, no user code.
  class handler final : public protocol::channel_handler {
   public:
    explicit handler(channel& ch) : ch_(ch) {}
    void on_delivery(protocol::consumer& c, protocol::command& cmd) override;
    void on_confirm(const protocol::confirm_event& e) override;
    void on_confirm_frame(bool ack, std::uint64_t tag, bool multiple) override;
    void on_return(protocol::command& cmd, const codec::basic_return& m) override;
    void on_consumer_cancelled(std::unique_ptr<protocol::consumer> c) override;
    void on_consumer_removed(std::unique_ptr<protocol::consumer> c) override;
    void on_ended(protocol::end_cause cause, const protocol::close_reason& why) override;

   private:
    channel& ch_;
  };

  warren::connection& conn_;
  handler handler_{*this};
  // The channel's rules: state and life, replies, consumers, confirms (engine/protocol).
  protocol::channel_core core_;
  // confirm.select-ok received in the current life (py-amqp's confirm mode flag).
  bool confirm_selected_ = false;
  // The core ends the current life without a revival (end_locally).
  bool ending_locally_ = false;
  // Publishes that ended without an ack and that no waiting publish took: reported by
  // wait_for_confirms.
  std::vector<std::uint64_t> nacked_;
  // Publishes waiting for their own confirm (confirm_publish), innermost last.
  std::vector<confirm_wait> confirm_waits_;
  // dispatch(): what the core handed over during its on_command.
  consumer* ready_ = nullptr;
  std::unique_ptr<consumer> cancelled_;
  std::vector<std::string> no_ack_consumers_;
  channel_events events_;
  // Received messages hold a weak reference: it expires with this object (and so with the
  // connection), which tells a message that outlives them not to use its channel pointer.
  std::shared_ptr<const void> alive_ = std::make_shared<char>();
};

class connection : private protocol::connection_handler, private protocol::channel_wire {
 public:
  explicit connection(connection_options options = {}, warren::client_options client = {});
  explicit connection(std::string_view uri, warren::client_options client = {})
      : connection(connection_options::from_uri(uri), std::move(client)) {}
  ~connection() override;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  // Connects the transport and completes the AMQP handshake; no-op when connected.
  void connect();
  // A channel: `id` 0/absent allocates the lowest free id. Opens it (or returns the open one).
  warren::channel& channel(std::uint16_t id = 0);
  // As py-amqp's Connection.close: sends connection.close and waits for close-ok (bounded by
  // 5 s), without a channel.close per channel (the broker closes them with the connection);
  // then every channel is closed on this side too (is_open() false, and a call on one raises
  // recoverable_connection_error). A no-op when not connected.
  void close(std::uint16_t reply_code = 0, std::string_view reply_text = "",
             std::pair<std::uint16_t, std::uint16_t> method_sig = {0, 0});
  // Reads and dispatches incoming frames until at least one command or event was handled;
  // amqp_timeout when `timeout` passes first (none: wait indefinitely).
  void drain_events(std::optional<seconds_f> timeout = std::nullopt);
  // py-amqp's heartbeat_tick: sends a heartbeat when due; connection_forced when two
  // intervals passed without anything received. Call about once per second. Unlike py-amqp,
  // which leaves the connection to its caller, it then closes the connection: connection.close
  // (320) is written if the socket takes it within 200 ms, and the socket is closed.
  void heartbeat_tick(int rate = 2);
  void send_heartbeat();
  // connection.update-secret (e.g. a refreshed OAuth token); waits for the -ok.
  void update_secret(std::string_view new_secret, std::string_view reason);
  // Liveness check (as py-amqp's is_alive): sends a heartbeat frame and reports whether the
  // transport still works.
  bool is_alive();

  bool connected() const;
  const codec::field_table& server_properties() const noexcept {
    return machine_.server_properties();
  }
  const codec::field_table& server_capabilities() const noexcept {
    return machine_.server_capabilities();
  }
  const std::vector<std::string>& mechanisms() const noexcept { return machine_.mechanisms(); }
  const std::vector<std::string>& locales() const noexcept { return machine_.locales(); }
  // The protocol version connection.start announced (0 and 9 from RabbitMQ); 0 before it.
  std::uint8_t version_major() const noexcept { return machine_.version_major(); }
  std::uint8_t version_minor() const noexcept { return machine_.version_minor(); }
  // The SASL mechanism this connection logged in with: the first of the configured ones that
  // the broker offers (e.g. "PLAIN", "EXTERNAL"). Empty before connection.start.
  const std::string& chosen_mechanism() const noexcept { return machine_.chosen_mechanism(); }
  std::uint16_t channel_max() const noexcept { return machine_.channel_max(); }
  std::uint32_t frame_max() const noexcept { return machine_.frame_max(); }
  std::uint16_t heartbeat() const noexcept { return machine_.heartbeat(); }
  std::uint16_t server_heartbeat() const noexcept { return machine_.server_heartbeat(); }
  std::uint64_t bytes_sent() const {
    std::lock_guard lock(mu_);
    return transport_.bytes_sent();
  }
  std::uint64_t bytes_recv() const {
    std::lock_guard lock(mu_);
    return transport_.bytes_received();
  }
  protocol::time_point last_heartbeat_sent() const noexcept { return last_heartbeat_sent_; }
  protocol::time_point last_heartbeat_received() const noexcept { return last_heartbeat_received_; }
  // The socket's file descriptor (-1 when not connected).
  int sock() const {
    std::lock_guard lock(mu_);
    return transport_.fd();
  }
  bool blocked() const noexcept { return machine_.blocked(); }
  const connection_options& options() const noexcept { return options_; }
  const warren::client_options& client_options() const noexcept { return client_; }
  const std::map<std::uint16_t, std::unique_ptr<warren::channel>>& channels() const noexcept {
    return channels_;
  }

 private:
  friend class warren::channel;

  // protocol::channel_wire: a channel core's own frames (no-ops once the connection is gone).
  void send_ack(std::uint16_t channel, const protocol::ack_action& a) override;
  void send_cancel(std::uint16_t channel, std::string_view consumer_tag) override;
  void open_channel(std::uint16_t channel) override;
  void close_channel(std::uint16_t channel, std::uint16_t reply_code, std::string_view reply_text,
                     std::uint16_t class_id, std::uint16_t method_id) override;

  // connection_handler: inside the machine's feed(); what runs user code is queued in incoming_.
  void on_open() override;
  void on_tuned() override;
  void on_command(protocol::command& cmd) override;
  void on_channel_closed(std::uint16_t channel, const protocol::close_reason& why) override;
  void on_blocked(std::string_view reason) override;
  void on_unblocked() override;
  void on_closed(const protocol::close_reason& why) override;

  // basic_publish's read of what is pending (see channel::basic_publish): when
  // connection.blocked was negotiated and the last check is pending_check_interval old, one
  // zero-timeout poll, and when something is there one read and its dispatch.
  void read_pending_before_publish();
  // Feeds the machine what the transport read while a write waited, and dispatches it.
  void feed_buffered_input();
  // Writes pending output, then reads once (waiting until `deadline`) and feeds the machine.
  // Returns false when the deadline passed with nothing read. Throws the connection error.
  bool pump(protocol::time_point deadline);
  void flush(protocol::time_point deadline);
  void throw_if_failed();
  void raise_pending();
  // Runs what feed() queued in incoming_, in arrival order, catching what callbacks throw
  // into pending_error_; a no-op inside a callback. Commands are dropped once the connection
  // or their channel has closed since they arrived.
  void dispatch_incoming();
  protocol::time_point deadline_after(std::optional<seconds_f> t) const;
  // connected() for code that already holds mu_ (dispatch checks it for every delivery).
  bool connected_locked() const noexcept;
  void start_heartbeat_thread();
  void stop_heartbeat_thread();

  connection_options options_;
  warren::client_options client_;
  // Receive buffers. Messages the user keeps (and the machine's half-assembled content while it
  // is destroyed) may release theirs after the pool is gone: rx_pool allows that.
  rx_pool pool_{256 * 1024, 8};
  receive_buffer rx_{pool_};
  protocol::connection_machine machine_;
  io::transport transport_;
  // Channel ids and the close fan-out (engine/protocol). A closed channel keeps its id, so that
  // channel(id) opens the same object again.
  protocol::channel_table table_;
  std::map<std::uint16_t, std::unique_ptr<warren::channel>> channels_;
  // The time of the read being fed (what the machine's handlers pass the channel cores).
  protocol::time_point feed_now_{};
  // Events that run user code, queued by the machine's handlers during feed() and run by
  // dispatch_incoming() once feed() has returned and the read position has moved past the
  // frames fed: the machine's feed() is not re-entrant, and a callback may call back into the
  // connection (basic_cancel, close, publish), which reads the socket again. While callbacks
  // run, nested reads only queue: no callback ever runs inside another one. What a nested
  // wait needs (replies, confirms, channel closes) is taken at once, outside this queue.
  struct incoming_event {
    enum class kind : std::uint8_t {
      command,   // a delivery or the broker's basic.cancel, for the channel core at dispatch
      returned,  // a basic.return the core has seen
      confirm,   // a basic.ack or basic.nack the core has settled, for channel_events
      blocked,
      unblocked,
    } what;
    protocol::command cmd;   // command, returned
    std::uint32_t life = 0;  // command, returned, confirm: the channel's life when it arrived
    std::uint16_t channel = 0;
    std::string reason;  // blocked
    bool ack = false;    // confirm
    std::uint64_t tag = 0;
    bool multiple = false;
  };
  std::deque<incoming_event> incoming_;
  // A call's reply came: the events queued after it wait (dispatch_incoming stops before them)
  // until the call has taken its reply, and then run without raising from that call (what they
  // raise comes from the next one), as the deliveries that come with a basic.consume-ok.
  static constexpr std::size_t no_hold = SIZE_MAX;
  std::size_t hold_at_ = no_hold;  // events before this position may run
  void hold_incoming() noexcept {
    if (hold_at_ == no_hold) hold_at_ = incoming_.size();
  }
  // Ends the hold and runs what it kept (errors stay pending).
  void release_incoming();
  bool dispatching_ = false;
  std::exception_ptr connection_error_;
  std::exception_ptr pending_error_;  // raised from the current call once dispatch finishes
  std::uint64_t events_handled_ = 0;
  bool opened_ = false;
  bool update_secret_ok_ = false;
  bool closing_by_user_ = false;
  // We claimed connection.blocked in connection.start-ok (so the broker may send it).
  bool blocked_negotiated_ = false;
  // A publish-only loop polls the socket once per interval, not once per publish: a poll is a
  // system call, about as costly as the publish's own write (bench/RESULTS.md).
  static constexpr std::chrono::milliseconds pending_check_interval{1};
  protocol::time_point next_pending_check_{};
  static constexpr std::uint64_t pending_check_bytes = 64 * 1024;
  std::uint64_t sent_at_check_ = 0;
  bool feeding_buffered_ = false;
  protocol::time_point last_heartbeat_sent_{};
  protocol::time_point last_heartbeat_received_{};
  std::uint64_t prev_sent_ = UINT64_MAX, prev_recv_ = UINT64_MAX;

  mutable std::recursive_mutex mu_;  // held by every public call; the heartbeat thread tries it
  std::thread heartbeat_thread_;
  std::mutex hb_mu_;
  std::condition_variable hb_cv_;
  bool hb_stop_ = false;
};

}  // namespace warren
