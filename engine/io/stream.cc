#include "engine/io/stream.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace warren::io {
namespace {

constexpr std::size_t cipher_chunk = 64 * 1024;

stream_result failed(stream_status s, std::string message, std::error_code code) {
  stream_result r;
  r.status = s;
  r.error.code = code;
  r.error.message = std::move(message);
  return r;
}

stream_result from_errno(const char* call) {
  const int e = errno;
  return failed(stream_status::error, std::string(call) + ": " + std::strerror(e),
                std::error_code(e, std::system_category()));
}

stream_result would_block() {
  stream_result r;
  r.status = stream_status::would_block;
  return r;
}

stream_result progress(std::size_t bytes) {
  stream_result r;
  r.bytes = bytes;
  return r;
}

}  // namespace

stream stream::open(unique_fd fd, std::unique_ptr<tls_session> tls, io_error& err) {
  stream s;
  const int fl = ::fcntl(fd.get(), F_GETFL);
  if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK) < 0) {
    err.code = std::error_code(errno, std::system_category());
    err.message = "fcntl O_NONBLOCK: " + err.code.message();
    return s;
  }
  s.fd_ = std::move(fd);
  s.tls_ = std::move(tls);
  if (s.tls_) {
    s.handshaking_ = true;
    s.cipher_.resize(cipher_chunk);
  }
  return s;
}

void stream::close() noexcept {
  fd_.reset();
  tls_.reset();
  handshaking_ = false;
}

void stream::set_receive_low_water(int octets) noexcept {
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVLOWAT, &octets, sizeof octets);
}

stream_result stream::flush() {
  if (!tls_) return progress(0);
  std::size_t sent = 0;
  while (!tls_->pending_output().empty()) {
    const std::string_view p = tls_->pending_output();
    const ssize_t n = ::send(fd_.get(), p.data(), p.size(), MSG_NOSIGNAL);
    count_write(n);
    if (n > 0) {
      tls_->consume_output(static_cast<std::size_t>(n));
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      stream_result r = would_block();
      r.bytes = sent;
      return r;
    }
    return from_errno("send");
  }
  return progress(sent);
}

stream_result stream::receive_ciphertext() {
  for (;;) {
    const ssize_t n = ::recv(fd_.get(), cipher_.data(), cipher_.size(), 0);
    count_read(n);
    if (n > 0) {
      tls_->feed(std::string_view(cipher_.data(), static_cast<std::size_t>(n)));
      return progress(static_cast<std::size_t>(n));
    }
    if (n == 0) {
      return failed(stream_status::eof, "connection closed by peer", io_errc::eof);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return would_block();
    return from_errno("recv");
  }
}

stream_result stream::handshake() {
  if (!handshaking_) return progress(0);
  // handshake() must run again after its output is sent (want_write), not only when ciphertext
  // arrives: the client's last flight would otherwise never complete it.
  for (;;) {
    switch (tls_->handshake()) {
      case handshake_status::done:
        handshaking_ = false;
        return progress(0);
      case handshake_status::error: {
        flush();  // the alert, if any
        stream_result r;
        r.status = stream_status::error;
        r.error = tls_->error();
        return r;
      }
      case handshake_status::want_write: {
        stream_result f = flush();
        if (f.status != stream_status::ok) return f;
        continue;
      }
      case handshake_status::want_read: {
        stream_result f = flush();
        if (f.status == stream_status::error) return f;
        stream_result r = receive_ciphertext();
        if (r.status != stream_status::ok) return r;
        continue;
      }
    }
  }
}

stream_result stream::read(char* out, std::size_t n) {
  if (tls_) return read_tls(out, n);
  for (;;) {
    const ssize_t got = ::recv(fd_.get(), out, n, 0);
    count_read(got);
    if (got > 0) {
      stream_result r = progress(static_cast<std::size_t>(got));
      r.drained = static_cast<std::size_t>(got) < n;
      return r;
    }
    if (got == 0) {
      return failed(stream_status::eof, "connection closed by peer", io_errc::eof);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return would_block();
    return from_errno("recv");
  }
}

stream_result stream::read_tls(char* out, std::size_t n) {
  for (;;) {
    const tls_read_result r = tls_->read(out, n);
    switch (r.status) {
      case read_status::ok:
        return progress(r.bytes);
      case read_status::closed:
        return failed(stream_status::eof, "TLS closed by peer", io_errc::eof);
      case read_status::error: {
        stream_result e;
        e.status = stream_status::error;
        e.error = tls_->error();
        return e;
      }
      case read_status::want_read: {
        stream_result got = receive_ciphertext();
        if (got.status != stream_status::ok) return got;
        continue;
      }
    }
  }
}

stream_result stream::write(const iovec* iov, int count) {
  if (tls_) {
    std::size_t taken = 0;
    for (int i = 0; i < count; ++i) {
      if (!tls_->write(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len)) {
        stream_result e;
        e.status = stream_status::error;
        e.error = tls_->error();
        return e;
      }
      taken += iov[i].iov_len;
    }
    stream_result f = flush();
    if (f.status == stream_status::error) return f;
    return progress(taken);
  }
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<std::size_t>(count);
  for (;;) {
    const ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    count_write(n);
    if (n >= 0) return progress(static_cast<std::size_t>(n));
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return would_block();
    return from_errno("send");
  }
}

}  // namespace warren::io
