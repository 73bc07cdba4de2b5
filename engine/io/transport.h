// The blocking face of the I/O layer: one TCP or TLS connection, driven with deadlines.
//
// The blocking py-amqp-style connection reads and writes through a transport. The epoll
// engine uses the same pieces (connect_tcp, tls_session) directly with its own loop; the
// transport is just those pieces plus poll() waits.
//
// Timeouts are std::chrono::milliseconds; `infinite` waits for ever. Each operation computes
// its deadline once from std::chrono::steady_clock, so a timeout bounds the whole operation
// (for write_all: all of its bytes), not each system call.
//
// Thread rules: one thread at a time per transport (no internal locking). fd() may be handed
// to poll/epoll by that thread, but only the transport reads or writes the socket, since with
// TLS the bytes on the socket are not the bytes of the stream.
//
// Errors: every failure returns an io_error whose message names the step and the peer,
// e.g. "read from 127.0.0.1:5672: connection closed by peer". Codes:
//   io_errc::timeout        the operation's timeout passed (a read timeout leaves the
//                           transport usable; after a write timeout the stream is cut mid-
//                           frame and the caller must close);
//   io_errc::eof            orderly close by the peer (FIN, or TLS close_notify);
//   io_errc::not_connected  the transport is closed;
//   io_errc::tls_*          see tls.h; system_category()/resolve_category(): see socket.h.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/io/error.h"
#include "engine/io/socket.h"
#include "engine/io/tls.h"
#include "engine/metrics/metrics.h"

namespace warren::io {

inline constexpr std::chrono::milliseconds infinite = std::chrono::milliseconds::max();

struct transport_options {
  // Resolution and TCP connect, all addresses together (used by connect() without deadline).
  std::chrono::milliseconds connect_timeout{10000};
  // Defaults for read_some()/write_all() called without a timeout.
  std::chrono::milliseconds read_timeout = infinite;
  std::chrono::milliseconds write_timeout = infinite;
  // Applied over py-amqp's defaults, see effective_socket_settings().
  std::vector<socket_option> socket_settings;
  // TLS: a shared context if given, else one built from `tls` at connect(); neither: plain TCP.
  std::shared_ptr<const tls_context> shared_tls;
  std::optional<tls_options> tls;
  // While a write waits for the peer to take bytes, read what the peer sends meanwhile (up to
  // 1 MiB, kept for read_some) instead of leaving it in the socket. A broker that stops reading
  // (RabbitMQ in a memory alarm) first sends connection.blocked: with this the client can see
  // it while its own write is stalled, rather than only after the write gave up.
  bool read_while_writing = false;
};

class transport {
 public:
  transport() = default;
  ~transport() { close(); }
  transport(transport&&) noexcept = default;
  transport& operator=(transport&&) noexcept = default;

  // Connects to `peer` (closing any previous connection first): TCP until `deadline` (or
  // connect_timeout from now), then, with TLS, the handshake within its own
  // tls_options::handshake_timeout. Errors: those of connect_tcp() and tls_context::create(),
  // and for the handshake tls_session::handshake()'s, io_errc::timeout ("TLS handshake with
  // localhost:5671: timeout after 10000 ms") or io_errc::eof. On error the transport is closed.
  io_error connect(const host_port& peer, const transport_options& options);
  io_error connect(const host_port& peer, const transport_options& options, time_point deadline);

  // Sends all bytes of `iov[0..count)` in order, handling partial writes, within `timeout`
  // (default: options.write_timeout). Plain TCP uses sendmsg (writev with MSG_NOSIGNAL, so a
  // closed peer is EPIPE, not SIGPIPE); TLS packs small buffers into full records.
  io_error write_all(const iovec* iov, std::size_t count);
  io_error write_all(const iovec* iov, std::size_t count, std::chrono::milliseconds timeout);

