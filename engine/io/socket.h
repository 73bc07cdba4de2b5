// TCP sockets for both faces of the client: the blocking connection and the epoll engine.
//
// connect_tcp() resolves a host over AF_UNSPEC, tries each address in turn until one accepts
// or the deadline passes, and returns a connected socket that is and stays non-blocking:
// callers wait with wait_fd() (poll) against a deadline, or register the fd with epoll.
// Socket options follow py-amqp's transport: SO_KEEPALIVE, TCP_NODELAY, TCP_USER_TIMEOUT
// 1000 ms, TCP_KEEPIDLE 60 s, TCP_KEEPINTVL 10 s, TCP_KEEPCNT 9, then the user's settings,
// which override a default with the same level and name.
//
// Thread rules: every function here is reentrant; a unique_fd is owned by one thread at a time.
// Name resolution uses getaddrinfo(), which blocks and does not honour the deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/io/error.h"

namespace warren::io {

using time_point = std::chrono::steady_clock::time_point;

inline constexpr std::uint16_t default_amqp_port = 5672;
inline constexpr std::uint16_t default_amqps_port = 5671;

struct host_port {
  std::string host;  // a name or an IP literal, without IPv6 brackets
  std::uint16_t port = default_amqp_port;
  bool operator==(const host_port&) const = default;
};

// Parses "host", "host:port", "[v6]", "[v6]:port" and a bare IPv6 literal such as "::1"
// (more than one colon and no brackets: the whole text is the host). The port defaults to
// `default_port`. Errors: io_errc::bad_address for an empty host, a port that is not a number
// in 1..65535, or an unbalanced bracket; `out` is then unchanged.
io_error parse_host_port(std::string_view text, std::uint16_t default_port, host_port& out);

// True when `host` is an IPv4 or IPv6 address literal (no brackets), not a name.
bool is_ip_literal(std::string_view host) noexcept;

// "host:port", with brackets around an IPv6 literal: "[::1]:5672".
std::string format_host_port(std::string_view host, std::uint16_t port);

// One setsockopt(fd, level, name, &value, sizeof(int)).
struct socket_option {
  int level = 0;
  int name = 0;
  int value = 0;
  bool operator==(const socket_option&) const = default;
};

// py-amqp's defaults, in the order they are applied.
std::vector<socket_option> default_socket_settings();

// The defaults with `user` applied on top: an entry with the level and name of a default
// replaces its value in place; any other entry is appended, in the user's order. Without
// `user_timeout`, the default TCP_USER_TIMEOUT is left out unless `user` sets it: with it the
// kernel aborts a connection (ETIMEDOUT) whose peer has kept its receive window shut for 1 s,
// which a slow or alarmed (blocked) RabbitMQ does; the async engine leaves dead-peer detection
// to heartbeats.
std::vector<socket_option> effective_socket_settings(std::span<const socket_option> user,
                                                     bool user_timeout = true);

// Owns a file descriptor; closes it on destruction. Movable, not copyable.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(other.release()) {}
  unique_fd& operator=(unique_fd&& other) noexcept;
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  int release() noexcept;
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// Resolves `peer.host` and connects to the first address that accepts before `deadline`
// (time_point::max() waits as long as the kernel does). On success returns the connected,
// non-blocking, close-on-exec socket with `settings` applied (usually
// effective_socket_settings(...)). On failure returns an invalid unique_fd and sets `err`:
//   - resolve_category() code: "resolve nosuch.invalid: Name or service not known";
//   - system_category() errno of the last address tried (ECONNREFUSED, ENETUNREACH, ...):
//     "connect to 127.0.0.1:5999: Connection refused" (each address is named when the host
//     resolved to more than one, or to an address different from the host text);
//   - io_errc::timeout: "connect to 127.0.0.1:5999: connect timeout after 2000 ms";
//   - system_category() errno of a setsockopt that failed, naming the option.
unique_fd connect_tcp(const host_port& peer, std::span<const socket_option> settings,
                      time_point deadline, io_error& err);

// Waits until `fd` reports one of `events` (POLLIN, POLLOUT), an error or a hangup, or until
// `deadline`. Returns an empty error_code when the fd is ready (a pending socket error is then
// left for the next call on it to report), io_errc::timeout when the deadline passed first, or
// the errno of poll(). EINTR is retried.
std::error_code wait_fd(int fd, short events, time_point deadline);

// Milliseconds from now to `deadline` for poll(): 0 when passed, -1 for time_point::max(),
// rounded up so that a wait never ends before its deadline.
int poll_timeout_ms(time_point deadline) noexcept;

}  // namespace warren::io
