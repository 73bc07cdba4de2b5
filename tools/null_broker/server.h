// The null broker's sockets and threads around session (tools/null_broker/session.h): one
// thread accepts, one thread per client connection runs that connection's session with
// non-blocking reads and writes, so that a firehose keeps reading acks and close requests while
// it floods the socket.
//
// Threads: construct, read port() and totals(), and stop() from any thread; the destructor stops
// and joins every thread the server started.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "tools/null_broker/session.h"

namespace warren::null_broker {

struct server_options {
  std::string host = "127.0.0.1";  // an IPv4 address
  std::uint16_t port = 0;          // 0: an ephemeral port, see server::port()
  null_broker::options session;
};

// Sums over every connection so far, updated after each read or written chunk.
struct server_totals {
  std::uint64_t connections = 0;
  counters sessions;
};

class server {
 public:
  // Binds, listens and starts accepting. Throws std::system_error when the address cannot be
  // bound, std::invalid_argument for a host that is not an IPv4 address.
  explicit server(const server_options& o);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  std::uint16_t port() const noexcept { return port_; }
  // Asks every thread to finish (open connections are dropped) and joins them; idempotent.
  void stop();
  server_totals totals() const noexcept;

 private:
  struct shared_counters {
    std::atomic<std::uint64_t> connections{0};
    std::atomic<std::uint64_t> published{0};
    std::atomic<std::uint64_t> delivered{0};
    std::atomic<std::uint64_t> acks_sent{0};
    std::atomic<std::uint64_t> acks_received{0};
    std::atomic<std::uint64_t> octets_received{0};
  };

  void accept_loop();
  void serve(int fd);
  void add(const counters& now, counters& reported);

  server_options options_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // an eventfd every thread polls; readable once stop() has run
  std::uint16_t port_ = 0;
  shared_counters totals_;
  std::thread acceptor_;
};

}  // namespace warren::null_broker
