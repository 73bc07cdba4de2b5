#include "engine/io/transport.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

namespace warren::io {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr std::string_view read_step = "read from";
constexpr std::string_view write_step = "write to";
constexpr std::string_view handshake_step = "TLS handshake with";

// A TLS record carries at most 16 KiB of plaintext; gathering small buffers up to that size
// saves a record header and MAC per buffer.
constexpr std::size_t tls_record_plaintext = 16 * 1024;
// Ciphertext buffered before it is sent, so that a large write_all does not grow unbounded.
constexpr std::size_t tls_flush_threshold = 64 * 1024;
// Room for one full TLS record with its header and expansion.
constexpr std::size_t cipher_in_size = 16 * 1024 + 512;
// iovecs handed to one sendmsg; well under IOV_MAX (1024).
constexpr std::size_t iov_batch = 64;

time_point deadline_after(milliseconds timeout) {
  auto now = steady_clock::now();
  if (timeout == infinite ||
      timeout > std::chrono::duration_cast<milliseconds>(time_point::max() - now))
    return time_point::max();
  return now + std::max(timeout, milliseconds::zero());
}

std::string timeout_text(milliseconds timeout) {
  return "timeout after " + std::to_string(timeout.count()) + " ms";
}

}  // namespace

io_error transport::step_error(std::error_code code, std::string_view step,
                               std::string_view what) const {
  std::string msg(step);
  msg.append(" ").append(format_host_port(peer_.host, peer_.port)).append(": ").append(what);
  return {code, std::move(msg)};
}

io_error transport::connect(const host_port& peer, const transport_options& options) {
  return connect(peer, options, deadline_after(options.connect_timeout));
}

io_error transport::connect(const host_port& peer, const transport_options& options,
                            time_point deadline) {
  close();
  peer_ = peer;
  read_timeout_ = options.read_timeout;
  write_timeout_ = options.write_timeout;
  read_while_writing_ = options.read_while_writing;
  stash_.clear();
  stash_head_ = 0;

  // The TLS context first: a configuration mistake needs no network round trip to show.
  std::shared_ptr<const tls_context> context = options.shared_tls;
  io_error err;
  if (!context && options.tls) {
    context = tls_context::create(*options.tls, err);
    if (err) return err;
  }

  std::vector<socket_option> settings = effective_socket_settings(options.socket_settings);
  fd_ = connect_tcp(peer, settings, deadline, err);
  if (err) return err;
  if (!context) return {};

  tls_ = tls_session::create(std::move(context), peer.host, err);
  if (!err) {
    milliseconds timeout = tls_->options().handshake_timeout;
    err = handshake(deadline_after(timeout), timeout);
  }
  if (err) {
    tls_.reset();
    fd_.reset();
  }
  return err;
}

