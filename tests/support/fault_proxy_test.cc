// The fault proxy between plain sockets of the test: forwarding, EOF, freeze/thaw, reset, cuts
// after N bytes, refusing connections, retargeting, and many connections from several threads.
#include "tests/support/fault_proxy.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace warren::test {
namespace {

using namespace std::chrono_literals;

// A quiet period long enough that a byte the proxy wrongly forwarded would have arrived on
// loopback; freeze() and drop_after() apply before they return, so no byte may arrive at all.
constexpr auto quiet = 300ms;
// Deadline for what must arrive.
constexpr auto deadline = 10s;

class fd_guard {
 public:
  explicit fd_guard(int fd = -1) : fd_(fd) {}
  ~fd_guard() { reset(); }
  fd_guard(fd_guard&& o) noexcept : fd_(o.release()) {}
  fd_guard& operator=(fd_guard&& o) noexcept {
    reset(o.release());
    return *this;
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// A listening socket on 127.0.0.1, standing for the broker.
class target {
 public:
  target() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_.get(), 64), 0);
    EXPECT_EQ(::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
    port_ = ntohs(a.sin_port);
  }
  std::uint16_t port() const { return port_; }
  // The next connection the proxy made, or -1 after `deadline`.
  fd_guard accept() {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, int(std::chrono::milliseconds(deadline).count())) != 1) return fd_guard();
    return fd_guard(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  }
  bool nothing_to_accept(std::chrono::milliseconds within) {
    pollfd p{fd_.get(), POLLIN, 0};
    return ::poll(&p, 1, int(within.count())) == 0;
  }
  void close() { fd_.reset(); }

 private:
  fd_guard fd_;
  std::uint16_t port_ = 0;
};

fd_guard connect_to(std::uint16_t port, int* error = nullptr) {
  fd_guard fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (error) *error = errno;
    return fd_guard();
  }
  if (error) *error = 0;
  return fd;
}

void send_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << std::strerror(errno);
    off += std::size_t(n);
  }
}

// What one recv() after waiting for input returned.
struct read_result {
  bool timed_out = false;
  int error = 0;     // errno of a failed recv (ECONNRESET for a RST)
  bool eof = false;  // recv returned 0
  std::string data;
};

read_result read_some(int fd, std::chrono::milliseconds within) {
  read_result r;
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, int(within.count())) != 1) {
    r.timed_out = true;
    return r;
  }
  char buf[65536];
  const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  if (n < 0) {
    r.error = errno;
  } else if (n == 0) {
    r.eof = true;
  } else {
    r.data.assign(buf, std::size_t(n));
  }
  return r;
}

// Reads until `n` bytes came, or EOF, an error or `deadline` ends it.
std::string read_exactly(int fd, std::size_t n) {
  std::string out;
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (out.size() < n && std::chrono::steady_clock::now() < until) {
    read_result r = read_some(fd, 100ms);
    if (r.error != 0 || r.eof) break;
    out += r.data;
  }
  return out;
}

// Waits until the proxy has the connection to the target in place: one round trip.
void round_trip(int client, int server) {
  send_all(client, "ping");
  ASSERT_EQ(read_exactly(server, 4), "ping");
  send_all(server, "pong");
  ASSERT_EQ(read_exactly(client, 4), "pong");
}

bool eventually(const std::function<bool()>& cond) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

TEST(fault_proxy_test, forwards_both_ways_and_counts_the_bytes) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  EXPECT_NE(proxy.port(), 0);
  EXPECT_EQ(proxy.address(), "127.0.0.1:" + std::to_string(proxy.port()));
  fd_guard client = connect_to(proxy.port());
  ASSERT_GE(client.get(), 0);
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);

  const std::string big(1 << 20, 'x');
  std::thread writer([&] { send_all(client.get(), big); });
  EXPECT_EQ(read_exactly(server.get(), big.size()), big);
  writer.join();
  send_all(server.get(), "reply");
  EXPECT_EQ(read_exactly(client.get(), 5), "reply");

  // stats() counts every byte a peer has read; the plain accessors may trail by the write the
  // proxy thread has just made.
  const fault_proxy_stats st = proxy.stats();
  EXPECT_EQ(st.to_client, 5u);
  EXPECT_EQ(st.to_target, big.size());
  EXPECT_EQ(st.accepted, 1u);
  EXPECT_EQ(st.open, 1u);
  EXPECT_EQ(st.cut, 0u);
  EXPECT_TRUE(eventually([&] { return proxy.bytes_forwarded(flow::to_client) == 5u; }));
  EXPECT_EQ(proxy.bytes_forwarded(flow::to_target), big.size());
  EXPECT_EQ(proxy.accepted(), 1u);
  EXPECT_EQ(proxy.open_connections(), 1u);
}

