// The AMQP 0-9-1 connection and channel state machines, sans-I/O.
//
// Bytes in (`feed`), bytes out (`output`/`consume_output`), events out (connection_handler),
// time in (every call that depends on time takes `now`). No sockets, threads or clocks: the
// blocking py-amqp-style API (engine/client) and the multithreaded engine drive this same
// class, each with its own I/O.
//
// What it owns: the handshake (protocol header, start/start-ok with SASL and capability
// negotiation, secure, tune/tune-ok, open/open-ok), heartbeats (sending when idle and
// detecting a dead peer), the close handshakes of the connection and of each channel in both
// directions, channel.flow replies, content assembly (method + header + body frames into one
// command), and every framing rule; a violation by the peer closes the connection with the
// reply code the spec assigns (501, 502, 504, 505, ...).
//
// What it does not own: waiting for replies, consumers, confirms. Those live above, in the
// API layers, which see every non-connection method as a `command`.
//
// Threading: one thread at a time. Handler callbacks run inside feed()/on_timer()/fail paths
// on that thread; a handler may call the send/close members re-entrantly, but not feed().
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "codec/content.h"
#include "codec/field_table.h"
#include "codec/frame.h"
#include "codec/methods.h"
#include "codec/publish.h"
#include "engine/buffer.h"
#include "engine/metrics/metrics.h"

namespace warren::protocol {

using clock = std::chrono::steady_clock;
using time_point = clock::time_point;

// Why a connection or channel ended. reply_code 0 means no AMQP reply (e.g. the socket closed).
struct close_reason {
  std::uint16_t reply_code = 0;
  std::string reply_text;
  std::uint16_t class_id = 0;
  std::uint16_t method_id = 0;
  bool by_peer = false;  // the broker initiated the close (as opposed to this client)
};

// One SASL mechanism the client is willing to use, with its initial response.
struct sasl_credentials {
  std::string mechanism;
  std::string response;
};
sasl_credentials sasl_plain(std::string_view user, std::string_view password);
sasl_credentials sasl_amqplain(std::string_view user, std::string_view password);
sasl_credentials sasl_external();
sasl_credentials sasl_raw(std::string_view mechanism, std::string_view response);

// The capabilities this client implements, and therefore may claim when the broker offers
// them: publisher_confirms, exchange_exchange_bindings, basic.nack, consumer_cancel_notify,
// connection.blocked, authentication_failure_close, per_consumer_qos.
const std::vector<std::string>& handled_capabilities();

struct connection_config {
  std::string virtual_host = "/";
  std::string locale = "en_US";
  // Mechanisms in the client's order of preference; the first one the broker offers is used.
  std::vector<sasl_credentials> authentication;
  // Merged over the library's own properties (product, version, platform, information);
  // "capabilities" is filled in by negotiation.
  codec::field_table client_properties;
  // Capabilities to claim when the broker offers them; must be a subset of
  // handled_capabilities(). Empty means all handled ones.
  std::vector<std::string> capabilities;
  std::uint16_t channel_max = 65535;  // 0 means 65535
  std::uint32_t frame_max = 131072;   // 0 means 131072
  std::uint16_t heartbeat = 0;        // seconds; 0 disables (py-amqp's default and rule)
  // Largest content body accepted. A content header announcing more fails the connection with
  // 506 before anything is allocated for it. The default is RabbitMQ's own ceiling for
  // max_message_size (512 MiB).
  std::uint64_t max_body_size = std::uint64_t{512} << 20;
  // Called with a SASL challenge (connection.secure); returns the response. Unset: a challenge
  // fails the connection with 540, since none of the built-in mechanisms has a second step.
  std::function<std::string(std::string_view challenge)> on_challenge;
};

// A method received on a channel other than 0 (plus connection.update-secret-ok), with its
// content if it carries one. Views stay valid for as long as the command (or a copy of its
// `keep` handles) lives; move `keep` into a message to make the body outlive the callback.
struct command {
  std::uint16_t channel = 0;
  std::uint16_t class_id = 0;
  std::uint16_t method_id = 0;
  std::string_view args;  // the method's arguments, after class-id and method-id
  bool has_content = false;
  codec::content_header header;  // when has_content
  std::string_view body;         // when has_content
  // The buffers holding the method, the header and the body, each buffer once: a part in the
  // same buffer as an earlier part leaves its slot empty (one reference, not three, per
  // delivery read in one piece).
  rx_ref keep[3];
  // A basic.deliver the machine has already decoded (its one-pass path), when has_deliver;
  // otherwise decode() reads `args`. Its views are into keep[0]'s buffer, like args.
  bool has_deliver = false;
  codec::basic_deliver deliver;

