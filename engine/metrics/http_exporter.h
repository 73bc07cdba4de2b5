// A minimal HTTP/1.1 server with its own thread, for Prometheus to scrape (README, "Metrics").
//
//   warren::metrics::registry& reg = ...;
//   warren::metrics::http_exporter exporter(
//       [&reg] { return warren::metrics::render_prometheus(reg.take()); }, {.port = 9419});
//
// It answers GET and HEAD of `path` (a query string is ignored) with 200 and the text the
// source returns (Content-Type: Prometheus' text format 0.0.4), any other path with 404, any
// other method with 405, a malformed request with 400, a request head over 8 KiB with 431, and
// a source that throws with 500 and the exception's what(). Every response closes its
// connection (Connection: close): a scraper reconnects at each scrape, which costs nothing at
// scrape rates and keeps the server a simple loop. Up to max_connections are served at once; a
// connection that has not been answered and closed within request_timeout is dropped, so an idle
// or slow client cannot hold the server.
//
// Threads: the constructor binds, listens and starts the server's thread before it returns, so
// a scrape may come at once. The source runs on the server's thread, one call per request; it
// must not call stop() or destroy the exporter (that would wait for itself). stop() and the
// destructor may be called from any other thread; they return once the thread has ended (a
// source call in progress finishes first) and the port is closed.
//
// Errors: the constructor throws std::system_error when the address does not resolve or cannot
// be bound ("metrics exporter: bind 127.0.0.1:9419: Address already in use"), and
// std::invalid_argument for a path that does not start with '/'. Nothing is thrown afterwards:
// a failing connection is closed and the server goes on.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace warren::metrics {

struct http_exporter_options {
  // An IP literal or a name; "0.0.0.0" or "::" for every interface. Loopback by default: the
  // counters name connections and consumers, expose them deliberately.
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;  // 0: a free port, see http_exporter::port()
  std::string path = "/metrics";
  std::chrono::milliseconds request_timeout{10'000};
  std::size_t max_connections = 16;
};

class http_exporter {
 public:
  using body_source = std::function<std::string()>;

  explicit http_exporter(body_source source, http_exporter_options options = {});
  ~http_exporter();
  http_exporter(const http_exporter&) = delete;
  http_exporter& operator=(const http_exporter&) = delete;

  // The bound port (the one chosen when options.port was 0).
  std::uint16_t port() const noexcept;
  // Requests answered so far (any status), for tests and the curious. Any thread.
  std::uint64_t requests_served() const noexcept;
  // Idempotent. See the top for the threads it may be called from.
  void stop() noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace warren::metrics
