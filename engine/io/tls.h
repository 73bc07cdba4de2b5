// TLS over OpenSSL, sans I/O: a tls_session never touches a socket. The caller moves bytes:
//
//   socket -> feed(ciphertext) -> session -> read(plaintext)
//   write(plaintext) -> session -> pending_output()/consume_output(n) -> socket
//
// so the blocking transport (transport.h) and the epoll engine drive the same code with their
// own buffers and their own waiting. OpenSSL sits on two memory BIOs.
//
// Thread rules: a tls_context is immutable after create() and may be shared by any number of
// sessions on any threads. A tls_session is used by one thread at a time.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "engine/io/error.h"

// OpenSSL's own struct tags, so that users of this header need not include OpenSSL.
struct ssl_ctx_st;
struct ssl_st;
struct bio_st;

namespace warren::io {

enum class tls_version { tls1_2, tls1_3 };

struct tls_options {
  // Trust anchors. With both empty, OpenSSL's default store (/etc/ssl/certs) is used.
  std::string ca_file;  // PEM bundle
  std::string ca_dir;   // c_rehash-style directory
  // Client certificate (for servers that require one, and SASL EXTERNAL). key_file defaults to
  // cert_file, as in Python's load_cert_chain.
  std::string cert_file;
  std::string key_file;
  std::optional<std::string> key_password;  // for an encrypted key; never prompted for
  // Verify the server's chain against the trust anchors. Off means any certificate is taken.
  bool verify_peer = true;
  // With verify_peer: the certificate must be valid for the name we connect to (server_name
  // when set, else the host), checked as an IP address when that is an IP literal.
  bool check_hostname = true;
  // SNI. Unset: the host, when it is a name (an IP literal is never sent as SNI, per RFC 6066).
  // Empty: no SNI.
  std::optional<std::string> server_name;
  std::string ciphers;       // TLS 1.2 cipher list (OpenSSL syntax); empty: OpenSSL's default
  std::string ciphersuites;  // TLS 1.3 suites; empty: OpenSSL's default
  tls_version min_version = tls_version::tls1_2;
  // Used by the transport: the handshake has its own deadline, apart from the TCP connect's.
  std::chrono::milliseconds handshake_timeout{10000};
};

// A configured SSL_CTX. create() loads every file at once, so configuration mistakes show
// before any connection is attempted.
class tls_context {
 public:
  // Errors (io_errc::tls_config), each naming the file or value:
  //   "cannot load CA file /x: No such file or directory", "cannot load CA directory ...",
  //   "cannot load certificate file ...", "cannot load key file ...: <reason> (wrong
  //   key_password?)" or "(encrypted key: set key_password)", "key file ... does not match
  //   certificate file ...", "key file ... given without cert_file",
  //   "invalid ciphers '...': no cipher match", "invalid ciphersuites '...': ...".
  static std::shared_ptr<const tls_context> create(const tls_options& options, io_error& err);

  tls_context(const tls_context&) = delete;
  tls_context& operator=(const tls_context&) = delete;
  ~tls_context();

  const tls_options& options() const noexcept { return options_; }
  ssl_ctx_st* native_handle() const noexcept { return ctx_; }

 private:
  explicit tls_context(const tls_options& options) : options_(options) {}
  ssl_ctx_st* ctx_ = nullptr;
  tls_options options_;
};

enum class handshake_status {
  done,        // handshake complete and all its output taken
  want_write,  // send pending_output() (then consume_output()), then call handshake() again
  want_read,   // output is flushed; feed() more ciphertext from the peer, then call again
  error,       // failed for good: see error(); pending_output() may hold an alert to send
};

enum class read_status {
  ok,         // `bytes` of plaintext were copied out
  want_read,  // no complete record buffered: feed() more ciphertext
  closed,     // the peer sent close_notify (orderly end of the TLS stream)
  error,      // see error()
};

struct tls_read_result {
  std::size_t bytes = 0;
  read_status status = read_status::want_read;
};

class tls_session {
 public:
  // A client session for a connection to `host` (the name or IP literal the user gave; it
  // sets SNI and the name checked, see tls_options). Error: io_errc::tls_config.
  static std::unique_ptr<tls_session> create(std::shared_ptr<const tls_context> context,
                                             std::string_view host, io_error& err);

  tls_session(const tls_session&) = delete;
  tls_session& operator=(const tls_session&) = delete;
  ~tls_session();

  // Advances the handshake with the ciphertext fed so far. Errors (in error()):
  //   io_errc::tls_verify   "certificate verify failed: unable to get local issuer
  //                          certificate (wrong CA?)"
  //   io_errc::tls_hostname "hostname mismatch: certificate is not valid for 'foo'"
  //                          (or "IP address mismatch: ..." for an IP literal)
  //   io_errc::tls_handshake an alert or negotiation failure, in OpenSSL's words with a hint
  //                          ("unsupported protocol (no TLS version in common ...)").
  handshake_status handshake();

  // Takes ciphertext received from the peer. The session copies it; any size is accepted.
  void feed(std::string_view ciphertext);

  // Copies up to `n` bytes of plaintext into `out`. Only after handshake() returned done.
  // After the handshake a TLS 1.3 server may still reject us (a missing client certificate
  // arrives as an alert here): such errors are io_errc::tls_handshake; others tls_protocol.
  tls_read_result read(char* out, std::size_t n);

  // Encrypts all `n` bytes into the pending output. Only after handshake() returned done.
  // Returns false (see error()) when the session has failed or been shut down.
  bool write(const char* data, std::size_t n);

  // Ciphertext waiting to be sent. The view is valid until the next call of any other
  // member function. consume_output(n) drops the first n bytes (n <= pending size).
  std::string_view pending_output() const noexcept {
    return std::string_view(out_).substr(out_pos_);
  }
  void consume_output(std::size_t n) noexcept;

  // True when read() can make progress without more input: decrypted bytes or unprocessed
  // ciphertext are held inside the session.
  bool has_buffered_input() const noexcept;

  // Queues close_notify into the pending output. Further writes fail.
  void shutdown();

  const io_error& error() const noexcept { return error_; }
  const tls_options& options() const noexcept { return context_->options(); }
  // "TLSv1.3", "TLSv1.2"; meaningful after the handshake.
  std::string_view protocol() const noexcept;
  // The SNI name sent, empty for none.
  const std::string& server_name() const noexcept { return sni_; }

 private:
  tls_session() = default;
  void drain_output();
  void fail(io_errc fallback);

  std::shared_ptr<const tls_context> context_;
  ssl_st* ssl_ = nullptr;
  bio_st* rbio_ = nullptr;  // ciphertext in, owned by ssl_
  bio_st* wbio_ = nullptr;  // ciphertext out, owned by ssl_
  std::string out_;
  std::size_t out_pos_ = 0;
  std::string sni_;
  std::string verify_name_;
  io_error error_;
};

}  // namespace warren::io
