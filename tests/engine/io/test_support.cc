#include "tests/engine/io/test_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace warren::io::test {
namespace {

std::string make_certs() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/warren-certs-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  // P-256 keys: fast to generate, and what the OpenSSL default accepts at any security level.
  // A script file, so that no shell quoting stands between us and openssl's arguments.
  const std::string script = tmpl + "/make.sh";
  std::FILE* f = std::fopen(script.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + script);
  std::fputs(
      "set -e\n"
      "k='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2'\n"
      "openssl req -x509 $k -keyout ca.key -out ca.pem -subj /CN=warren-test-ca\n"
      "openssl req -x509 $k -keyout other.key -out other_ca.pem -subj /CN=warren-other-ca\n"
      "openssl req -x509 $k -keyout server.key -out server.pem -subj /CN=localhost \\\n"
      "  -CA ca.pem -CAkey ca.key -addext subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
      "openssl req -x509 $k -keyout client.key -out client.pem -subj /CN=warren-client \\\n"
      "  -CA ca.pem -CAkey ca.key\n"
      "openssl pkey -in client.key -out client_enc.key -aes256 -passout pass:s3cret\n",
      f);
  std::fclose(f);
  std::string cmd = "cd '" + tmpl + "' && sh make.sh >openssl.log 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream log(tmpl + "/openssl.log");
    std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    throw std::runtime_error("certificate generation failed: " + cmd + "\n" + text);
  }
  return tmpl;
}

}  // namespace

const test_certs& certs() {
  static const test_certs c = [] {
    std::string d = make_certs();
    return test_certs{d,
                      d + "/ca.pem",
                      d + "/other_ca.pem",
                      d + "/server.pem",
                      d + "/server.key",
                      d + "/client.pem",
                      d + "/client.key",
                      d + "/client_enc.key"};
  }();
  return c;
}

listener::listener(int family, int backlog) : family_(family) {
  unique_fd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return;
  sockaddr_storage ss{};
  socklen_t len;
  if (family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof *a;
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return;
  if (::listen(fd.get(), backlog) != 0) return;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return;
  port_ = ntohs(family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                   : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  fd_ = std::move(fd);
}

host_port listener::address() const {
  return {family_ == AF_INET6 ? "::1" : "127.0.0.1", port_};
}

unique_fd listener::accept() {
  pollfd p{fd_.get(), POLLIN, 0};
  if (::poll(&p, 1, 10000) != 1) return {};
  return unique_fd(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
}

std::uint16_t closed_port() {
  // Bound but not listening: nothing else can take the port while we hold it, and a SYN to
  // it is answered with RST.
  static unique_fd holder;
  static std::uint16_t port = [] {
    holder.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(holder.get(), reinterpret_cast<sockaddr*>(&a), len) != 0 ||
        ::getsockname(holder.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("cannot bind a loopback port");
    return ntohs(a.sin_port);
  }();
  return port;
}

ssl_ctx_ptr make_server_ctx(const server_config& config) {
  ssl_ctx_ptr ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  const test_certs& c = certs();
  if (!ctx || SSL_CTX_use_certificate_chain_file(ctx.get(), c.server_cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx.get(), c.server_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_file(ctx.get(), c.ca.c_str()) != 1)
    throw std::runtime_error("test server context setup failed");
  // OpenSSL would otherwise complete the chain from the verify store.
  if (!config.send_ca) SSL_CTX_set_mode(ctx.get(), SSL_MODE_NO_AUTO_CHAIN);
  if (config.max_version) SSL_CTX_set_max_proto_version(ctx.get(), config.max_version);
  if (config.require_client_cert)
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return ctx;
}

std::string peer_common_name(SSL* ssl) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (!cert) return {};
  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  X509_free(cert);
  return cn;
}

tls_server::tls_server(const server_config& config, std::function<void(SSL*)> session)
    : ctx_(make_server_ctx(config)) {
  // The server's SSL writes with write(2); a client that has gone must not kill the test.
  std::signal(SIGPIPE, SIG_IGN);
  if (!listener_.ok()) throw std::runtime_error("cannot listen on 127.0.0.1");
  thread_ = std::thread([this, s = std::move(session)]() mutable { run(std::move(s)); });
}

tls_server::~tls_server() {
  join();
}

void tls_server::join() {
  if (thread_.joinable()) thread_.join();
}

void tls_server::run(std::function<void(SSL*)> session) {
  unique_fd fd = listener_.accept();
  if (!fd.valid()) {
    error = "no connection";
    return;
  }
  timeval tv{10, 0};  // a stuck test fails instead of hanging
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  SSL* ssl = SSL_new(ctx_.get());
  SSL_set_fd(ssl, fd.get());
  if (SSL_accept(ssl) == 1) {
    handshake_ok = true;
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    sni = name ? name : "";
    client_cn = peer_common_name(ssl);
    if (session) session(ssl);
    SSL_shutdown(ssl);
  } else {
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    sni = name ? name : "";
    unsigned long e = ERR_get_error();
    const char* reason = ERR_reason_error_string(e);
    error = reason ? reason : "handshake failed";
  }
  ERR_clear_error();
  SSL_free(ssl);
}

std::string ssl_read_exactly(SSL* ssl, std::size_t n) {
  std::string out(n, '\0');
  std::size_t have = 0;
  while (have < n) {
    std::size_t got = 0;
    if (SSL_read_ex(ssl, out.data() + have, n - have, &got) != 1) break;
    have += got;
  }
  out.resize(have);
  return out;
}

}  // namespace warren::io::test
