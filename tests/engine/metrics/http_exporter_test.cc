#include "engine/metrics/http_exporter.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace warren::metrics {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// A blocking loopback client whose every wait is bounded by a deadline.
class client {
 public:
  explicit client(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~client() { ::close(fd_); }
  bool connected() const { return connected_; }

  void send(std::string_view s) {
    while (!s.empty()) {
      const ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      s.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  // Everything until the server closes, or what came before the deadline.
  std::string read_all(std::chrono::milliseconds limit = 10s) {
    std::string out;
    const auto deadline = steady::now() + limit;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
      if (left <= 0ms) return out;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count()) + 1) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;
        return out;
      }
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  bool closed_by_server() const { return closed_; }

 private:
  int fd_;
  bool connected_ = false;
  bool closed_ = false;
};

struct reply {
  std::string status_line, head, body;
};

reply parse(const std::string& raw) {
  reply r;
  const std::size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return r;
  r.head = raw.substr(0, end + 2);
  r.status_line = raw.substr(0, raw.find("\r\n"));
  r.body = raw.substr(end + 4);
  return r;
}

reply request(std::uint16_t port, std::string_view raw) {
  client c(port);
  EXPECT_TRUE(c.connected());
  c.send(raw);
  return parse(c.read_all());
}

reply get(std::uint16_t port, std::string_view target) {
  return request(port, "GET " + std::string(target) + " HTTP/1.1\r\nHost: x\r\n\r\n");
}

TEST(http_exporter, get_metrics_returns_the_sources_text_in_prometheus_format) {
  http_exporter e([] { return std::string("warren_x_total 1\n"); });
  ASSERT_NE(e.port(), 0);
  const reply r = get(e.port(), "/metrics");
  EXPECT_EQ(r.status_line, "HTTP/1.1 200 OK");
  EXPECT_NE(r.head.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos);
  EXPECT_NE(r.head.find("Content-Length: 17\r\n"), std::string::npos);
  EXPECT_NE(r.head.find("Connection: close\r\n"), std::string::npos);
  EXPECT_EQ(r.body, "warren_x_total 1\n");
  EXPECT_EQ(e.requests_served(), 1u);
}

TEST(http_exporter, every_scrape_calls_the_source_again) {
  int n = 0;
  http_exporter e([&n] { return std::to_string(++n); });
  EXPECT_EQ(get(e.port(), "/metrics").body, "1");
  EXPECT_EQ(get(e.port(), "/metrics?name[]=x").body, "2");              // the query is ignored
  EXPECT_EQ(request(e.port(), "GET /metrics HTTP/1.0\n\n").body, "3");  // bare LFs, HTTP/1.0
}

TEST(http_exporter, head_sends_the_headers_without_the_body) {
  http_exporter e([] { return std::string("abc"); });
  const reply r = request(e.port(), "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.status_line, "HTTP/1.1 200 OK");
  EXPECT_NE(r.head.find("Content-Length: 3\r\n"), std::string::npos);
  EXPECT_EQ(r.body, "");
}

TEST(http_exporter, other_paths_methods_and_malformed_requests_get_their_status) {
  http_exporter e([] { return std::string("m"); }, {.path = "/custom"});
  EXPECT_EQ(get(e.port(), "/metrics").status_line, "HTTP/1.1 404 Not Found");
  EXPECT_EQ(get(e.port(), "/custom").status_line, "HTTP/1.1 200 OK");
  const reply post = request(e.port(), "POST /custom HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post.status_line, "HTTP/1.1 405 Method Not Allowed");
  EXPECT_NE(post.head.find("Allow: GET, HEAD\r\n"), std::string::npos);
  EXPECT_EQ(request(e.port(), "nonsense\r\n\r\n").status_line, "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(request(e.port(), "GET /custom\r\n\r\n").status_line, "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(request(e.port(), "GET /custom HTTP/2.0\r\n\r\n").status_line,
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(request(e.port(), "G(T /custom HTTP/1.1\r\n\r\n").status_line,
            "HTTP/1.1 400 Bad Request");
  const std::string huge = "GET /custom HTTP/1.1\r\nX: " + std::string(9000, 'a') + "\r\n\r\n";
  EXPECT_EQ(request(e.port(), huge).status_line, "HTTP/1.1 431 Request Header Fields Too Large");
}

TEST(http_exporter, a_request_sent_in_pieces_is_answered) {
  http_exporter e([] { return std::string("ok"); });
  client c(e.port());
  ASSERT_TRUE(c.connected());
  for (char ch : std::string("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")) {
    c.send(std::string_view(&ch, 1));
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(parse(c.read_all()).body, "ok");
}

TEST(http_exporter, a_source_that_throws_gives_500_with_its_message) {
  http_exporter e([]() -> std::string { throw std::runtime_error("registry gone"); });
  const reply r = get(e.port(), "/metrics");
  EXPECT_EQ(r.status_line, "HTTP/1.1 500 Internal Server Error");
  EXPECT_EQ(r.body, "metrics: registry gone\n");
  EXPECT_EQ(get(e.port(), "/metrics").status_line, "HTTP/1.1 500 Internal Server Error");
}

// The server's request_timeout (200 ms) is what ends the idle connection; the 10 s bound of
// read_all only keeps a broken server from hanging the test.
TEST(http_exporter, an_idle_client_neither_blocks_others_nor_stays_past_the_timeout) {
  http_exporter e([] { return std::string("ok"); }, {.request_timeout = 200ms});
  client idle(e.port());
  ASSERT_TRUE(idle.connected());
  EXPECT_EQ(get(e.port(), "/metrics").body, "ok");
  const auto start = steady::now();
  EXPECT_EQ(idle.read_all(), "");
  EXPECT_TRUE(idle.closed_by_server());
  EXPECT_LT(steady::now() - start, 5s);
}

// With one connection allowed, the second waits in the backlog until the first is dropped by
// request_timeout, then is served.
TEST(http_exporter, connections_over_the_limit_wait_their_turn) {
  http_exporter e([] { return std::string("ok"); },
                  {.request_timeout = 300ms, .max_connections = 1});
  client idle(e.port());
  ASSERT_TRUE(idle.connected());
  std::this_thread::sleep_for(50ms);  // let the server accept the idle one first (not needed
                                      // for correctness: either order ends with both served)
  EXPECT_EQ(get(e.port(), "/metrics").body, "ok");
}

TEST(http_exporter, stop_closes_the_port_and_is_idempotent) {
  auto e = std::make_unique<http_exporter>([] { return std::string("ok"); });
  const std::uint16_t port = e->port();
  EXPECT_EQ(get(port, "/metrics").body, "ok");
  e->stop();
  e->stop();
  EXPECT_FALSE(client(port).connected());
  e.reset();
}

TEST(http_exporter, a_fixed_port_can_be_bound_again_at_once_after_serving) {
  std::uint16_t port;
  {
    http_exporter first([] { return std::string("1"); });
    port = first.port();
    EXPECT_EQ(get(port, "/metrics").body, "1");
  }
  http_exporter second([] { return std::string("2"); }, {.port = port});
  EXPECT_EQ(second.port(), port);
  EXPECT_EQ(get(port, "/metrics").body, "2");
}

TEST(http_exporter, a_port_in_use_or_a_bad_path_throws_naming_the_problem) {
  http_exporter first([] { return std::string(); });
  // SO_REUSEADDR does not let two listeners share a port.
  try {
    http_exporter second([] { return std::string(); }, {.port = first.port()});
    FAIL() << "bound a port in use";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::address_in_use);
    EXPECT_NE(std::string(e.what()).find("metrics exporter: bind 127.0.0.1:" +
                                         std::to_string(first.port())),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(http_exporter([] { return std::string(); }, {.path = "metrics"}),
               std::invalid_argument);
  EXPECT_THROW(http_exporter([] { return std::string(); }, {.host = "nosuch.invalid"}),
               std::system_error);
}

TEST(http_exporter, concurrent_scrapes_while_stopping_are_clean) {
  std::atomic<int> calls{0};
  auto e = std::make_unique<http_exporter>([&calls] {
    calls.fetch_add(1);
    return std::string(100000, 'x');  // bigger than one socket write
  });
  const std::uint16_t port = e->port();
  std::vector<std::thread> scrapers;
  std::atomic<int> full{0};
  for (int t = 0; t < 4; ++t) {
    scrapers.emplace_back([port, &full] {
      for (int i = 0; i < 10; ++i) {
        client c(port);
        if (!c.connected()) return;
        c.send("GET /metrics HTTP/1.1\r\n\r\n");
        if (parse(c.read_all()).body.size() == 100000) full.fetch_add(1);
      }
    });
  }
  const auto deadline = steady::now() + 60s;
  while (full.load() < 8 && steady::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_GE(full.load(), 8);
  e->stop();
  for (auto& t : scrapers) t.join();
  EXPECT_GE(calls.load(), 8);
}

}  // namespace
}  // namespace warren::metrics
