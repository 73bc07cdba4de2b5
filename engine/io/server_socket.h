// The server side of TCP, for the small servers inside warren (the metrics exporter's
// /metrics endpoint): a listening socket and the non-blocking calls that serve a connection.
// The client side is socket.h.
//
// Thread rules: every function here is reentrant; a unique_fd is owned by one thread at a time.
// Name resolution uses getaddrinfo(), which blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>

#include "engine/io/error.h"
#include "engine/io/socket.h"

namespace warren::io {

// Resolves `where.host` (an IP literal or a name; "" for every local address) and binds the
// first address that takes it, with SO_REUSEADDR (a restarted server gets its port back while
// the last one's connections linger in TIME_WAIT), then listens with `backlog`. Port 0 picks a
// free port (local_port() tells which). The socket is non-blocking and close-on-exec. On failure
// returns an invalid unique_fd and sets `err`: "resolve nosuch.invalid: ...", or the errno of the
// step that failed, naming it and the address: "bind 127.0.0.1:9419: Address already in use".
unique_fd listen_tcp(const host_port& where, int backlog, io_error& err);

// The port a socket is bound to (0 when the fd is not a bound inet socket).
std::uint16_t local_port(int fd) noexcept;

// Accepts one waiting connection, non-blocking and close-on-exec. Returns an invalid unique_fd
// with an empty `ec` when none is waiting (or the one waiting was reset before it was
// accepted), with the errno otherwise (EMFILE, ...).
unique_fd accept_connection(int listen_fd, std::error_code& ec) noexcept;

// One non-blocking read of a connected stream socket: the bytes read (> 0), 0 at the end of the
// stream, or -1 with `ec` set (std::errc::operation_would_block when nothing is there yet).
// EINTR is retried.
std::ptrdiff_t read_some(int fd, std::span<char> buf, std::error_code& ec) noexcept;

// One non-blocking write: the bytes the socket took (>= 0), or -1 with `ec` set
// (operation_would_block when its buffer is full; EPIPE, ECONNRESET when the peer has gone).
// Never raises SIGPIPE. EINTR is retried.
std::ptrdiff_t write_some(int fd, std::span<const char> buf, std::error_code& ec) noexcept;

// Ends the sending direction (the peer reads end of stream) and keeps the socket open for
// reading. Errors are ignored: the peer may be gone already.
void shutdown_write(int fd) noexcept;

}  // namespace warren::io
