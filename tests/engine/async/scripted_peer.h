// A scripted AMQP peer for the async engine's unit tests and its self-check bench: the other end
// of a socketpair (or of a loopback TCP connection), on its own thread. It completes the
// handshake, answers channel.open, confirm.select, channel.close and connection.close, counts
// basic.publish frames and the methods it leaves unanswered (every other one: a broker that
// never replies), and optionally confirms publishes, stops reading (to fill the client's
// outgoing buffer), stops answering channel.open, answers queue.declare after deliveries read
// one by one, sends deliveries the test asks for, or dies in the middle of a frame. It is a
// unit-test fake, never a stand-in for RabbitMQ in integration tests.
//
// Thread rules: construct and destroy on the test thread; the counters are atomics readable from
// any thread; the script flags are set before start() or through their atomics; deliver(),
// rejected() and acked() may be called from any thread.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "codec/content.h"
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
  // Answer confirm.select only once a publish on its channel has been read after it: a publish
  // another thread made while its confirm_select waited (the broker numbers it 1).
  std::atomic<bool> select_ok_after_a_publish{false};
  std::atomic<int> confirm_selects{0};  // confirm.select methods read
  // Answer queue.declare with declare-ok (naming the declared queue) while true.
  std::atomic<bool> answer_queue_declare{false};
  // Before that declare-ok: this many deliveries on the declare's channel, to consumer "c1"
  // (delivery tags counting from 1 per channel), each sent once the client has read every octet
  // sent before it, so that each reaches the client in a read of its own. The peer sees the
  // client's reads only over TCP (start_tcp); over a socketpair they go without waiting.
  std::atomic<int> deliveries_before_declare_ok{0};

  // Set by the test, sent (once) by the peer thread: channel.flow on channel 1 (0: active=false,
  // 1: active=true), connection.blocked (1) or connection.unblocked (0). -1: nothing to send.
  std::atomic<int> send_flow{-1};
  std::atomic<int> send_blocked{-1};

  std::atomic<std::uint64_t> publishes{0};
  std::atomic<std::uint64_t> unanswered{0};  // methods received and never answered
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<std::uint64_t> frames{0};  // frames parsed (not in discard mode)
  std::atomic<bool> handshake_done{false};
  std::atomic<bool> finished{false};

  // Returns the client's end of the socketpair (for engine::adopt, which makes it non-blocking).
  io::unique_fd start() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return {};
    fd_ = sv[0];
    thread_ = std::thread([this] { run(); });
    return io::unique_fd(sv[1]);
  }
  // The same over a loopback TCP connection: what receive batching needs, since only TCP
  // sockets honour SO_RCVLOWAT in poll (a Unix socket is readable from its first octet). The
  // peer keeps a duplicate of the client's descriptor to see how much it left unread.
  io::unique_fd start_tcp() {
    const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int client = -1;
    if (listener >= 0 && ::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::listen(listener, 1) == 0 &&
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (client >= 0 && ::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
        fd_ = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      }
    }
    if (listener >= 0) ::close(listener);
    if (fd_ < 0) {
      if (client >= 0) ::close(client);
      return {};
    }
    // Each frame leaves when written: no Nagle delay behind an unacknowledged one.
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    client_view_ = ::fcntl(client, F_DUPFD_CLOEXEC, 0);
    thread_ = std::thread([this] { run(); });
    return io::unique_fd(client);
  }
  ~scripted_peer() { stop(); }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (client_view_ >= 0) ::close(client_view_);
    client_view_ = -1;
  }

  // Queues a whole delivery (basic.deliver, content header, one body frame) for the peer thread
  // to send on its next round: what a broker has in flight for `consumer_tag`.
  void deliver(std::uint16_t channel, std::string_view consumer_tag, std::uint64_t delivery_tag,
               std::string_view body) {
    std::string frames = delivery_frames(channel, consumer_tag, delivery_tag, body);
    std::lock_guard lock(mu_);
    to_send_ += frames;
  }
  // Queues any method frame (a broker's basic.cancel, say) for the peer thread's next round.
  template <class M>
  void queue_method(std::uint16_t channel, const M& m) {
    std::string frame = method_frame(channel, m);
    std::lock_guard lock(mu_);
    to_send_ += frame;
  }
  // The delivery tags of the basic.reject and basic.ack frames received so far, in order.
  std::vector<std::uint64_t> rejected() const {
    std::lock_guard lock(mu_);
    return rejected_;
  }
  std::vector<std::uint64_t> acked() const {
    std::lock_guard lock(mu_);
    return acked_;
  }

 private:
  template <class M>
  static std::string method_frame(std::uint16_t channel, const M& m) {
    std::string out;
    codec::writer w(out);
    codec::encode_method_frame(channel, m, w);
    w.finish();
    return out;
  }
  template <class M>
  void send(std::uint16_t channel, const M& m) {
    write_all(method_frame(channel, m));
  }
  static std::string delivery_frames(std::uint16_t channel, std::string_view consumer_tag,
                                     std::uint64_t delivery_tag, std::string_view body) {
    codec::basic_deliver d;
    d.consumer_tag = consumer_tag;
    d.delivery_tag = delivery_tag;
    d.routing_key = "q";
    std::string out = method_frame(channel, d);
    codec::content_header h;
    h.body_size = body.size();
    std::string payload;
    codec::writer w(payload);
    codec::encode(h, w);
    w.finish();
    auto append_frame = [&](std::uint8_t type, std::string_view part) {
      char head[codec::frame_header_size];
      codec::write_frame_header(head, type, channel, static_cast<std::uint32_t>(part.size()));
      out.append(head, sizeof head);
      out.append(part);
      out.push_back(static_cast<char>(codec::frame_end));
    };
    append_frame(codec::frame_header, payload);
    if (!body.empty()) append_frame(codec::frame_body, body);
    return out;
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
  // Over TCP: waits (at most 10 s) until the client has read everything sent so far. All of it
  // reached the client's socket once this end holds nothing unacknowledged (SIOCOUTQ, which
  // TIOCOUTQ names), and the client read it once its socket holds nothing unread (FIONREAD).
  void wait_until_client_read() {
    if (client_view_ < 0) return;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!stop_.load() && std::chrono::steady_clock::now() < until) {
      int unacked = -1, unread = -1;
      if (::ioctl(fd_, TIOCOUTQ, &unacked) == 0 && unacked == 0 &&
          ::ioctl(client_view_, FIONREAD, &unread) == 0 && unread == 0) {
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
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
      std::string queued;
      {
        std::lock_guard lock(mu_);
        queued.swap(to_send_);
      }
      if (!queued.empty()) write_all(queued);
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
        frames.fetch_add(1, std::memory_order_relaxed);
        if (f.type != codec::frame_method || f.payload.size() < 4) continue;
        const auto* p = reinterpret_cast<const unsigned char*>(f.payload.data());
        const std::uint32_t id = (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
                                 (std::uint32_t{p[2]} << 8) | p[3];
        if (!on_method(f.channel, id, f.payload.substr(4))) {
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

  // False: stop the peer (connection closed, or died on purpose). `args` follow the method id.
  bool on_method(std::uint16_t channel, std::uint32_t id, std::string_view args) {
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
        delivered_[channel] = 0;
        send(channel, codec::channel_open_ok{});
        return true;
      case codec::queue_declare::id: {
        codec::queue_declare m;
        if (!answer_queue_declare.load() || codec::decode(args, m) != codec::errc::ok) {
          ++unanswered;
          return true;
        }
        for (int i = deliveries_before_declare_ok.load(); i > 0; --i) {
          wait_until_client_read();
          write_all(delivery_frames(channel, "c1", ++delivered_[channel], "early"));
        }
        wait_until_client_read();
        codec::queue_declare_ok ok;
        ok.queue = m.queue;
        send(channel, ok);
        return true;
      }
      case codec::basic_reject::id: {
        codec::basic_reject m;
        if (codec::decode(args, m) == codec::errc::ok) {
          std::lock_guard lock(mu_);
          rejected_.push_back(m.delivery_tag);
        }
        ++unanswered;
        return true;
      }
      case codec::basic_ack::id: {
        codec::basic_ack m;
        if (codec::decode(args, m) == codec::errc::ok) {
          std::lock_guard lock(mu_);
          acked_.push_back(m.delivery_tag);
        }
        ++unanswered;
        return true;
      }
      case codec::confirm_select::id:
        confirm_mode_[channel] = true;
        published_[channel] = 0;
        ++confirm_selects;
        if (select_ok_after_a_publish.load()) {
          select_pending_[channel] = true;
          return true;
        }
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
        if (select_pending_[channel]) {
          select_pending_[channel] = false;
          send(channel, codec::confirm_select_ok{});
        }
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
  int client_view_ = -1;  // start_tcp: a duplicate of the client's descriptor, never read
  std::thread thread_;
  mutable std::mutex mu_;
  std::string to_send_;                  // guarded by mu_
  std::vector<std::uint64_t> rejected_;  // guarded by mu_
  std::vector<std::uint64_t> acked_;     // guarded by mu_
  std::map<std::uint16_t, std::uint64_t> delivered_;
  std::atomic<bool> stop_{false};
  std::map<std::uint16_t, std::uint64_t> published_;
  std::map<std::uint16_t, bool> confirm_mode_;
  std::map<std::uint16_t, bool> select_pending_;  // select_ok_after_a_publish
};

}  // namespace warren::test
