// A scripted AMQP peer for the async engine's unit tests and its self-check bench: the other end
// of a socketpair, on its own thread. It completes the handshake, answers channel.open,
// confirm.select, channel.close and connection.close, counts basic.publish frames and the
// methods it leaves unanswered (every other one: a broker that never replies), and optionally
// confirms publishes, stops reading (to fill the client's outgoing buffer), stops answering
// channel.open, or dies in the middle of a frame. It is a unit-test fake, never a stand-in for
// RabbitMQ in integration tests.
//
// Thread rules: construct and destroy on the test thread; the counters are atomics readable from
// any thread; the script flags are set before start() or through their atomics.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "codec/frame.h"
#include "codec/methods.h"
#include "engine/io/socket.h"

namespace warren::test {

class scripted_peer {
 public:
  // Confirm every publish on confirm-mode channels (one multiple ack per read chunk).
  std::atomic<bool> confirm{true};
  // Stop reading after the handshake while false (the client's writes then back up).
  std::atomic<bool> reading{true};
  // Read and count bytes without parsing (a measuring sink for benches; nothing is answered, so
  // the client's close then waits for its timeout unless the peer is stopped first).
  std::atomic<bool> discard{false};
  // After this many publishes, write half a frame and close the socket (0: never).
  std::atomic<std::uint64_t> die_after_publishes{0};
  // Leave channel.open unanswered while false.
  std::atomic<bool> answer_channel_open{true};

  // Set by the test, sent (once) by the peer thread: channel.flow on channel 1 (0: active=false,
  // 1: active=true), connection.blocked (1) or connection.unblocked (0). -1: nothing to send.
  std::atomic<int> send_flow{-1};
  std::atomic<int> send_blocked{-1};

  std::atomic<std::uint64_t> publishes{0};
  std::atomic<std::uint64_t> unanswered{0};  // methods received and never answered
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<bool> handshake_done{false};
  std::atomic<bool> finished{false};

  // Returns the client's end of the socketpair (non-blocking, for engine::adopt).
  io::unique_fd start() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return {};
    fd_ = sv[0];
    thread_ = std::thread([this] { run(); });
    return io::unique_fd(sv[1]);
  }
  ~scripted_peer() { stop(); }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  template <class M>
  void send(std::uint16_t channel, const M& m) {
    std::string out;
    codec::writer w(out);
    codec::encode_method_frame(channel, m, w);
    w.finish();
    write_all(out);
  }
  bool write_all(std::string_view s) {
    while (!s.empty()) {
      const ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        return false;
      }
      s.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  void run() {
    std::string buf;
    char chunk[65536];
    bool header_seen = false;
    while (!stop_.load()) {
      if (handshake_done.load() && !reading.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      if (const int f = send_flow.exchange(-1); f >= 0) {
        codec::channel_flow m;
        m.active = f == 1;
        send(1, m);
      }
      if (const int b = send_blocked.exchange(-1); b == 1) {
        codec::connection_blocked m;
        m.reason = "low on memory";
        send(0, m);
      } else if (b == 0) {
        send(0, codec::connection_unblocked{});
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 5) <= 0) continue;
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) break;
      bytes.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
      if (discard.load(std::memory_order_relaxed)) continue;
      buf.append(chunk, static_cast<std::size_t>(n));
      std::size_t at = 0;
      if (!header_seen) {
        if (buf.size() < 8) continue;
        header_seen = true;
        at = 8;
        codec::connection_start s;
        s.mechanisms = "PLAIN AMQPLAIN";
        send(0, s);
      }
      std::map<std::uint16_t, std::uint64_t> confirmed_before = published_;
      while (true) {
        codec::frame_view f;
        std::size_t used = 0;
        if (codec::decode_frame(std::string_view(buf).substr(at), 0, f, used) != codec::errc::ok) {
          break;
        }
        at += used;
        if (f.type != codec::frame_method || f.payload.size() < 4) continue;
        const auto* p = reinterpret_cast<const unsigned char*>(f.payload.data());
        const std::uint32_t id = (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
                                 (std::uint32_t{p[2]} << 8) | p[3];
        if (!on_method(f.channel, id)) {
          finished.store(true);
          return;
        }
      }
      buf.erase(0, at);
      if (confirm.load()) {
        for (auto& [ch, count] : published_) {
          if (confirm_mode_[ch] && count != confirmed_before[ch]) {
            codec::basic_ack a;
            a.delivery_tag = count;
            a.multiple = true;
            send(ch, a);
          }
        }
      }
    }
    finished.store(true);
  }

  // False: stop the peer (connection closed, or died on purpose).
  bool on_method(std::uint16_t channel, std::uint32_t id) {
    switch (id) {
      case codec::connection_start_ok::id: {
        codec::connection_tune t;
        t.channel_max = 2047;
        t.frame_max = 131072;
        t.heartbeat = 0;
        send(0, t);
        return true;
      }
      case codec::connection_open::id:
        send(0, codec::connection_open_ok{});
        handshake_done.store(true);
        return true;
      case codec::channel_open::id:
        if (!answer_channel_open.load()) {
          ++unanswered;
          return true;
        }
        published_[channel] = 0;
        confirm_mode_[channel] = false;
        send(channel, codec::channel_open_ok{});
        return true;
      case codec::confirm_select::id:
        confirm_mode_[channel] = true;
        published_[channel] = 0;
        send(channel, codec::confirm_select_ok{});
        return true;
      case codec::channel_close::id:
        send(channel, codec::channel_close_ok{});
        return true;
      case codec::connection_close::id:
        send(0, codec::connection_close_ok{});
        return false;
      case codec::basic_publish::id: {
        ++published_[channel];
        const std::uint64_t total = publishes.fetch_add(1) + 1;
        const std::uint64_t die = die_after_publishes.load();
        if (die != 0 && total >= die) {
          // Half a basic.ack frame, then the end of the stream.
          write_all(std::string_view("\x01\x00\x01\x00\x00", 5));
          ::shutdown(fd_, SHUT_RDWR);
          return false;
        }
        return true;
      }
      default:
        ++unanswered;
        return true;
    }
  }

  int fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::map<std::uint16_t, std::uint64_t> published_;
  std::map<std::uint16_t, bool> confirm_mode_;
};

}  // namespace warren::test
