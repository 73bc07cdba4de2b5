#include "tools/null_broker/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <list>
#include <memory>
#include <stdexcept>
#include <system_error>

namespace warren::null_broker {

namespace {

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

using steady = std::chrono::steady_clock;

}  // namespace

server::server(const server_options& o) : options_(o) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(o.port);
  if (::inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr) != 1) {
    throw std::invalid_argument("null_broker: not an IPv4 address: " + o.host);
  }
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw_errno("socket");
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 128) != 0) {
    const int e = errno;
    ::close(listen_fd_);
    throw std::system_error(e, std::generic_category(), "null_broker: bind/listen " + o.host);
  }
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) {
    ::close(listen_fd_);
    throw_errno("eventfd");
  }
  acceptor_ = std::thread([this] { accept_loop(); });
}

server::~server() {
  stop();
  ::close(listen_fd_);
  ::close(stop_fd_);
}

void server::stop() {
  const std::uint64_t one = 1;
  // Only fails when the counter would overflow, i.e. after 2^64 - 1 calls.
  (void)!::write(stop_fd_, &one, sizeof one);
  if (acceptor_.joinable()) acceptor_.join();
}

server_totals server::totals() const noexcept {
  server_totals t;
  t.connections = totals_.connections.load(std::memory_order_relaxed);
  t.sessions.published = totals_.published.load(std::memory_order_relaxed);
  t.sessions.delivered = totals_.delivered.load(std::memory_order_relaxed);
  t.sessions.acks_sent = totals_.acks_sent.load(std::memory_order_relaxed);
  t.sessions.acks_received = totals_.acks_received.load(std::memory_order_relaxed);
  t.sessions.octets_received = totals_.octets_received.load(std::memory_order_relaxed);
  return t;
}

void server::add(const counters& now, counters& reported) {
  auto push = [](std::atomic<std::uint64_t>& total, std::uint64_t now, std::uint64_t& seen) {
    if (now != seen) total.fetch_add(now - seen, std::memory_order_relaxed);
    seen = now;
  };
  push(totals_.published, now.published, reported.published);
  push(totals_.delivered, now.delivered, reported.delivered);
  push(totals_.acks_sent, now.acks_sent, reported.acks_sent);
  push(totals_.acks_received, now.acks_received, reported.acks_received);
  push(totals_.octets_received, now.octets_received, reported.octets_received);
}

void server::accept_loop() {
  struct worker {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  std::list<worker> workers;
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents != 0) break;
    // Finished connections are joined here, so that a long run does not pile up threads.
    workers.remove_if([](worker& w) {
      if (!w.done.load(std::memory_order_acquire)) return false;
      w.thread.join();
      return true;
    });
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    totals_.connections.fetch_add(1, std::memory_order_relaxed);
    worker& w = workers.emplace_back();
    w.thread = std::thread([this, fd, &w] {
      serve(fd);
      w.done.store(true, std::memory_order_release);
    });
  }
  for (worker& w : workers) w.thread.join();
}

void server::serve(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto s = std::make_unique<session>(options_.session);
  counters reported;
  std::string control;  // control bytes being written
  std::size_t control_at = 0;
  std::string_view chunk;  // deliveries being written
  std::size_t chunk_at = 0;
  bool closing = false;  // flush what is queued, then close
  auto next_heartbeat = steady::time_point::max();

  for (;;) {
    // Write until the socket is full or there is nothing left; a reply only ever goes out
    // between two chunks, never inside one.
    bool blocked = false;
    bool wrote_chunk = false;
    for (;;) {
      std::string_view pending;
      if (chunk_at < chunk.size()) {
        pending = chunk.substr(chunk_at);
      } else if (control_at < control.size()) {
        pending = std::string_view(control).substr(control_at);
      } else {
        control.clear();
        control_at = 0;
        if (s->has_control()) {
          s->take_control(control);
          continue;
        }
        // One chunk per round, so that reads (acks, close) are never starved by a fast reader.
        if (closing || wrote_chunk) break;
        chunk = s->next_deliveries();
        chunk_at = 0;
        if (chunk.empty()) break;
        wrote_chunk = true;
        continue;
      }
      const ssize_t n = ::send(fd, pending.data(), pending.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          blocked = true;
          break;
        }
        closing = true;
        control.clear();
        chunk = {};
        break;
      }
      if (chunk_at < chunk.size()) {
        chunk_at += static_cast<std::size_t>(n);
      } else {
        control_at += static_cast<std::size_t>(n);
      }
    }
    add(s->totals(), reported);
    const bool write_pending = chunk_at < chunk.size() || control_at < control.size();
    if (closing && !write_pending) break;

    int timeout_ms = -1;
    if (wrote_chunk && !blocked) {
      timeout_ms = 0;  // more deliveries to write as soon as the input is checked
    } else if (next_heartbeat != steady::time_point::max()) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(next_heartbeat - steady::now());
      timeout_ms = static_cast<int>(std::max<std::chrono::milliseconds::rep>(0, left.count()));
    }
    // Once closing, input is no longer read, so waiting for it would spin.
    const short events = static_cast<short>((closing ? 0 : POLLIN) | (write_pending ? POLLOUT : 0));
    pollfd fds[2] = {{fd, events, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(fds, 2, timeout_ms) < 0 && errno != EINTR) break;
    if (fds[1].revents != 0) break;
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0 && !closing) {
      const ssize_t n = ::recv(fd, s->read_space(), s->read_space_size(), 0);
      if (n == 0) break;
      if (n < 0 && errno != EAGAIN && errno != EINTR) break;
      if (n > 0 && !s->commit_read(static_cast<std::size_t>(n))) closing = true;
      if (s->heartbeat() != 0 && next_heartbeat == steady::time_point::max()) {
        next_heartbeat = steady::now();
      }
    } else if ((fds[0].revents & (POLLHUP | POLLERR)) != 0) {
      break;
    }
    // RabbitMQ's rhythm: a heartbeat every half interval.
    if (s->heartbeat() != 0 && steady::now() >= next_heartbeat) {
      s->queue_heartbeat();
      next_heartbeat = steady::now() + std::chrono::milliseconds(500 * s->heartbeat());
    }
  }
  add(s->totals(), reported);
  if (closing) {
    // Closing with unread input would reset the connection and could destroy the close-ok
    // still in flight; read until the client closes its side (briefly).
    ::shutdown(fd, SHUT_WR);
    const auto give_up = steady::now() + std::chrono::seconds(1);
    char sink[4096];
    while (steady::now() < give_up) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) < 0 && errno != EINTR) break;
      const ssize_t n = ::recv(fd, sink, sizeof sink, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
    }
  }
  ::close(fd);
}

}  // namespace warren::null_broker
