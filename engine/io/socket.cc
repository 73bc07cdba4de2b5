#include "engine/io/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <memory>
#include <utility>

namespace warren::io {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

std::error_code errno_code(int e) {
  return {e, std::system_category()};
}

bool parse_port(std::string_view text, std::uint16_t& port) {
  unsigned value = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || p != end || value == 0 || value > 65535) return false;
  port = static_cast<std::uint16_t>(value);
  return true;
}

io_error bad_address(std::string_view text, std::string_view why) {
  return {io_errc::bad_address, "invalid address '" + std::string(text) + "': " + std::string(why)};
}

// The numeric form of a resolved address, for messages.
std::string numeric_host(const addrinfo& ai) {
  char buf[NI_MAXHOST];
  if (::getnameinfo(ai.ai_addr, ai.ai_addrlen, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) != 0)
    return "?";
  return buf;
}

struct addrinfo_deleter {
  void operator()(addrinfo* ai) const noexcept { ::freeaddrinfo(ai); }
};

// Connects one resolved address. Returns the socket, or sets `ec` (errno or io_errc::timeout).
unique_fd connect_one(const addrinfo& ai, time_point deadline, std::error_code& ec) {
  unique_fd fd(
      ::socket(ai.ai_family, ai.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai.ai_protocol));
  if (!fd.valid()) {
    ec = errno_code(errno);
    return {};
  }
  int rc;
  do rc = ::connect(fd.get(), ai.ai_addr, ai.ai_addrlen);
  while (rc != 0 && errno == EINTR);
  if (rc == 0) return fd;
  if (errno != EINPROGRESS) {
    ec = errno_code(errno);
    return {};
  }
  if ((ec = wait_fd(fd.get(), POLLOUT, deadline))) return {};
  int so_error = 0;
  socklen_t len = sizeof so_error;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) so_error = errno;
  if (so_error != 0) {
    ec = errno_code(so_error);
    return {};
  }
  return fd;
}

std::string option_name(const socket_option& o) {
  if (o.level == SOL_SOCKET && o.name == SO_KEEPALIVE) return "SO_KEEPALIVE";
  if (o.level == IPPROTO_TCP) {
    switch (o.name) {
      case TCP_NODELAY:
        return "TCP_NODELAY";
      case TCP_USER_TIMEOUT:
        return "TCP_USER_TIMEOUT";
      case TCP_KEEPIDLE:
        return "TCP_KEEPIDLE";
      case TCP_KEEPINTVL:
        return "TCP_KEEPINTVL";
      case TCP_KEEPCNT:
        return "TCP_KEEPCNT";
    }
  }
  return "option " + std::to_string(o.level) + "/" + std::to_string(o.name);
}

}  // namespace

io_error parse_host_port(std::string_view text, std::uint16_t default_port, host_port& out) {
  std::string_view host = text;
  std::uint16_t port = default_port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) return bad_address(text, "missing ']'");
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':' || !parse_port(rest.substr(1), port))
        return bad_address(text, "port must be a number from 1 to 65535");
    }
  } else if (auto colon = text.rfind(':');
             colon != std::string_view::npos && text.find(':') == colon) {
    // Exactly one colon: host:port. Several colons without brackets is a bare IPv6 literal.
    host = text.substr(0, colon);
    if (!parse_port(text.substr(colon + 1), port))
      return bad_address(text, "port must be a number from 1 to 65535");
  }
  if (host.empty()) return bad_address(text, "empty host");
  out.host = std::string(host);
  out.port = port;
  return {};
}

bool is_ip_literal(std::string_view host) noexcept {
  char buf[INET6_ADDRSTRLEN + 1];
  if (host.size() >= sizeof buf) return false;
  std::memcpy(buf, host.data(), host.size());
  buf[host.size()] = '\0';
  unsigned char addr[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, buf, addr) == 1 || ::inet_pton(AF_INET6, buf, addr) == 1;
}

std::string format_host_port(std::string_view host, std::uint16_t port) {
  std::string out;
  if (host.find(':') != std::string_view::npos)
    out.append("[").append(host).append("]");
  else
    out.append(host);
  return out.append(":").append(std::to_string(port));
}