TEST(fault_proxy_test, an_eof_from_either_side_is_passed_on_and_then_the_connection_ends) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  fd_guard client = connect_to(proxy.port());
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);
  send_all(client.get(), "last words");
  ::shutdown(client.get(), SHUT_WR);
  EXPECT_EQ(read_exactly(server.get(), 10), "last words");
  EXPECT_TRUE(read_some(server.get(), deadline).eof);
  // The other direction still works after a half-close.
  send_all(server.get(), "answer");
  EXPECT_EQ(read_exactly(client.get(), 6), "answer");
  server.reset();
  EXPECT_TRUE(read_some(client.get(), deadline).eof);
  EXPECT_TRUE(eventually([&] { return proxy.open_connections() == 0; }));
}

TEST(fault_proxy_test, freeze_holds_both_directions_silently_and_thaw_delivers_what_was_held) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  fd_guard client = connect_to(proxy.port());
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);
  round_trip(client.get(), server.get());

  proxy.freeze();
  send_all(client.get(), "held up");
  send_all(server.get(), "held down");
  // Silence, not a reset and not an EOF, on both sides.
  EXPECT_TRUE(read_some(server.get(), quiet).timed_out);
  EXPECT_TRUE(read_some(client.get(), quiet).timed_out);
  EXPECT_EQ(proxy.bytes_forwarded(flow::to_target), 4u);
  EXPECT_EQ(proxy.bytes_forwarded(flow::to_client), 4u);

  proxy.thaw();
  EXPECT_EQ(read_exactly(server.get(), 7), "held up");
  EXPECT_EQ(read_exactly(client.get(), 9), "held down");
}

TEST(fault_proxy_test, freeze_holds_bytes_the_proxy_had_already_read) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  fd_guard client = connect_to(proxy.port());
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);
  // The target does not read: the proxy fills its buffer and the target's socket buffers.
  const std::string big(4 << 20, 'y');
  std::thread writer([&] { send_all(client.get(), big); });
  ASSERT_TRUE(eventually([&] { return proxy.bytes_forwarded(flow::to_target) > 0; }));
  proxy.freeze();
  const std::uint64_t at_freeze = proxy.bytes_forwarded(flow::to_target);
  // Drain the target's socket: nothing beyond what was forwarded before the freeze arrives.
  std::string got = read_exactly(server.get(), at_freeze);
  EXPECT_EQ(got.size(), at_freeze);
  EXPECT_TRUE(read_some(server.get(), quiet).timed_out);
  EXPECT_EQ(proxy.bytes_forwarded(flow::to_target), at_freeze);
  proxy.thaw();
  got += read_exactly(server.get(), big.size() - got.size());
  writer.join();
  EXPECT_EQ(got, big);
}

TEST(fault_proxy_test, a_frozen_proxy_accepts_nothing_and_serves_the_waiting_client_after_thaw) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  proxy.freeze();
  // The kernel completes the handshake; the proxy does not take the connection on.
  fd_guard client = connect_to(proxy.port());
  ASSERT_GE(client.get(), 0);
  EXPECT_TRUE(t.nothing_to_accept(quiet));
  EXPECT_EQ(proxy.accepted(), 0u);
  send_all(client.get(), "early");
  proxy.thaw();
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);
  EXPECT_EQ(read_exactly(server.get(), 5), "early");
}

TEST(fault_proxy_test, reset_connections_sends_a_rst_to_the_client_and_to_the_target) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  fd_guard client = connect_to(proxy.port());
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);
  round_trip(client.get(), server.get());

  proxy.reset_connections();
  EXPECT_EQ(read_some(client.get(), deadline).error, ECONNRESET);
  EXPECT_EQ(read_some(server.get(), deadline).error, ECONNRESET);
  EXPECT_EQ(proxy.open_connections(), 0u);
  // New connections are served as before.
  fd_guard client2 = connect_to(proxy.port());
  fd_guard server2 = t.accept();
  ASSERT_GE(server2.get(), 0);
  round_trip(client2.get(), server2.get());
}

TEST(fault_proxy_test, reset_connections_also_resets_frozen_connections) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  fd_guard client = connect_to(proxy.port());
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);
  round_trip(client.get(), server.get());
  proxy.freeze();
  proxy.reset_connections();
  EXPECT_EQ(read_some(client.get(), deadline).error, ECONNRESET);
  EXPECT_EQ(read_some(server.get(), deadline).error, ECONNRESET);
}

