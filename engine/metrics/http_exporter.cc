#include "engine/metrics/http_exporter.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <exception>
#include <list>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "engine/io/server_socket.h"

namespace warren::metrics {
namespace {

using steady = std::chrono::steady_clock;

constexpr std::size_t max_head = 8192;
constexpr std::string_view content_type = "text/plain; version=0.0.4; charset=utf-8";

struct response {
  int status = 200;
  std::string_view reason = "OK";
  std::string body;
  bool head_only = false;
  bool allow = false;  // 405 names the methods served
  std::string_view type = content_type;
};

std::string serialize(const response& r) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + ' ' + std::string(r.reason) + "\r\n";
  out += "Content-Type: ";
  out += r.type;
  out += "\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\n";
  if (r.allow) out += "Allow: GET, HEAD\r\n";
  out += "Connection: close\r\n\r\n";
  if (!r.head_only) out += r.body;
  return out;
}

response error(int status, std::string_view reason, std::string body) {
  response r{.status = status, .reason = reason, .body = std::move(body)};
  r.type = "text/plain; charset=utf-8";
  if (r.body.empty() || r.body.back() != '\n') r.body += '\n';
  return r;
}

// The end of the request head (after its blank line), or npos. Bare LFs are accepted, as
// RFC 9112 allows a server to.
std::size_t head_end(std::string_view in) {
  for (std::size_t i = in.find('\n'); i != std::string_view::npos; i = in.find('\n', i + 1)) {
    if (i + 1 < in.size() && in[i + 1] == '\n') return i + 2;
    if (i + 2 < in.size() && in[i + 1] == '\r' && in[i + 2] == '\n') return i + 3;
  }
  return std::string_view::npos;
}

bool is_token_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

}  // namespace

struct http_exporter::impl {
  enum class phase { reading, writing, draining };
  struct connection {
    io::unique_fd fd;
    std::string in, out;
    std::size_t written = 0;
    steady::time_point deadline;
    phase state = phase::reading;
  };

  body_source source;
  http_exporter_options opts;
  io::unique_fd listener;
  io::unique_fd wake;  // eventfd: stop() writes it
  std::uint16_t bound_port = 0;
  std::atomic<std::uint64_t> served{0};
  std::atomic<bool> stopping{false};
  std::list<connection> conns;
  std::mutex stop_mu;  // stop() from several threads at once joins once
  std::thread thread;

  response answer(std::string_view head) {
    const std::size_t eol = head.find('\n');
    std::string_view line = head.substr(0, eol);
    if (line.ends_with('\r')) line.remove_suffix(1);
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
      return error(400, "Bad Request", "malformed request line");
    const std::string_view method = line.substr(0, sp1);
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (method.empty() || !std::all_of(method.begin(), method.end(), is_token_char) ||
        target.empty() || !version.starts_with("HTTP/1."))
      return error(400, "Bad Request", "malformed request line");
    const bool head_only = method == "HEAD";
    if (method != "GET" && !head_only) {
      response r = error(405, "Method Not Allowed", "only GET and HEAD are served");
      r.allow = true;
      return r;
    }
    const std::string_view path = target.substr(0, target.find('?'));
    if (path != opts.path) {
      response r = error(404, "Not Found", "not found; metrics are at " + opts.path);
      r.head_only = head_only;
      return r;
    }
    response r;
    try {
      r.body = source();
    } catch (const std::exception& e) {
      r = error(500, "Internal Server Error", std::string("metrics: ") + e.what());
    } catch (...) {
      r = error(500, "Internal Server Error", "metrics: unknown error");
    }
    r.head_only = head_only;
    return r;
  }

  void respond(connection& c, const response& r) {
    c.out = serialize(r);
    c.written = 0;
    c.state = phase::writing;
    served.fetch_add(1, std::memory_order_relaxed);
  }

  // Returns false when the connection is done with (closed).
  bool on_readable(connection& c) {
    std::array<char, 4096> buf;
    for (;;) {
      std::error_code ec;
      const std::ptrdiff_t n = io::read_some(c.fd.get(), buf, ec);
      if (n < 0) return ec == std::errc::operation_would_block;
      if (n == 0) return c.state == phase::writing;  // EOF: draining ends, reading gives up
      if (c.state != phase::reading) continue;       // a body or pipelined bytes: not served
      c.in.append(buf.data(), static_cast<std::size_t>(n));
      const std::size_t end = head_end(c.in);
      if (end != std::string::npos && end <= max_head) {
        respond(c, answer(std::string_view(c.in).substr(0, end)));
        return on_writable(c);
      }
      if (c.in.size() > max_head) {
        respond(c, error(431, "Request Header Fields Too Large", "request head over 8 KiB"));
        return on_writable(c);
      }
    }
  }