  // Reads at least 1 and at most `n` bytes of stream data, waiting up to `timeout` (default:
  // options.read_timeout). Returns the count, or 0 with `err` set (io_errc::timeout,
  // io_errc::eof, errno, TLS errors).
  std::size_t read_some(char* buf, std::size_t n, io_error& err);
  std::size_t read_some(char* buf, std::size_t n, std::chrono::milliseconds timeout, io_error& err);

  // True when the socket (or TLS data already buffered) is readable within `timeout`; false
  // on timeout (err empty) or failure (err set). With TLS, readable socket bytes may be only
  // part of a record, so read_some() can still wait up to its own timeout.
  bool wait_readable(std::chrono::milliseconds timeout, io_error& err);
  // Stream data already read from the socket (by a write that waited, see
  // transport_options::read_while_writing, or buffered by TLS) that read_some returns at once.
  bool has_buffered_input() const noexcept;

  // Sends TLS close_notify without waiting for it to leave, then closes the socket.
  // Idempotent. The byte counters keep their values.
  void close() noexcept;

  int fd() const noexcept { return fd_.get(); }
  bool is_open() const noexcept { return fd_.valid(); }
  const host_port& peer() const noexcept { return peer_; }
  // The TLS session once connected with TLS (protocol(), server_name()), else nullptr.
  const tls_session* tls() const noexcept { return tls_.get(); }

  // Bytes that crossed the socket, TLS records and handshake included, since construction.
  std::uint64_t bytes_sent() const noexcept { return bytes_sent_; }
  std::uint64_t bytes_received() const noexcept { return bytes_received_; }

  // Counts every read and write system call on the connection and the octets it moved
  // (ciphertext with TLS) into `m` (null: none, the default), from now on, across reconnects.
  // `m` must outlive the transport or be replaced first.
  void set_metrics(metrics::connection_metrics* m) noexcept { metrics_ = m; }

 private:
  void count_read(ssize_t n) noexcept {
    if (metrics_ != nullptr) metrics_->on_socket_read(n > 0 ? static_cast<std::size_t>(n) : 0);
  }
  void count_write(ssize_t n) noexcept {
    if (metrics_ != nullptr) metrics_->on_socket_write(n > 0 ? static_cast<std::size_t>(n) : 0);
  }
  io_error handshake(time_point deadline, std::chrono::milliseconds timeout);
  io_error send_raw(const char* p, std::size_t n, time_point deadline, std::string_view step,
                    std::chrono::milliseconds timeout);
  io_error flush_tls(time_point deadline, std::string_view step, std::chrono::milliseconds timeout);
  io_error write_plain(const iovec* iov, std::size_t count, time_point deadline,
                       std::chrono::milliseconds timeout);
  io_error write_tls(const iovec* iov, std::size_t count, time_point deadline,
                     std::chrono::milliseconds timeout);
  std::size_t recv_raw(char* buf, std::size_t n, time_point deadline, std::string_view step,
                       std::chrono::milliseconds timeout, io_error& err);
  io_error step_error(std::error_code code, std::string_view step, std::string_view what) const;
  // Waits until the socket takes bytes again (or `deadline`), reading what arrives meanwhile
  // into stash_ (plain) or the TLS session when read_while_writing_ is on.
  std::error_code wait_writable(time_point deadline);

  unique_fd fd_;
  std::unique_ptr<tls_session> tls_;
  host_port peer_;
  std::chrono::milliseconds read_timeout_ = infinite;
  std::chrono::milliseconds write_timeout_ = infinite;
  std::vector<char> cipher_in_;  // ciphertext read from the socket, before feed()
  std::string plain_out_;        // small TLS writes gathered into one record
  bool read_while_writing_ = false;
  std::string stash_;           // plain stream bytes read while a write waited
  std::size_t stash_head_ = 0;  // stash_[stash_head_..] not yet returned by read_some
  std::uint64_t bytes_sent_ = 0;
  std::uint64_t bytes_received_ = 0;
  metrics::connection_metrics* metrics_ = nullptr;
};

}  // namespace warren::io
