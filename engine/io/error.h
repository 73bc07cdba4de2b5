// Errors of the transport layer (engine/io).
//
// Every failing operation here yields an `io_error`: a std::error_code to branch on, plus a
// message for people that names the step and the peer ("connect to 127.0.0.1:5999: Connection
// refused"). The code's category says where it came from:
//   - std::system_category(): an errno from a socket call (ECONNREFUSED, ECONNRESET, ...);
//   - resolve_category(): a getaddrinfo() EAI_* code (EAI_NONAME, ...);
//   - io_category(): the io_errc values below.
// Nothing in engine/io throws; the blocking API above turns these into its own exceptions.
#pragma once

#include <string>
#include <system_error>

namespace warren::io {

enum class io_errc : int {
  ok = 0,
  timeout,        // the deadline of a connect, handshake, read or write passed
  eof,            // the peer closed the connection in an orderly way (FIN or TLS close_notify)
  bad_address,    // a host[:port] string that cannot be parsed
  not_connected,  // an operation on a transport that is closed or was never connected
  tls_config,     // a tls_options value OpenSSL refuses (CA file, key, cipher list, ...)
  tls_verify,     // the peer's certificate chain did not verify
  tls_hostname,   // the certificate is valid but not for the name or address we connected to
  tls_handshake,  // any other handshake failure (alerts, no common version or cipher)
  tls_protocol,   // a TLS error after the handshake (bad record, unexpected message)
};

const std::error_category& io_category() noexcept;
// getaddrinfo() return codes; message() is gai_strerror().
const std::error_category& resolve_category() noexcept;

inline std::error_code make_error_code(io_errc e) noexcept {
  return {static_cast<int>(e), io_category()};
}

// A failure with its explanation. Empty (false) means success.
struct io_error {
  std::error_code code;
  std::string message;

  explicit operator bool() const noexcept { return static_cast<bool>(code); }
};

}  // namespace warren::io

template <>
struct std::is_error_code_enum<warren::io::io_errc> : std::true_type {};