io_error transport::handshake(time_point deadline, milliseconds timeout) {
  cipher_in_.resize(cipher_in_size);
  for (;;) {
    switch (tls_->handshake()) {
      case handshake_status::done:
        return {};
      case handshake_status::want_write:
        if (io_error err = flush_tls(deadline, handshake_step, timeout)) return err;
        break;
      case handshake_status::want_read: {
        io_error err;
        std::size_t got =
            recv_raw(cipher_in_.data(), cipher_in_.size(), deadline, handshake_step, timeout, err);
        if (err.code == io_errc::eof || err.code == std::errc::connection_reset) {
          // Servers hang up on a client they reject; say where to look.
          std::string what =
              err.code == io_errc::eof ? "connection closed by peer" : err.code.message();
          return step_error(err.code, handshake_step,
                            what +
                                " during the handshake (is this the TLS port? was the "
                                "client certificate rejected?)");
        }
        if (err) return err;
        tls_->feed({cipher_in_.data(), got});
        break;
      }
      case handshake_status::error: {
        // Best effort: let the server see our alert, without waiting for the socket.
        std::string_view alert = tls_->pending_output();
        if (!alert.empty())
          (void)::send(fd_.get(), alert.data(), alert.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        return step_error(tls_->error().code, handshake_step, tls_->error().message);
      }
    }
  }
}

io_error transport::send_raw(const char* p, std::size_t n, time_point deadline,
                             std::string_view step, milliseconds timeout) {
  while (n > 0) {
    ssize_t sent = ::send(fd_.get(), p, n, MSG_NOSIGNAL);
    count_write(sent);
    if (sent > 0) {
      bytes_sent_ += static_cast<std::uint64_t>(sent);
      p += sent;
      n -= static_cast<std::size_t>(sent);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      std::error_code ec(errno, std::system_category());
      return step_error(ec, step, ec.message());
    }
    if (std::error_code ec = wait_writable(deadline))
      return step_error(ec, step, ec == io_errc::timeout ? timeout_text(timeout) : ec.message());
  }
  return {};
}

io_error transport::flush_tls(time_point deadline, std::string_view step, milliseconds timeout) {
  std::string_view out = tls_->pending_output();
  io_error err = send_raw(out.data(), out.size(), deadline, step, timeout);
  // On error the session's output is left as it is: the stream is broken anyway.
  if (!err) tls_->consume_output(out.size());
  return err;
}

std::size_t transport::recv_raw(char* buf, std::size_t n, time_point deadline,
                                std::string_view step, milliseconds timeout, io_error& err) {
  for (;;) {
    ssize_t got = ::recv(fd_.get(), buf, n, 0);
    count_read(got);
    if (got > 0) {
      bytes_received_ += static_cast<std::uint64_t>(got);
      err = {};
      return static_cast<std::size_t>(got);
    }
    if (got == 0) {
      err = step_error(io_errc::eof, step, "connection closed by peer");
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      std::error_code ec(errno, std::system_category());
      err = step_error(ec, step, ec.message());
      return 0;
    }
    if (std::error_code ec = wait_fd(fd_.get(), POLLIN, deadline)) {
      err = step_error(ec, step, ec == io_errc::timeout ? timeout_text(timeout) : ec.message());
      return 0;
    }
  }
}

io_error transport::write_all(const iovec* iov, std::size_t count) {
  return write_all(iov, count, write_timeout_);
}

io_error transport::write_all(const iovec* iov, std::size_t count, milliseconds timeout) {
  if (!is_open()) return step_error(io_errc::not_connected, write_step, "not connected");
  time_point deadline = deadline_after(timeout);
  return tls_ ? write_tls(iov, count, deadline, timeout)
              : write_plain(iov, count, deadline, timeout);
}

io_error transport::write_plain(const iovec* iov, std::size_t count, time_point deadline,
                                milliseconds timeout) {
  std::array<iovec, iov_batch> batch;
  std::size_t next = 0;  // first iovec of `iov` not yet copied into the batch
  std::size_t used = 0;  // batch[first..used) is still to send
  std::size_t first = 0;
  for (;;) {
    if (first == used) {
      // Refill, skipping empty buffers (sendmsg of zero bytes would look like no progress).
      first = used = 0;
      while (next < count && used < batch.size()) {
        if (iov[next].iov_len > 0) batch[used++] = iov[next];
        ++next;
      }
      if (used == 0) return {};
    }
    msghdr msg{};
    msg.msg_iov = &batch[first];
    msg.msg_iovlen = used - first;
    ssize_t sent = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    count_write(sent);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        std::error_code ec(errno, std::system_category());
        return step_error(ec, write_step, ec.message());
      }
      if (std::error_code ec = wait_writable(deadline))
        return step_error(ec, write_step,
                          ec == io_errc::timeout ? timeout_text(timeout) : ec.message());
      continue;
    }
    bytes_sent_ += static_cast<std::uint64_t>(sent);
    // Drop the buffers sent in full, then trim the one sent in part.
    auto left = static_cast<std::size_t>(sent);
    while (first < used && left >= batch[first].iov_len) left -= batch[first++].iov_len;
    if (left > 0) {
      batch[first].iov_base = static_cast<char*>(batch[first].iov_base) + left;
      batch[first].iov_len -= left;
    }
  }
}

io_error transport::write_tls(const iovec* iov, std::size_t count, time_point deadline,
                              milliseconds timeout) {
  auto encrypt = [&](const char* p, std::size_t n) -> io_error {
    if (!tls_->write(p, n))
      return step_error(tls_->error().code, write_step, tls_->error().message);
    if (tls_->pending_output().size() >= tls_flush_threshold)
      return flush_tls(deadline, write_step, timeout);
    return {};
  };
  plain_out_.clear();
  for (std::size_t i = 0; i < count; ++i) {
    const char* p = static_cast<const char*>(iov[i].iov_base);
    std::size_t n = iov[i].iov_len;
    if (plain_out_.size() + n <= tls_record_plaintext) {
      plain_out_.append(p, n);
      continue;
    }
    if (io_error err = encrypt(plain_out_.data(), plain_out_.size())) return err;
    plain_out_.clear();
    if (n >= tls_record_plaintext) {
      if (io_error err = encrypt(p, n)) return err;
    } else {
      plain_out_.append(p, n);
    }
  }
  if (io_error err = encrypt(plain_out_.data(), plain_out_.size())) return err;
  plain_out_.clear();
  return flush_tls(deadline, write_step, timeout);
}

