#include "engine/io/error.h"

#include <netdb.h>

namespace warren::io {
namespace {

class io_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "warren.io"; }
  std::string message(int ev) const override {
    switch (static_cast<io_errc>(ev)) {
      case io_errc::ok:
        return "success";
      case io_errc::timeout:
        return "timed out";
      case io_errc::eof:
        return "connection closed by peer";
      case io_errc::bad_address:
        return "invalid host[:port]";
      case io_errc::not_connected:
        return "transport is not connected";
      case io_errc::tls_config:
        return "invalid TLS configuration";
      case io_errc::tls_verify:
        return "certificate verify failed";
      case io_errc::tls_hostname:
        return "certificate hostname mismatch";
      case io_errc::tls_handshake:
        return "TLS handshake failed";
      case io_errc::tls_protocol:
        return "TLS protocol error";
    }
    return "unknown warren.io error";
  }
};

class resolve_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "getaddrinfo"; }
  std::string message(int ev) const override { return ::gai_strerror(ev); }
};

}  // namespace

const std::error_category& io_category() noexcept {
  static const io_category_impl instance;
  return instance;
}

const std::error_category& resolve_category() noexcept {
  static const resolve_category_impl instance;
  return instance;
}

}  // namespace warren::io