std::vector<socket_option> default_socket_settings() {
  return {
      {SOL_SOCKET, SO_KEEPALIVE, 1},         {IPPROTO_TCP, TCP_NODELAY, 1},
      {IPPROTO_TCP, TCP_USER_TIMEOUT, 1000}, {IPPROTO_TCP, TCP_KEEPIDLE, 60},
      {IPPROTO_TCP, TCP_KEEPINTVL, 10},      {IPPROTO_TCP, TCP_KEEPCNT, 9},
  };
}

std::vector<socket_option> effective_socket_settings(std::span<const socket_option> user,
                                                     bool user_timeout) {
  std::vector<socket_option> out = default_socket_settings();
  if (!user_timeout) {
    std::erase_if(out, [](const socket_option& o) {
      return o.level == IPPROTO_TCP && o.name == TCP_USER_TIMEOUT;
    });
  }
  for (const socket_option& u : user) {
    auto same = std::find_if(out.begin(), out.end(), [&](const socket_option& o) {
      return o.level == u.level && o.name == u.name;
    });
    if (same != out.end())
      same->value = u.value;
    else
      out.push_back(u);
  }
  return out;
}

unique_fd& unique_fd::operator=(unique_fd&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

int unique_fd::release() noexcept {
  return std::exchange(fd_, -1);
}

void unique_fd::reset(int fd) noexcept {
  // close() is not retried on EINTR: on Linux the descriptor is released either way.
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

int poll_timeout_ms(time_point deadline) noexcept {
  if (deadline == time_point::max()) return -1;
  auto left = deadline - steady_clock::now();
  if (left <= steady_clock::duration::zero()) return 0;
  auto ms = std::chrono::ceil<milliseconds>(left).count();
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

std::error_code wait_fd(int fd, short events, time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int timeout = poll_timeout_ms(deadline);
    int rc = ::poll(&p, 1, timeout);
    if (rc > 0) return {};
    if (rc < 0 && errno != EINTR) return errno_code(errno);
    // A poll that returns 0 a hair early (timer slack) loops once more with a 0 ms timeout.
    if (rc == 0 && steady_clock::now() >= deadline) return io_errc::timeout;
  }
}

unique_fd connect_tcp(const host_port& peer, std::span<const socket_option> settings,
                      time_point deadline, io_error& err) {
  const time_point start = steady_clock::now();
  const std::string target = format_host_port(peer.host, peer.port);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* raw = nullptr;
  const std::string service = std::to_string(peer.port);
  int gai = ::getaddrinfo(peer.host.c_str(), service.c_str(), &hints, &raw);
  std::unique_ptr<addrinfo, addrinfo_deleter> list(raw);
  if (gai != 0) {
    std::error_code ec =
        gai == EAI_SYSTEM ? errno_code(errno) : std::error_code(gai, resolve_category());
    err = {ec, "resolve " + peer.host + ": " + ec.message()};
    return {};
  }

  std::size_t count = 0;
  for (addrinfo* ai = raw; ai; ai = ai->ai_next) ++count;

  std::string failures;
  std::error_code last;
  for (addrinfo* ai = raw; ai; ai = ai->ai_next) {
    std::error_code ec;
    unique_fd fd = connect_one(*ai, deadline, ec);
    if (ec == io_errc::timeout) {
      auto waited = std::chrono::ceil<milliseconds>(deadline - start).count();
      err = {ec,
             "connect to " + target + ": connect timeout after " + std::to_string(waited) + " ms"};
      return {};
    }
    if (!ec) {
      for (const socket_option& o : settings) {
        if (::setsockopt(fd.get(), o.level, o.name, &o.value, sizeof o.value) != 0) {
          std::error_code sec = errno_code(errno);
          err = {sec, "set " + option_name(o) + "=" + std::to_string(o.value) + " on " + target +
                          ": " + sec.message()};
          return {};
        }
      }
      err = {};
      return fd;
    }
    last = ec;
    std::string address = numeric_host(*ai);
    if (!failures.empty()) failures += "; ";
    if (count > 1 || address != peer.host)
      failures += format_host_port(address, peer.port) + " " + ec.message();
    else
      failures += ec.message();
  }
  err = {last, "connect to " + target + ": " + failures};
  return {};
}

}  // namespace warren::io