std::size_t transport::read_some(char* buf, std::size_t n, io_error& err) {
  return read_some(buf, n, read_timeout_, err);
}

std::size_t transport::read_some(char* buf, std::size_t n, milliseconds timeout, io_error& err) {
  if (!is_open()) {
    err = step_error(io_errc::not_connected, read_step, "not connected");
    return 0;
  }
  time_point deadline = deadline_after(timeout);
  if (stash_head_ < stash_.size() && n > 0) {
    const std::size_t k = std::min(n, stash_.size() - stash_head_);
    std::memcpy(buf, stash_.data() + stash_head_, k);
    stash_head_ += k;
    if (stash_head_ == stash_.size()) {
      stash_.clear();
      stash_head_ = 0;
    }
    err = {};
    return k;
  }
  if (!tls_) return recv_raw(buf, n, deadline, read_step, timeout, err);
  for (;;) {
    tls_read_result r = tls_->read(buf, n);
    if (!tls_->pending_output().empty()) {
      if ((err = flush_tls(deadline, read_step, timeout))) return 0;
    }
    switch (r.status) {
      case read_status::ok:
        err = {};
        return r.bytes;
      case read_status::closed:
        err = step_error(io_errc::eof, read_step, "connection closed by peer");
        return 0;
      case read_status::error:
        err = step_error(tls_->error().code, read_step, tls_->error().message);
        return 0;
      case read_status::want_read:
        break;
    }
    std::size_t got =
        recv_raw(cipher_in_.data(), cipher_in_.size(), deadline, read_step, timeout, err);
    if (err) return 0;
    tls_->feed({cipher_in_.data(), got});
  }
}

bool transport::wait_readable(milliseconds timeout, io_error& err) {
  err = {};
  if (!is_open()) {
    err = step_error(io_errc::not_connected, read_step, "not connected");
    return false;
  }
  if (has_buffered_input()) return true;
  std::error_code ec = wait_fd(fd_.get(), POLLIN, deadline_after(timeout));
  if (!ec) return true;
  if (ec != io_errc::timeout) err = step_error(ec, read_step, ec.message());
  return false;
}

bool transport::has_buffered_input() const noexcept {
  return stash_head_ < stash_.size() || (tls_ && tls_->has_buffered_input());
}

std::error_code transport::wait_writable(time_point deadline) {
  // Bounded: a peer that floods us while refusing our bytes does not grow memory without end.
  constexpr std::size_t stash_max = 1 << 20;
  bool reading = read_while_writing_;
  for (;;) {
    if (!reading || stash_.size() - stash_head_ >= stash_max) {
      return wait_fd(fd_.get(), POLLOUT, deadline);
    }
    pollfd p{fd_.get(), POLLIN | POLLOUT, 0};
    int wait_ms = -1;
    if (deadline != time_point::max()) {
      const auto left = std::chrono::ceil<milliseconds>(deadline - steady_clock::now());
      if (left <= milliseconds::zero()) return make_error_code(io_errc::timeout);
      wait_ms = static_cast<int>(std::min<milliseconds::rep>(left.count(), 1 << 30));
    }
    const int r = ::poll(&p, 1, wait_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      return {errno, std::system_category()};
    }
    if (r == 0) continue;  // the deadline check above ends the wait
    if (p.revents & POLLOUT) return {};
    if (p.revents & (POLLERR | POLLNVAL)) return wait_fd(fd_.get(), POLLOUT, deadline);
    char buf[16 * 1024];
    const ssize_t got = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    count_read(got);
    if (got > 0) {
      bytes_received_ += static_cast<std::uint64_t>(got);
      if (tls_) {
        tls_->feed({buf, static_cast<std::size_t>(got)});
      } else {
        stash_.append(buf, static_cast<std::size_t>(got));
      }
      continue;
    }
    if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    // EOF or an error: a later read reports it; the write keeps waiting for POLLOUT alone.
    reading = false;
  }
}

void transport::close() noexcept {
  if (tls_ && fd_.valid()) {
    tls_->shutdown();
    std::string_view out = tls_->pending_output();
    if (!out.empty()) {
      ssize_t sent = ::send(fd_.get(), out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      count_write(sent);
      if (sent > 0) bytes_sent_ += static_cast<std::uint64_t>(sent);
    }
  }
  tls_.reset();
  fd_.reset();
  stash_.clear();
  stash_head_ = 0;
}

}  // namespace warren::io