  std::uint32_t id() const noexcept { return (std::uint32_t{class_id} << 16) | method_id; }
  template <class M>
  bool is() const noexcept {
    return id() == M::id;
  }
  template <class M>
  codec::errc decode(M& out) const noexcept {
    return codec::decode(args, out);
  }
};

class connection_handler {
 public:
  virtual ~connection_handler() = default;
  // Handshake complete: connection.open-ok received.
  virtual void on_open() {}
  // connection.tune answered; negotiated values are readable on the machine.
  virtual void on_tuned() {}
  virtual void on_command(command& cmd) = 0;
  // The broker closed `channel` (close-ok already queued). The id may be opened again.
  virtual void on_channel_closed(std::uint16_t /*channel*/, const close_reason& /*why*/) {}
  virtual void on_blocked(std::string_view /*reason*/) {}
  virtual void on_unblocked() {}
  // Called once, when the connection becomes unusable: the broker closed it, this client
  // detected a protocol violation or a dead peer (its close is queued), a close() we started
  // completed, or the transport died.
  virtual void on_closed(const close_reason& /*why*/) {}
};

enum class connection_state : std::uint8_t {
  initial,
  awaiting_start,
  awaiting_tune,  // start-ok sent (secure may come)
  awaiting_open_ok,
  open,
  closing,  // connection.close sent, waiting for close-ok
  closed,
};

enum class channel_state : std::uint8_t { closed, opening, open, closing };

class connection_machine {
 public:
  connection_machine(connection_config config, connection_handler& handler);
  connection_machine(const connection_machine&) = delete;
  connection_machine& operator=(const connection_machine&) = delete;

  // Queues the protocol header. Call once, when the transport is connected.
  void start(time_point now);

  // Consumes whole frames from `data` and returns how many octets it used; the caller keeps
  // data[result:] (a partial frame) and presents it again, followed by more input. `owner`
  // must hold `data`; the machine takes references to it for views it hands out (the caller
  // may reuse owner's memory in place only while owner.unique()).
  std::size_t feed(std::string_view data, const rx_ref& owner, time_point now);

  // Bytes to write, in order. consume_output(n, now) after the transport wrote n of them.
  std::string_view output() const noexcept { return std::string_view(out_).substr(out_head_); }
  bool has_output() const noexcept { return out_head_ < out_.size(); }
  void consume_output(std::size_t n, time_point now) noexcept;

  // Heartbeats: the next time on_timer should run (time_point::max() when none is due).
  time_point next_timer() const noexcept;
  // Queues a heartbeat when nothing was sent for half the interval; fails the connection
  // (320, on_closed) when nothing was received for two intervals.
  void on_timer(time_point now);
  // The sending half of on_timer alone, for a helper thread that must not judge the peer
  // (it does not read the socket, so it cannot know what arrived).
  void send_heartbeat_if_idle(time_point now);
  void send_heartbeat();

  // The transport failed or reached EOF. Emits on_closed unless already closed.
  void transport_closed(std::string_view why);

  // Channel 1..channel_max(). Sends channel.open; the open-ok arrives as a command.
  void open_channel(std::uint16_t channel);
  // Sends channel.close; frames on the channel are then discarded until close-ok, which
  // arrives as a command.
  void close_channel(std::uint16_t channel, std::uint16_t reply_code = 200,
                     std::string_view reply_text = "", std::uint16_t class_id = 0,
                     std::uint16_t method_id = 0);
  channel_state state_of(std::uint16_t channel) const noexcept;

  // Queues a method frame. Returns an error (nothing queued) if the method cannot be encoded.
  template <class M>
  codec::errc send(std::uint16_t channel, const M& m) {
    const std::size_t at = out_.size();
    codec::writer w(out_);
    codec::errc e = codec::encode_method_frame(channel, m, w);
    w.finish();
    // A failed encode can leave the reserved frame header behind; it must not reach the wire.
    if (e != codec::errc::ok) {
      out_.resize(at);
    } else if (metrics_ != nullptr) {
      metrics_->on_frames_sent();
    }
    return e;
  }
  // Queues basic.publish + content header + body frames, split at frame_max.
  codec::errc send_publish(std::uint16_t channel, const codec::basic_publish& m,
                           const codec::basic_properties& props, std::string_view body);

  // Starts the connection close handshake (connection.close with these values).
  void close(std::uint16_t reply_code = 200, std::string_view reply_text = "",
             std::uint16_t class_id = 0, std::uint16_t method_id = 0);
  // Fails the connection from this side: queues connection.close with the code and emits
  // on_closed at once.
  void fail(std::uint16_t reply_code, std::string reply_text, std::uint16_t class_id = 0,
            std::uint16_t method_id = 0);
  // connection.update-secret; the -ok arrives as a command on channel 0.
  void update_secret(std::string_view new_secret, std::string_view reason);

