// One connection of the async engine: the connection_machine and its socket (an io::stream) on an
// I/O thread, the channels' table and their owners, the publish staging, the topology record.
//
// Where things are: connection_impl.cc (its life: start, the machine's events, open_channel,
// update_secret, close, the channel_link and channel_wire a channel uses), connection_io.cc (the
// socket: reads with receive batching and the read pause, writes of many segments in one call,
// the TLS handshake, timers, teardown).
//
// The life is stored once, in phase_: handshake -> open -> closing -> ended -> torn_down (closing
// only after our own close), with open -> recovering -> open for each recovered loss
// (connection_recovery.cc). Everything else about it is derived.
//
// Threading: the I/O thread owns everything but what is marked "any thread"; application threads
// reach the I/O thread through io_thread::post and wait for the result.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "engine/async/channel_link.h"
#include "engine/async/engine.h"
#include "engine/async/io_thread.h"
#include "engine/async/publish_staging.h"
#include "engine/io/stream.h"
#include "engine/options.h"
#include "engine/protocol/channel_table.h"
#include "engine/protocol/connection_machine.h"
#include "engine/protocol/recovery.h"
#include "engine/protocol/reply_expectations.h"
#include "engine/receive_buffer.h"

namespace warren::async::detail {

class channel_impl;
class engine_impl;
struct consumer_entry;

class connection_impl final : public protocol::connection_handler,
                              public protocol::channel_wire,
                              public channel_link,
                              public std::enable_shared_from_this<connection_impl> {
 public:
  enum class phase : std::uint8_t {
    handshake,  // TLS and AMQP handshakes, until connection.open-ok
    open,
    recovering,  // lost; the recovery thread reconnects and replays (transports come and go)
    closing,     // our connection.close sent, waiting for close-ok
    ended,       // the machine reported the end; the socket goes at the end of the service round
    torn_down,   // socket closed, state released
  };

  // `endpoints` in this connection's order; `endpoint` the index connected to.
  connection_impl(engine_impl& e, io_thread& t, const connection_options& o, io::stream s,
                  protocol::endpoint_list endpoints, std::size_t endpoint);
  ~connection_impl() override;
  connection_impl(const connection_impl&) = delete;
  connection_impl& operator=(const connection_impl&) = delete;

  // Any thread -----------------------------------------------------------------------------------
  bool is_open() const noexcept { return phase_.load(std::memory_order_acquire) == phase::open; }
  bool blocked() const noexcept { return staging_.blocked(); }
  io_thread& io() noexcept { return io_; }
  // Fulfilled at connection.open-ok, or holding what ended the connection before it.
  std::future<void> opened() { return opened_.get_future(); }
  std::shared_ptr<channel_impl> open_channel();
  void update_secret(std::string_view new_secret, std::string_view reason);
  void close();
  protocol::close_reason close_reason() const;
  protocol::topology_record topology() const { return topology_.snapshot(); }
  std::size_t outgoing_bytes() const { return staging_.outgoing(); }
  std::uint32_t frame_max() const noexcept { return frame_max_.load(std::memory_order_acquire); }
  std::size_t pending_deliveries() const noexcept;
  void set_on_blocked(std::function<void(std::string_view)> f);
  void set_on_unblocked(std::function<void()> f);
  void set_on_closed(std::function<void(const protocol::close_reason&)> f);
  // Recovery (connection_recovery.cc).
  connection_state state() const noexcept;
  void set_on_recovery_started(std::function<void(const protocol::close_reason&)> f);
  void set_on_recovered(std::function<void(const recovery_report&)> f);
  void set_on_recovery_failed(std::function<void(const protocol::close_reason&)> f);
  std::string endpoint() const;
  // channel_link
  void delivery_handled(std::size_t n) noexcept override;
  void drain_retired() override;
  const warren::logger& log() const noexcept override { return log_; }
  // This connection's metrics (zero when the engine records none).
  metrics::connection_snapshot metrics_snapshot() const;

  // I/O thread -----------------------------------------------------------------------------------
  void start(protocol::time_point now);
  void on_event(bool readable, bool writable, protocol::time_point now);
  // Timers, the channels' timers and confirm callbacks, writes, teardown: once per loop round.
  void service(protocol::time_point now);
  protocol::time_point next_deadline() const;
  bool publish_pending() const noexcept { return staging_.pending(); }
  bool finished() const noexcept {
    return phase_.load(std::memory_order_relaxed) == phase::torn_down;
  }
  void force_close(std::string_view why);
  // An adopted socket has no endpoint to reconnect to: its loss is never recovered.
  void disable_recovery() noexcept { no_recovery_ = true; }
  // Calls waiting for a reply: the handshake, our close, update-secret, every channel's calls.
  std::size_t replies_awaited() const noexcept;
  // channel_link
  void send_frame(out_buffer frame) override;
  protocol::channel_wire& wire() override { return *this; }
  void defer(std::function<void()> f) override { deferred_.push_back(std::move(f)); }
  void retire(std::unique_ptr<consumer_entry> e) override;
  void hand_off(consumer_entry& e) override { batch_owners_.push_back(&e); }
  void waiting(int delta) override;
  protocol::time_point feed_time() const noexcept override { return feed_now_; }

 private:
  // protocol::connection_handler: the machine's events, inside a feed or a timer.
  void on_open() override;  // the phase becomes open; connect() returns
  // A channel's command goes to its core through the channel table (channel 0: update-secret-ok).
  void on_command(protocol::command& cmd) override;
  void on_channel_closed(std::uint16_t channel, const protocol::close_reason& why) override;
  // connection.blocked/unblocked: the publish gate, then the application's callbacks.
  void on_blocked(std::string_view reason) override;
  void on_unblocked() override;
  // The end: every channel ends (the table's fan-out), every waiting call fails, once.
  void on_closed(const protocol::close_reason& why) override;
  // protocol::channel_wire
  void send_ack(std::uint16_t channel, const protocol::ack_action& a) override;
  void send_cancel(std::uint16_t channel, std::string_view consumer_tag) override;
  void open_channel(std::uint16_t channel) override;
  void close_channel(std::uint16_t channel, std::uint16_t reply_code, std::string_view reply_text,
                     std::uint16_t class_id, std::uint16_t method_id) override;

  bool machine_open() const noexcept {
    return machine_ && machine_->is_open() && phase_.load(std::memory_order_relaxed) < phase::ended;
  }
  bool ended() const noexcept { return phase_.load(std::memory_order_relaxed) >= phase::ended; }
  // The socket must not be read or written any more (the connection ended, or its transport was
  // lost and is dropped at the end of the round).
  bool dead() const noexcept { return ended() || drop_transport_; }
  void set_phase(phase p);
  // A message of the `connection` component, prefixed with the connection's name.
  void log(log_level level, std::string_view message) const {
    log(level, log_component::connection, message);
  }
  void log(log_level level, std::string_view component, std::string_view message) const;
  // Why the connection ended: info for our own close, warning for anything else (lost).
  void log_end(const protocol::close_reason& why, phase at) const;
  // A call now waits for a reply: receive batching stops holding bytes back (connection_io.cc).
  void reply_awaited();
  void begin_close();
  // The handshake's deadline passed, or the close handshake's (connection_io.cc).
  void on_deadline();
  // The end for good: every channel and waiting call ends, on_closed runs (once).
  void finish(const protocol::close_reason& why, bool was_open, bool connecting);

  // Recovery (connection_recovery.cc). I/O thread:
  bool recovery_wanted(const protocol::close_reason& why) const;
  void begin_recovery(const protocol::close_reason& why);  // the loss, from on_closed
  void transport_lost(const protocol::close_reason& why);  // a loss while recovering
  void drop_transport();                                   // at the end of the round
  void install(io::stream s, std::size_t endpoint, std::shared_ptr<std::promise<void>> opened);
  void give_up(const protocol::close_reason& why);  // recovery ends without a connection
  // The recovery thread.
  void recovery_main();
  bool recover_once(const protocol::close_reason& why, protocol::time_point lost_at,
                    std::size_t lost_endpoint);
  bool try_endpoint(std::size_t endpoint, std::string& error);
  bool replay(protocol::recovery_report& report);
  void stop_recovery();
  template <class F>
  void run_hook(const F& f);

  // connection_io.cc
  std::size_t read_some(protocol::time_point now);
  std::size_t read_socket(protocol::time_point now);
  void feed(protocol::time_point now);
  void after_feed();
  void write_some();
  void step_handshake(protocol::time_point now);
  void transport_failed(const io::io_error& e);
  void seal(protocol::time_point now);  // the machine's output, then the staging, as segments
  void push_segment(out_buffer b);
  void update_events();
  void set_rx_lowat(int octets);
  void resume_reading();
  void teardown();

  engine_impl& eng_;
  io_thread& io_;
  const connection_options opts_;
  const std::size_t max_pending_;
  // The engine's recorders for this connection (null: none). Declared before the machine and the
  // stream, which record into it, so that it outlives them.
  const std::shared_ptr<metrics::connection_metrics> metrics_;
  const warren::logger log_;
  std::atomic<phase> phase_{phase::handshake};
  std::promise<void> opened_;
  std::atomic<std::uint32_t> frame_max_{0};  // set before opened_ is fulfilled

  publish_staging staging_;
  recorded_topology topology_;
  std::unique_ptr<protocol::connection_machine> machine_;
  io::stream stream_;
  protocol::channel_table table_;
  std::map<std::uint16_t, std::shared_ptr<channel_impl>> channels_;  // the table's owners

  // Reading.
  receive_buffer rx_;
  protocol::time_point feed_now_{};  // the `now` of the feed in progress
  std::atomic<std::int64_t> pending_deliveries_{0};
  std::atomic<bool> paused_{false};
  std::atomic<bool> resume_posted_{false};
  protocol::time_point paused_check_{};  // next heartbeat check while reading is paused
  // Receive batching (engine_options::rx_batching): the socket's SO_RCVLOWAT (1 while idle),
  // when it was last read with something to show for it, and when a busy socket is read next.
  int rx_lowat_ = 1;
  protocol::time_point last_read_ = protocol::time_point::min();
  protocol::time_point batch_read_at_ = protocol::time_point::max();
  std::size_t channel_waits_ = 0;  // calls waiting on the channels (their on_waiting sums)

  // Writing: segments of whole frames, written in order with one call.
  std::deque<out_buffer> segs_;
  std::size_t seg_head_ = 0;  // written octets of segs_.front()
  std::vector<out_buffer> spare_;
  std::uint32_t events_ = 0;  // the event loop interests set

  // Deadlines: the handshake's (connect_timeout), then the close handshake's.
  protocol::time_point close_deadline_ = protocol::time_point::max();
  std::string close_note_;  // why a deadline ended the connection, added to the close reason

  // After a read: deliveries to post, consumers to retire, replies to release, in that order.
  std::vector<consumer_entry*> batch_owners_;
  std::vector<std::unique_ptr<consumer_entry>> to_retire_;
  std::vector<std::function<void()>> deferred_;
  std::mutex retired_mu_;
  std::vector<std::unique_ptr<consumer_entry>> retired_;  // drained by application threads

  // connection.update-secret calls, oldest first (a late -ok never answers a later call).
  protocol::reply_expectations<char> secrets_;

  std::mutex cb_mu_;
  std::function<void(std::string_view)> on_blocked_cb_;
  std::function<void()> on_unblocked_cb_;
  std::function<void(const protocol::close_reason&)> on_closed_cb_;

  mutable std::mutex state_mu_;
  protocol::close_reason reason_;
  std::condition_variable ended_cv_;

  // Recovery.
  const protocol::endpoint_list endpoints_;
  std::atomic<std::size_t> endpoint_;            // the endpoint connected to, or last connected to
  bool life_open_ = false;                       // I/O thread: this transport's handshake completed
  bool drop_transport_ = false;                  // I/O thread: drop it at the end of the round
  bool no_recovery_ = false;                     // I/O thread: force_close (the engine stops)
  std::shared_ptr<std::promise<void>> attempt_;  // I/O thread: a recovery attempt's handshake
  std::mutex rec_mu_;
  std::condition_variable rec_cv_;
  bool rec_requested_ = false;  // rec_mu_: a loss waits for the recovery thread
  bool rec_stop_ = false;       // rec_mu_: the application closed the connection
  protocol::close_reason rec_reason_;
  protocol::time_point rec_lost_at_{};
  std::size_t rec_lost_endpoint_ = 0;
  std::thread rec_thread_;  // started at the first loss, joined by close()
  std::atomic<std::thread::id> rec_thread_id_{};
  std::uint64_t in_doubt_seen_ = 0;     // recovery thread: counts at the previous report
  std::uint64_t republished_seen_ = 0;  // recovery thread
  std::function<void(const protocol::close_reason&)> on_recovery_started_cb_;  // cb_mu_
  std::function<void(const recovery_report&)> on_recovered_cb_;                // cb_mu_
  std::function<void(const protocol::close_reason&)> on_recovery_failed_cb_;   // cb_mu_
};

}  // namespace warren::async::detail
