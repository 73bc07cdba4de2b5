#include "engine/io/server_socket.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>

namespace warren::io {
namespace {

std::error_code errno_code(int e) {
  return {e, std::system_category()};
}

struct addrinfo_deleter {
  void operator()(addrinfo* ai) const noexcept { ::freeaddrinfo(ai); }
};

std::string numeric_host(const addrinfo& ai) {
  char buf[NI_MAXHOST];
  if (::getnameinfo(ai.ai_addr, ai.ai_addrlen, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) != 0)
    return "?";
  return buf;
}

}  // namespace

unique_fd listen_tcp(const host_port& where, int backlog, io_error& err) {
  err = {};
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* raw = nullptr;
  const std::string service = std::to_string(where.port);
  const int gai = ::getaddrinfo(where.host.empty() ? nullptr : where.host.c_str(), service.c_str(),
                                &hints, &raw);
  if (gai != 0) {
    const std::error_code ec =
        gai == EAI_SYSTEM ? errno_code(errno) : std::error_code(gai, resolve_category());
    err = {ec, "resolve " + where.host + ": " + ec.message()};
    return {};
  }
  std::unique_ptr<addrinfo, addrinfo_deleter> list(raw);
  for (const addrinfo* ai = list.get(); ai; ai = ai->ai_next) {
    const std::string target = format_host_port(numeric_host(*ai), where.port);
    auto fail = [&](const char* step) {
      const std::error_code ec = errno_code(errno);
      err = {ec, std::string(step) + " " + target + ": " + ec.message()};
    };
    unique_fd fd(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      fail("socket");
      continue;
    }
    const int one = 1;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
      fail("SO_REUSEADDR");
      continue;
    }
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      fail("bind");
      continue;
    }
    if (::listen(fd.get(), backlog) != 0) {
      fail("listen");
      continue;
    }
    err = {};
    return fd;
  }
  return {};
}

std::uint16_t local_port(int fd) noexcept {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(ss).sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(ss).sin6_port);
  return 0;
}

unique_fd accept_connection(int listen_fd, std::error_code& ec) noexcept {
  ec = {};
  for (;;) {
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return unique_fd(fd);
    switch (errno) {
      case EINTR:
        continue;
      case EAGAIN:
#if EWOULDBLOCK != EAGAIN
      case EWOULDBLOCK:
#endif
      case ECONNABORTED:
        return {};
      default:
        ec = errno_code(errno);
        return {};
    }
  }
}

std::ptrdiff_t read_some(int fd, std::span<char> buf, std::error_code& ec) noexcept {
  ec = {};
  for (;;) {
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    ec = errno == EAGAIN || errno == EWOULDBLOCK
             ? std::make_error_code(std::errc::operation_would_block)
             : errno_code(errno);
    return -1;
  }
}

std::ptrdiff_t write_some(int fd, std::span<const char> buf, std::error_code& ec) noexcept {
  ec = {};
  for (;;) {
    const ssize_t n = ::send(fd, buf.data(), buf.size(), MSG_NOSIGNAL);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    ec = errno == EAGAIN || errno == EWOULDBLOCK
             ? std::make_error_code(std::errc::operation_would_block)
             : errno_code(errno);
    return -1;
  }
}

void shutdown_write(int fd) noexcept {
  ::shutdown(fd, SHUT_WR);
}

}  // namespace warren::io