  // Where the machine counts (README, "Metrics"), or null (the default): frames received and
  // queued for sending, heartbeat intervals that passed with nothing received (counted by
  // on_timer), connection.blocked and unblocked (timed with the `now` of the feed that brought
  // them). `m` must outlive the machine or be replaced first. The machine's thread.
  void set_metrics(metrics::connection_metrics* m) noexcept { metrics_ = m; }

  connection_state state() const noexcept { return state_; }
  bool is_open() const noexcept { return state_ == connection_state::open; }
  const close_reason& closed_reason() const noexcept { return closed_reason_; }

  // Negotiated in tune (valid from on_tuned on).
  std::uint16_t channel_max() const noexcept { return channel_max_; }
  std::uint32_t frame_max() const noexcept { return frame_max_; }
  std::uint16_t heartbeat() const noexcept { return heartbeat_; }
  std::uint16_t server_heartbeat() const noexcept { return server_heartbeat_; }

  // From connection.start.
  const codec::field_table& server_properties() const noexcept { return server_properties_; }
  const codec::field_table& server_capabilities() const noexcept;
  const std::vector<std::string>& mechanisms() const noexcept { return mechanisms_; }
  const std::vector<std::string>& locales() const noexcept { return locales_; }
  std::uint8_t version_major() const noexcept { return version_major_; }
  std::uint8_t version_minor() const noexcept { return version_minor_; }
  const std::string& chosen_mechanism() const noexcept { return chosen_mechanism_; }
  const codec::field_table& client_properties() const noexcept { return client_properties_; }

  time_point last_received() const noexcept { return last_recv_; }
  time_point last_sent() const noexcept { return last_send_; }
  bool blocked() const noexcept { return blocked_; }

 private:
  struct channel_slot {
    channel_state state = channel_state::closed;
    // Content assembly.
    enum class stage : std::uint8_t { idle, header, body } stage = stage::idle;
    command pending;
    std::uint64_t body_received = 0;
    rx_ref body_buffer;  // when the body spans several frames
  };

  void handle_frame(const codec::frame_view& f, const rx_ref& owner);
  void handle_connection_method(std::string_view payload);
  void handle_channel_frame(const codec::frame_view& f, const rx_ref& owner);
  void handle_channel_method(channel_slot& slot, std::uint16_t channel, std::string_view payload,
                             const rx_ref& owner);
  void deliver(channel_slot& slot);
  // basic.deliver, its header and a body in at most one frame, contiguous at the start of `in`
  // on an open channel awaiting a method: decoded in one pass and handed out. False (nothing
  // consumed, nothing changed) for anything else, which the frame-by-frame path then handles,
  // errors included.
  bool fast_delivery(std::string_view in, const rx_ref& owner, std::size_t& consumed);
  void on_start(const codec::connection_start& m);
  void on_tune(const codec::connection_tune& m);
  void mark_closed(close_reason why);
  // Half the heartbeat interval, exactly (a 1 s heartbeat is due every 500 ms).
  std::chrono::milliseconds half_heartbeat() const noexcept {
    return std::chrono::milliseconds(std::uint32_t{heartbeat_} * 1000 / 2);
  }
  channel_slot* slot_of(std::uint16_t channel);

  connection_config config_;
  connection_handler& handler_;
  codec::delivery_view fast_view_;  // fast_delivery's decode target, reused
  command fast_;                    // fast_delivery's command, reused
  connection_state state_ = connection_state::initial;
  bool parse_stopped_ = false;  // framing lost: discard all further input
  bool closed_emitted_ = false;
  close_reason closed_reason_;

  std::string out_;
  std::size_t out_head_ = 0;

  std::uint16_t channel_max_ = 0;
  std::uint32_t frame_max_ = 0;  // 0 until tuned: the frame decoder's pre-tune limit applies
  std::uint16_t heartbeat_ = 0;
  std::uint16_t server_heartbeat_ = 0;
  time_point last_recv_{};
  time_point last_send_{};
  bool blocked_ = false;
  int secure_rounds_ = 0;

  codec::field_table server_properties_;
  codec::field_table client_properties_;
  std::vector<std::string> mechanisms_;
  std::vector<std::string> locales_;
  std::uint8_t version_major_ = 0;
  std::uint8_t version_minor_ = 0;
  std::string chosen_mechanism_;

  metrics::connection_metrics* metrics_ = nullptr;
  // Heartbeat intervals already counted missed since last_recv_ was missed_since_.
  time_point missed_since_{};
  std::int64_t missed_counted_ = 0;

  std::unordered_map<std::uint16_t, channel_slot> channels_;
  std::uint16_t cached_id_ = 0;
  channel_slot* cached_slot_ = nullptr;
};

// "NOT_FOUND" for 404 etc.; "" for codes AMQP does not define.
std::string_view reply_name(std::uint16_t reply_code) noexcept;

}  // namespace warren::protocol
