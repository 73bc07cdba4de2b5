// The non-blocking face of the I/O layer: one TCP or TLS connection driven by an event loop
// (the async engine), as io::transport is the blocking one.
//
// Nothing here waits. Each call does what the socket allows now and says what happened as a
// value: progress, would_block (the event loop reports the socket readable or writable again
// later), eof, or error. With TLS the stream carries plaintext in and out of a tls_session
// (engine/io/tls.h) and moves ciphertext over the socket itself: handshake() first, then read()
// and write(); ciphertext the socket did not take yet waits inside (wants_write(), flush()).
//
// Thread rules: one thread at a time per stream (the connection's I/O thread). Nothing throws.
// Errors carry a message for people, as the async engine reports it when the connection ends:
// "connection closed by peer", "TLS closed by peer", "recv: Connection reset by peer",
// "send: Broken pipe", or the TLS session's message (see tls.h for its codes).
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/io/error.h"
#include "engine/io/socket.h"
#include "engine/io/tls.h"
#include "engine/metrics/metrics.h"

namespace warren::io {

enum class stream_status : std::uint8_t {
  ok,           // progress: `bytes` moved (handshake: complete)
  would_block,  // nothing (more) now: wait until the loop reports the socket ready again
  eof,          // the peer ended the stream (FIN, or TLS close_notify)
  error,        // failed for good: see `error`
};

struct stream_result {
  stream_status status = stream_status::ok;
  std::size_t bytes = 0;
  // read() on a plain socket: the kernel had less than asked for, so the socket is empty now
  // and another read would only find nothing (a system call saved per wake-up).
  bool drained = false;
  io_error error;  // eof and error: what happened, for people
};

class stream {
 public:
  stream() = default;
  // A stream over the connected socket `fd`, made non-blocking here; with `tls`, TLS over it
  // (call handshake() until it is done before reading or writing). Errors: the errno of fcntl.
  static stream open(unique_fd fd, std::unique_ptr<tls_session> tls, io_error& err);

  stream(stream&&) noexcept = default;
  stream& operator=(stream&&) noexcept = default;
  ~stream() = default;

  int fd() const noexcept { return fd_.get(); }
  bool valid() const noexcept { return fd_.valid(); }
  bool is_tls() const noexcept { return tls_ != nullptr; }
  // TLS before its handshake completed.
  bool handshaking() const noexcept { return handshaking_; }

  // Advances the TLS handshake as far as the socket allows: ok once complete (at once for plain
  // TCP); would_block to be called again when the socket is readable (or writable while
  // wants_write()); error with the session's reason, or eof when the peer hung up. The alert of a
  // failed handshake is sent (best effort) before error is returned.
  stream_result handshake();

  // Reads up to `n` octets of plaintext into `out`. ok with bytes > 0; would_block; eof; error.
  // With TLS, call again until would_block: plaintext may wait inside the session with nothing
  // left on the socket to wake the loop.
  stream_result read(char* out, std::size_t n);

  // Writes the plaintext of iov[0, count): ok with the octets taken from the front (maybe part
  // of them: the caller keeps the rest for the next call); would_block; error. With TLS every
  // octet is taken (encrypted into the session) and the ciphertext the socket did not take yet
  // waits for flush() (wants_write()).
  stream_result write(const iovec* iov, int count);

  // TLS: plaintext (or unprocessed ciphertext) waits inside the session: read() makes progress
  // without the socket, which will not wake the loop for it.
  bool buffered() const noexcept { return tls_ && !handshaking_ && tls_->has_buffered_input(); }
  // TLS: ciphertext waiting to go out.
  bool wants_write() const noexcept { return tls_ && !tls_->pending_output().empty(); }
  // Sends waiting ciphertext: ok when all went, would_block, error. Plain: ok.
  stream_result flush();

  // SO_RCVLOWAT: the loop reports the socket readable once this many octets wait (1: any).
  // Where the socket ignores it (a Unix socket) nothing changes.
  void set_receive_low_water(int octets) noexcept;

  // Closes the socket (the TLS session is dropped without close_notify).
  void close() noexcept;

  // Counts every read and write system call and the octets it moved (ciphertext with TLS) into
  // `m` (null: none, the default). `m` must outlive the stream or be replaced first.
  void set_metrics(metrics::connection_metrics* m) noexcept { metrics_ = m; }

 private:
  void count_read(ssize_t n) noexcept {
    if (metrics_ != nullptr) metrics_->on_socket_read(n > 0 ? static_cast<std::size_t>(n) : 0);
  }
  void count_write(ssize_t n) noexcept {
    if (metrics_ != nullptr) metrics_->on_socket_write(n > 0 ? static_cast<std::size_t>(n) : 0);
  }

  stream_result read_tls(char* out, std::size_t n);
  // recv of ciphertext into the session: ok (fed), would_block, eof, error.
  stream_result receive_ciphertext();

  unique_fd fd_;
  std::unique_ptr<tls_session> tls_;
  bool handshaking_ = false;
  std::vector<char> cipher_;  // TLS: one recv of ciphertext
  metrics::connection_metrics* metrics_ = nullptr;
};

}  // namespace warren::io
