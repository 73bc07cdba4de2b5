// A scripted broker on 127.0.0.1 for unit tests of the blocking API (engine/client): it listens
// on a free port, accepts one connection and runs the test's script on its own thread. Frames
// are built with protocol::test::scripted_peer and the client's frames decoded into
// protocol::test::client_frame, so a script reads top to bottom like the conversation.
//
// It is a unit-test fake for what a real broker cannot be made to do on demand or without
// disturbing others (a SASL challenge, connection.blocked at a chosen moment, a silent peer), never
// a stand-in for RabbitMQ in integration tests.
//
// Thread rules: construct, call host() and destroy on the test thread; the script runs on the
// broker's thread and shares only what it captures (use atomics). A script step that fails
// (end of stream, a frame other than the one expected, nothing within its timeout) throws
// script_failure, which the broker thread reports as a test failure (ADD_FAILURE) before closing
// the socket; the destructor joins the thread, so every step must be bounded (they are, by their
// timeouts).
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include "codec/frame.h"
#include "codec/methods.h"
#include "tests/engine/protocol/scripted_peer.h"

namespace warren::test {

using protocol::test::client_frame;
using protocol::test::scripted_peer;

struct script_failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The broker's end of the one connection, handed to the script.
class broker_session {
 public:
  using milliseconds = std::chrono::milliseconds;
  static constexpr milliseconds default_timeout{10000};

  explicit broker_session(int fd) : fd_(fd) {}

  // Sends everything `peer` built so far (and empties it).
  void send(scripted_peer& peer) {
    if (peer.encode_status() != codec::errc::ok) throw script_failure("script frame not encodable");
    const std::string bytes = peer.take();
    std::size_t at = 0;
    while (at < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw script_failure("send to the client failed: " + std::to_string(errno));
      at += static_cast<std::size_t>(n);
    }
  }

  // The client's next frame (heartbeats included).
  client_frame next_frame(milliseconds timeout = default_timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (!header_seen_) {
        if (in_.size() >= protocol::test::amqp_0_9_1_header.size()) {
          if (!std::string_view(in_).starts_with(protocol::test::amqp_0_9_1_header)) {
            throw script_failure("the client did not start with AMQP 0-9-1's protocol header");
          }
          in_.erase(0, protocol::test::amqp_0_9_1_header.size());
          header_seen_ = true;
          continue;
        }
      } else {
        codec::frame_view f;
        std::size_t used = 0;
        const codec::errc e =
            codec::decode_frame(std::string_view(in_).substr(pos_), 0xFFFFFFFFu, f, used);
        if (e == codec::errc::ok) {
          client_frame out{f.type, f.channel, std::string(f.payload)};
          // An offset, not an erase per frame: a client publishing flat out must not find its
          // peer slowed by a memmove of the whole buffer for every small frame.
          pos_ += used;
          return out;
        }
        if (e != codec::errc::need_more) throw script_failure("the client wrote a malformed frame");
      }
      if (!read_more(deadline)) {
        throw script_failure(eof_ ? "the client closed the connection (or it was reset)"
                                  : "no frame from the client in time");
      }
    }
  }

  // The client's next frame that is not a heartbeat; must be an M.
  template <class M>
  client_frame expect(milliseconds timeout = default_timeout) {
    client_frame f = next_frame(timeout);
    while (f.type == codec::frame_heartbeat) f = next_frame(timeout);
    if (!f.is<M>()) {
      throw script_failure("expected " + std::string(M::name) + ", got method 0x" +
                           to_hex(f.method_id()) + " (frame type " + std::to_string(f.type) + ")");
    }
    return f;
  }

  // Skips frames (content, other methods, heartbeats) until an M arrives, and returns it.
  template <class M>
  client_frame skip_until(milliseconds timeout = default_timeout) {
    for (;;) {
      client_frame f = next_frame(timeout);
      if (f.is<M>()) return f;
    }
  }

  // connection.start offering `mechanisms` and `capabilities`, start-ok (returned), tune with
  // `heartbeat`, tune-ok, open, open-ok.
  client_frame handshake(std::string_view mechanisms = "PLAIN AMQPLAIN",
                         const codec::field_table& capabilities = {}, std::uint16_t heartbeat = 0) {
    scripted_peer p;
    send(p.start(mechanisms, capabilities));
    client_frame start_ok = expect<codec::connection_start_ok>();
    finish_handshake(heartbeat);
    return start_ok;
  }
  // The handshake from connection.tune on (after start-ok, or after a SASL exchange).
  void finish_handshake(std::uint16_t heartbeat = 0) {
    scripted_peer p;
    send(p.tune(2047, 131072, heartbeat));
    expect<codec::connection_tune_ok>();
    expect<codec::connection_open>();
    send(p.open_ok());
  }

  // Waits for channel.open, answers open-ok, and returns the channel id.
  std::uint16_t open_channel() {
    const client_frame f = expect<codec::channel_open>();
    scripted_peer p;
    send(p.channel_open_ok(f.channel));
    return f.channel;
  }

  // The client's side of the end: skips frames until connection.close, answers close-ok and
  // waits for the client to close its socket. Returns the close.
  client_frame serve_close() {
    client_frame close = skip_until<codec::connection_close>();
    scripted_peer p;
    send(p.connection_close_ok());
    wait_for_eof();
    return close;
  }

  // Discards what the client writes until it closes its socket.
  void wait_for_eof(milliseconds timeout = default_timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (read_more(deadline)) {
      in_.clear();
      pos_ = 0;
    }
    if (!eof_) throw script_failure("the client did not close its socket in time");
  }

 private:
  static std::string to_hex(std::uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", v);
    return buf;
  }
  // Appends what arrives before `deadline`; false at the deadline or end of stream.
  bool read_more(std::chrono::steady_clock::time_point deadline) {
    if (eof_) return false;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(left.count()));
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0) return false;
      in_.erase(0, pos_);
      pos_ = 0;
      char buf[65536];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        eof_ = true;
        return false;
      }
      in_.append(buf, static_cast<std::size_t>(n));
      return true;
    }
  }

  int fd_;
  std::string in_;
  std::size_t pos_ = 0;  // in_ before this was handed out
  bool header_seen_ = false;
  bool eof_ = false;
};

class scripted_broker {
 public:
  using script = std::function<void(broker_session&)>;

  explicit scripted_broker(script s) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), len) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
        ::listen(listen_fd_, 1) != 0) {
      ADD_FAILURE() << "scripted broker: cannot listen on 127.0.0.1: errno " << errno;
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, s = std::move(s)] { run(s); });
  }
  ~scripted_broker() {
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }
  scripted_broker(const scripted_broker&) = delete;
  scripted_broker& operator=(const scripted_broker&) = delete;

  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  // Waits for the script to end; true when it returned without a failure. What the script
  // wrote into captured variables may be read once this returned.
  bool join() {
    if (thread_.joinable()) thread_.join();
    return finished_.load();
  }

 private:
  void run(const script& s) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(broker_session::default_timeout.count())) != 1) {
      ADD_FAILURE() << "scripted broker: no client connected";
      return;
    }
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      ADD_FAILURE() << "scripted broker: accept failed: errno " << errno;
      return;
    }
    try {
      broker_session session(fd);
      s(session);
      finished_.store(true);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "scripted broker: " << e.what();
    }
    ::close(fd);
  }

  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

// Waits (polling every millisecond) until `done` is true or `timeout` passes; returns done().
inline bool wait_until(const std::function<bool()>& done,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace warren::test
