// Loopback peers for the engine/io tests: test certificates made with the openssl CLI, a
// plain listening socket, and a one-connection TLS server built on OpenSSL directly.
#pragma once

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "engine/io/socket.h"

namespace warren::io::test {

// Generated once per test process into a fresh directory under $TEST_TMPDIR: a CA, an
// unrelated CA, a server certificate for localhost/127.0.0.1/::1 and a client certificate
// (CN warren-client), both signed by the CA, and the client key encrypted with "s3cret".
struct test_certs {
  std::string dir;
  std::string ca, other_ca;
  std::string server_cert, server_key;
  std::string client_cert, client_key, client_key_encrypted;
};
const test_certs& certs();

// A listening TCP socket on the loopback address of `family` (AF_INET: 127.0.0.1, AF_INET6:
// ::1), on a port the kernel picks.
class listener {
 public:
  explicit listener(int family = AF_INET, int backlog = 16);
  bool ok() const { return fd_.valid(); }
  std::uint16_t port() const { return port_; }
  host_port address() const;
  // Accepts one connection (blocking, at most 10 s). Invalid fd on timeout.
  unique_fd accept();

 private:
  unique_fd fd_;
  int family_;
  std::uint16_t port_ = 0;
};

// A port on 127.0.0.1 that nothing listens on.
std::uint16_t closed_port();

using ssl_ctx_ptr = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;

struct server_config {
  bool require_client_cert = false;
  int max_version = 0;   // 0: OpenSSL's default (TLS 1.3)
  bool send_ca = false;  // send the CA certificate after the server's own
};

// An SSL_CTX for the test server: server cert/key from certs(), the CA for client certs.
ssl_ctx_ptr make_server_ctx(const server_config& config);

// The CN of the certificate the peer of `ssl` presented, empty for none.
std::string peer_common_name(SSL* ssl);

// Serves one TLS connection on 127.0.0.1 in a thread: accept, handshake, then `session`
// (given the SSL after a successful handshake), then close_notify and close. Results are
// read after join().
class tls_server {
 public:
  tls_server(const server_config& config, std::function<void(SSL*)> session);
  ~tls_server();
  std::uint16_t port() const { return listener_.port(); }
  void join();

  bool handshake_ok = false;
  std::string sni;        // the SNI name the client sent, empty for none
  std::string client_cn;  // CN of the client certificate, empty for none
  std::string error;      // OpenSSL's reason when the handshake failed

 private:
  void run(std::function<void(SSL*)> session);
  ssl_ctx_ptr ctx_;
  listener listener_;
  std::thread thread_;
};

// Reads until `n` bytes or EOF from a blocking SSL; returns what was read.
std::string ssl_read_exactly(SSL* ssl, std::size_t n);

}  // namespace warren::io::test