TEST(fault_proxy_test, drop_after_with_reset_lets_exactly_n_bytes_through_then_resets_both) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  fd_guard client = connect_to(proxy.port());
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);
  round_trip(client.get(), server.get());

  proxy.drop_after(flow::to_target, 10, cut_mode::reset);
  send_all(client.get(), "0123456789abcdef");
  EXPECT_EQ(read_exactly(server.get(), 10), "0123456789");
  EXPECT_EQ(read_some(server.get(), deadline).error, ECONNRESET);
  EXPECT_EQ(read_some(client.get(), deadline).error, ECONNRESET);
  EXPECT_EQ(proxy.bytes_forwarded(flow::to_target), 4u + 10u);
  EXPECT_EQ(proxy.cut(), 1u);
}

TEST(fault_proxy_test,
     drop_after_with_silence_lets_exactly_n_bytes_through_then_nothing_either_way) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  fd_guard client = connect_to(proxy.port());
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);
  round_trip(client.get(), server.get());

  proxy.drop_after(flow::to_client, 3, cut_mode::silence);
  send_all(server.get(), "abcdef");
  EXPECT_EQ(read_exactly(client.get(), 3), "abc");
  EXPECT_TRUE(read_some(client.get(), quiet).timed_out);
  // The other direction is cut too: a black hole, not a reset.
  send_all(client.get(), "anyone?");
  EXPECT_TRUE(read_some(server.get(), quiet).timed_out);
  EXPECT_EQ(proxy.cut(), 1u);
  EXPECT_EQ(proxy.open_connections(), 1u);
}

TEST(fault_proxy_test, drop_after_counts_each_later_connection_from_its_start) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  proxy.drop_after(flow::to_target, 8, cut_mode::reset);
  for (int i = 0; i < 2; ++i) {
    fd_guard client = connect_to(proxy.port());
    fd_guard server = t.accept();
    ASSERT_GE(server.get(), 0);
    send_all(client.get(), std::string("AMQP\x00\x00\x09\x01 and more", 17));
    EXPECT_EQ(read_exactly(server.get(), 8), std::string("AMQP\x00\x00\x09\x01", 8));
    EXPECT_EQ(read_some(server.get(), deadline).error, ECONNRESET);
  }
  EXPECT_EQ(proxy.cut(), 2u);
  proxy.clear_drop();
  fd_guard client = connect_to(proxy.port());
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);
  send_all(client.get(), "0123456789");
  EXPECT_EQ(read_exactly(server.get(), 10), "0123456789");
}

TEST(fault_proxy_test, drop_after_zero_bytes_resets_open_connections_at_once) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  fd_guard client = connect_to(proxy.port());
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);
  round_trip(client.get(), server.get());
  proxy.drop_after(flow::to_client, 0, cut_mode::reset);
  EXPECT_EQ(read_some(client.get(), deadline).error, ECONNRESET);
  EXPECT_EQ(read_some(server.get(), deadline).error, ECONNRESET);
}

TEST(fault_proxy_test, refuse_new_refuses_connects_keeps_open_ones_and_can_accept_again) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  fd_guard client = connect_to(proxy.port());
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);
  round_trip(client.get(), server.get());

  proxy.refuse_new(true);
  int error = 0;
  EXPECT_LT(connect_to(proxy.port(), &error).get(), 0);
  EXPECT_EQ(error, ECONNREFUSED);
  round_trip(client.get(), server.get());

  proxy.refuse_new(false);
  fd_guard client2 = connect_to(proxy.port(), &error);
  ASSERT_GE(client2.get(), 0) << std::strerror(error);
  fd_guard server2 = t.accept();
  ASSERT_GE(server2.get(), 0);
  round_trip(client2.get(), server2.get());
}

TEST(fault_proxy_test, a_target_that_refuses_gets_the_client_reset) {
  target t;
  const std::uint16_t port = t.port();
  t.close();
  fault_proxy proxy("127.0.0.1", port);
  fd_guard client = connect_to(proxy.port());
  ASSERT_GE(client.get(), 0);
  EXPECT_EQ(read_some(client.get(), deadline).error, ECONNRESET);
  EXPECT_TRUE(eventually([&] { return proxy.open_connections() == 0; }));
}

