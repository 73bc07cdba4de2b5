// A one-connection TCP proxy for end-to-end tests of the perf binary: it forwards between the
// client and an upstream until freeze(); after it, it still forwards what the client sends but
// drops (and counts) what the upstream answers, and cut() closes both sides. Every confirm the
// upstream sends after freeze() is one the client never sees: when cut() follows, the
// publishes it covered are in doubt for the client.
//
// Threads: construct, freeze(), client_bytes_after_freeze(), cut() from the test's thread;
// forwarding runs on the proxy's own thread. The destructor cuts and joins.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "engine/io/socket.h"
#include "tests/engine/io/test_support.h"

namespace warren::perf::test {

class freeze_proxy {
 public:
  explicit freeze_proxy(std::uint16_t upstream_port) : upstream_port_(upstream_port) {
    thread_ = std::thread([this] { run(); });
  }
  ~freeze_proxy() {
    cut();
    thread_.join();
  }
  freeze_proxy(const freeze_proxy&) = delete;
  freeze_proxy& operator=(const freeze_proxy&) = delete;

  std::uint16_t port() const { return listener_.port(); }
  // True once a client connected and the upstream connection is up.
  bool connected() const { return connected_.load(); }
  // Octets forwarded from the client so far.
  std::uint64_t client_bytes() const { return client_bytes_.load(); }
  void freeze() { frozen_.store(true); }
  // Octets the upstream sent after freeze(), dropped.
  std::uint64_t withheld_bytes() const { return withheld_.load(); }
  void cut() { cut_.store(true); }

 private:
  static bool write_all(int fd, const char* p, std::size_t n) {
    while (n > 0) {
      const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }

  void run() {
    io::unique_fd client = listener_.accept();
    if (!client.valid()) return;
    io::unique_fd upstream(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(upstream_port_);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(upstream.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
    connected_.store(true);
    char buf[64 * 1024];
    // Bounded: a test that forgets to cut still ends (60 s is far beyond any run here).
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!cut_.load() && std::chrono::steady_clock::now() < give_up) {
      pollfd p[2] = {{client.get(), POLLIN, 0}, {upstream.get(), POLLIN, 0}};
      if (::poll(p, 2, 20) <= 0) continue;
      const bool frozen = frozen_.load();
      if (p[0].revents != 0) {
        const ssize_t n = ::recv(client.get(), buf, sizeof buf, 0);
        if (n <= 0) break;
        client_bytes_ += static_cast<std::uint64_t>(n);
        if (!write_all(upstream.get(), buf, static_cast<std::size_t>(n))) break;
      }
      if (p[1].revents != 0) {
        const ssize_t n = ::recv(upstream.get(), buf, sizeof buf, 0);
        if (n <= 0) break;
        if (frozen) {
          withheld_ += static_cast<std::uint64_t>(n);
        } else if (!write_all(client.get(), buf, static_cast<std::size_t>(n))) {
          break;
        }
      }
    }
    // RST rather than FIN: the client learns at once that the connection is gone.
    linger l{1, 0};
    ::setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }

  io::test::listener listener_;
  std::uint16_t upstream_port_;
  std::atomic<bool> connected_{false}, frozen_{false}, cut_{false};
  std::atomic<std::uint64_t> client_bytes_{0}, withheld_{0};
  std::thread thread_;
};

}  // namespace warren::perf::test
