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
#include "engine/protocol/connection_machine.h"
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
  std::uint16_t channel_id() const noexcept { return id_; }
  bool is_open() const noexcept { return is_open_; }
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
  void basic_publish(const message& msg, std::string_view exchange = "",
                     std::string_view routing_key = "", const publish_options& o = {});
  void basic_ack(std::uint64_t delivery_tag, bool multiple = false);
  void basic_nack(std::uint64_t delivery_tag, bool multiple = false, bool requeue = true);
  void basic_reject(std::uint64_t delivery_tag, bool requeue);
  void basic_recover(bool requeue = false);
  void basic_recover_async(bool requeue = false);

  void confirm_select(bool nowait = false);
  // Whether confirm.select is in force for the channel's current life (with confirm_publish:
  // false until the first publish, and again after a revival or a reopen).
  bool in_confirm_mode() const noexcept { return confirm_mode_; }
  // The sequence number the next publish gets in confirm mode (1, 2, ...).
  std::uint64_t next_publish_seq_no() const noexcept { return next_seq_; }
  // Waits until every publish so far is acked; message_nacked if any was nacked.
  void wait_for_confirms(std::optional<seconds_f> timeout = std::nullopt);

  void tx_select();
  void tx_commit();
  void tx_rollback();

  channel_events& events() noexcept { return events_; }
  // Tags of consumers started with no_ack (py-amqp's no_ack_consumers).
  const std::vector<std::string>& no_ack_consumers() const noexcept { return no_ack_consumers_; }
  // Consumer tags currently registered on this channel.
  std::vector<std::string> consumer_tags() const;
  bool active() const noexcept { return flow_active_; }
  // A stream consumer's progress (consume_options::stream_start): the offset of the last
  // delivery its application settled (basic_ack/nack/reject, or the message's ack()) such that
  // every earlier one of it was settled too; what a recovery resumes after
  // (stream_offset::at(*last + 1)). nullopt before the first, or when `consumer_tag` is no
  // stream consumer of this channel (a broker cancel or basic_cancel removes it).
  std::optional<std::uint64_t> stream_last_handled(std::string_view consumer_tag) const;

  channel(warren::connection& conn, std::uint16_t id);

 private:
  friend class connection;
  struct consumer {
    consumer_callback callback;
    cancel_callback on_cancel;
    bool no_ack = false;
    std::optional<protocol::stream_progress> stream;  // a stream consumer's
  };

  void ensure_open();
  template <class M>
  void send(const M& m);
  // Sends and waits for one of the reply ids on this channel.
  protocol::command call_and_wait(std::initializer_list<std::uint32_t> replies,
                                  std::optional<seconds_f> timeout = std::nullopt);
  protocol::command wait_for(std::initializer_list<std::uint32_t> replies,
                             std::optional<seconds_f> timeout);
  protocol::command wait_for(std::initializer_list<std::uint32_t> replies,
                             protocol::time_point deadline);
  // From the machine, inside feed(): takes what needs no user code (replies, open-ok, flow,
  // confirm bookkeeping) and returns true; false means dispatch(cmd) must run later.
  bool on_command_received(protocol::command& cmd);
  // Runs user callbacks for a delivery, return, confirm event or consumer cancel.
  void dispatch(protocol::command& cmd);
  void remember_cancelled_no_ack(std::string_view tag);
  // A reply whose call gave up (see abandoned_); a basic.consume-ok's consumer is cancelled.
  void discard_reply(protocol::command& reply);
  void on_unknown_consumer(protocol::command& cmd, std::string_view consumer_tag,
                           std::uint64_t delivery_tag);
  void on_closed_by_peer(const protocol::close_reason& why);
  void on_connection_lost();
  message make_message(protocol::command& cmd);
  void settle_confirms(bool ack, std::uint64_t tag, bool multiple);

  warren::connection& conn_;
  std::uint16_t id_;
  bool is_open_ = false;
  bool opening_ = false;
  // Bumped whenever the channel closes: events queued for an earlier life are dropped.
  std::uint32_t generation_ = 0;
  bool flow_active_ = true;
  bool confirm_mode_ = false;
  std::uint64_t next_seq_ = 1;
  std::map<std::uint64_t, bool> outstanding_;  // publish tags awaiting ack or nack
  std::vector<std::uint64_t> nacked_;          // nacked tags not yet reported
  std::deque<protocol::command> replies_;
  // Reply ids of calls that raised before their reply came (an error from another event read
  // meanwhile, or a timeout), oldest first: that reply is dropped when it comes.
  std::deque<std::vector<std::uint32_t>> abandoned_;
  std::deque<protocol::command> early_deliveries_;
  int awaiting_consume_ok_ = 0;                // basic_consume calls waiting for a server-named tag
  std::vector<std::string> cancelled_no_ack_;  // deliveries for these need no reject
  std::map<std::string, consumer, std::less<>> consumers_;
  std::vector<std::string> no_ack_consumers_;
  // The prefetch_count of the last basic.qos with global false the broker acknowledged (a stream
  // consumer needs one: check_consume).
  std::optional<std::uint16_t> consumer_prefetch_;
  // Every stream consumer's progress learns of a decision on `tag`.
  void stream_settled(std::uint64_t tag, bool multiple);
  channel_events events_;
  std::exception_ptr pending_error_;  // raised from the next call on this channel
  // Received messages hold a weak reference: it expires with this object (and so with the
  // connection), which tells a message that outlives them not to use its channel pointer.
  friend class message;
  std::shared_ptr<const void> alive_ = std::make_shared<char>();
};

class connection : private protocol::connection_handler {
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

  // connection_handler
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
  rx_ref rx_;
  protocol::connection_machine machine_;
  io::transport transport_;
  std::size_t rx_begin_ = 0;
  std::size_t rx_end_ = 0;
  std::map<std::uint16_t, std::unique_ptr<warren::channel>> channels_;
  // Events that run user code, queued by the machine's handlers during feed() and run by
  // dispatch_incoming() once feed() has returned and the read position has moved past the
  // frames fed: the machine's feed() is not re-entrant, and a callback may call back into the
  // connection (basic_cancel, close, publish), which reads the socket again. While callbacks
  // run, nested reads only queue: no callback ever runs inside another one. What a nested
  // wait needs (replies, confirms, channel closes) is taken at once, outside this queue.
  struct incoming_event {
    enum class kind : std::uint8_t { command, blocked, unblocked } what;
    protocol::command cmd;         // command
    std::uint32_t generation = 0;  // command: the channel's generation_ when it arrived
    std::string reason;            // blocked
  };
  std::deque<incoming_event> incoming_;
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