  bool on_writable(connection& c) {
    while (c.written < c.out.size()) {
      std::error_code ec;
      const std::string_view rest = std::string_view(c.out).substr(c.written);
      const std::ptrdiff_t n = io::write_some(c.fd.get(), rest, ec);
      if (n < 0) return ec == std::errc::operation_would_block;
      c.written += static_cast<std::size_t>(n);
    }
    // Written: end our side, then read until the client closes, so that unread request bytes
    // do not turn our close into a reset that could destroy the response in flight.
    io::shutdown_write(c.fd.get());
    c.state = phase::draining;
    return true;
  }

  void accept_all() {
    while (conns.size() < opts.max_connections) {
      std::error_code ec;
      io::unique_fd fd = io::accept_connection(listener.get(), ec);
      if (!fd.valid()) return;  // none waiting, or EMFILE & co: poll again later
      conns.push_back({.fd = std::move(fd), .deadline = steady::now() + opts.request_timeout});
    }
  }

  void run() {
    std::vector<pollfd> fds;
    std::vector<std::list<connection>::iterator> which;
    while (!stopping.load(std::memory_order_acquire)) {
      fds.clear();
      which.clear();
      fds.push_back({wake.get(), POLLIN, 0});
      const bool room = conns.size() < opts.max_connections;
      fds.push_back({listener.get(), static_cast<short>(room ? POLLIN : 0), 0});
      steady::time_point next = steady::time_point::max();
      for (auto it = conns.begin(); it != conns.end(); ++it) {
        fds.push_back(
            {it->fd.get(), static_cast<short>(it->state == phase::writing ? POLLOUT : POLLIN), 0});
        which.push_back(it);
        next = std::min(next, it->deadline);
      }
      const int timeout = io::poll_timeout_ms(next);
      const int rc = ::poll(fds.data(), fds.size(), timeout);
      if (rc < 0 && errno != EINTR) break;  // cannot happen with valid fds; do not spin
      if (fds[0].revents) break;
      const steady::time_point now = steady::now();
      for (std::size_t i = 0; i < which.size(); ++i) {
        auto it = which[i];
        const short ev = fds[i + 2].revents;
        bool keep = true;
        if (ev & (POLLERR | POLLNVAL)) {
          keep = false;
        } else if (ev) {
          keep = it->state == phase::writing ? on_writable(*it) : on_readable(*it);
        }
        if (keep && now >= it->deadline) keep = false;
        if (!keep) conns.erase(it);
      }
      if (fds[1].revents & POLLIN) accept_all();
    }
    conns.clear();
  }
};

http_exporter::http_exporter(body_source source, http_exporter_options options)
    : impl_(std::make_unique<impl>()) {
  if (options.path.empty() || options.path.front() != '/')
    throw std::invalid_argument("metrics exporter: path must start with '/': '" + options.path +
                                "'");
  if (options.max_connections == 0) options.max_connections = 1;
  impl_->source = std::move(source);
  impl_->opts = std::move(options);
  io::io_error err;
  impl_->listener = io::listen_tcp({impl_->opts.host, impl_->opts.port}, 64, err);
  if (!impl_->listener.valid())
    throw std::system_error(err.code, "metrics exporter: " + err.message);
  impl_->bound_port = io::local_port(impl_->listener.get());
  impl_->wake = io::unique_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl_->wake.valid())
    throw std::system_error(errno, std::system_category(), "metrics exporter: eventfd");
  impl_->thread = std::thread([p = impl_.get()] { p->run(); });
}

http_exporter::~http_exporter() {
  stop();
}

std::uint16_t http_exporter::port() const noexcept {
  return impl_->bound_port;
}

std::uint64_t http_exporter::requests_served() const noexcept {
  return impl_->served.load(std::memory_order_relaxed);
}

void http_exporter::stop() noexcept {
  std::lock_guard lock(impl_->stop_mu);
  if (!impl_->thread.joinable()) return;
  impl_->stopping.store(true, std::memory_order_release);
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(impl_->wake.get(), &one, sizeof one);
  impl_->thread.join();
  impl_->listener.reset();
}

}  // namespace warren::metrics