TEST(fault_proxy_test, set_target_sends_later_connections_elsewhere_and_keeps_open_ones) {
  target a, b;
  fault_proxy proxy("localhost", a.port());
  fd_guard client_a = connect_to(proxy.port());
  fd_guard server_a = a.accept();
  ASSERT_GE(server_a.get(), 0);
  proxy.set_target("127.0.0.1", b.port());
  fd_guard client_b = connect_to(proxy.port());
  fd_guard server_b = b.accept();
  ASSERT_GE(server_b.get(), 0);
  round_trip(client_a.get(), server_a.get());
  round_trip(client_b.get(), server_b.get());
  EXPECT_THROW(proxy.set_target("broker.example", 5672), std::invalid_argument);
}

TEST(fault_proxy_test, many_connections_from_threads_are_forwarded_whole_while_counters_are_read) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  constexpr int n = 8;
  constexpr std::size_t bytes = 256 * 1024;
  std::vector<std::thread> echo, clients;
  std::atomic<int> good{0};
  std::atomic<bool> done{false};
  for (int i = 0; i < n; ++i) {
    echo.emplace_back([&] {
      fd_guard s = t.accept();
      for (;;) {
        read_result r = read_some(s.get(), deadline);
        if (!r.data.empty()) {
          send_all(s.get(), r.data);
        } else {
          return;
        }
      }
    });
  }
  for (int i = 0; i < n; ++i) {
    clients.emplace_back([&, i] {
      fd_guard c = connect_to(proxy.port());
      const std::string payload(bytes, char('a' + i));
      std::thread w([&] { send_all(c.get(), payload); });
      const bool same = read_exactly(c.get(), bytes) == payload;
      w.join();
      if (same) ++good;
    });
  }
  std::thread reader([&] {
    while (!done.load()) {
      (void)proxy.bytes_forwarded(flow::to_target);
      (void)proxy.open_connections();
      std::this_thread::sleep_for(1ms);
    }
  });
  for (auto& c : clients) c.join();
  done = true;
  reader.join();
  EXPECT_EQ(good.load(), n);
  // Every byte echoed came after the proxy had counted it on its way in.
  EXPECT_TRUE(eventually([&] { return proxy.bytes_forwarded(flow::to_client) == n * bytes; }))
      << proxy.bytes_forwarded(flow::to_client);
  EXPECT_EQ(proxy.bytes_forwarded(flow::to_target), n * bytes);
  proxy.reset_connections();
  for (auto& e : echo) e.join();
}

TEST(fault_proxy_test, controls_from_several_threads_while_traffic_flows) {
  target t;
  fault_proxy proxy("127.0.0.1", t.port());
  fd_guard client = connect_to(proxy.port());
  fd_guard server = t.accept();
  ASSERT_GE(server.get(), 0);
  std::atomic<bool> stop{false};
  std::thread sink([&] {
    while (!stop.load()) (void)read_some(server.get(), 10ms);
  });
  std::thread traffic([&] {
    const std::string chunk(4096, 'z');
    while (!stop.load()) {
      pollfd p{client.get(), POLLOUT, 0};
      if (::poll(&p, 1, 10) == 1)
        (void)::send(client.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
  });
  std::vector<std::thread> controllers;
  for (int i = 0; i < 3; ++i) {
    controllers.emplace_back([&] {
      for (int k = 0; k < 50; ++k) {
        proxy.freeze();
        proxy.thaw();
        proxy.refuse_new(k % 2 == 0);
      }
    });
  }
  for (auto& c : controllers) c.join();
  proxy.refuse_new(false);
  stop = true;
  traffic.join();
  sink.join();
  EXPECT_GT(proxy.bytes_forwarded(flow::to_target), 0u);
  EXPECT_EQ(proxy.open_connections(), 1u);
}

TEST(fault_proxy_test, destruction_with_open_frozen_and_silenced_connections_closes_them) {
  target t;
  fd_guard c1, c2, s1, s2;
  {
    fault_proxy proxy("127.0.0.1", t.port());
    c1 = connect_to(proxy.port());
    s1 = t.accept();
    c2 = connect_to(proxy.port());
    s2 = t.accept();
    ASSERT_GE(s2.get(), 0);
    round_trip(c2.get(), s2.get());
    proxy.drop_after(flow::to_target, 0, cut_mode::silence);
    proxy.freeze();
  }
  EXPECT_TRUE(read_some(c1.get(), deadline).eof);
  EXPECT_TRUE(read_some(c2.get(), deadline).eof);
  EXPECT_TRUE(read_some(s2.get(), deadline).eof);
}

}  // namespace
}  // namespace warren::test
