#include "engine/io/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cstring>

#include "engine/io/socket.h"

namespace warren::io {
namespace {

// The reason of the first error in OpenSSL's queue, in words, and clears the queue. The
// first is the most specific; for file errors the errno text beats "system lib".
std::string take_openssl_reason(unsigned long* first_code = nullptr) {
  unsigned long first = 0;
  std::string sys;
  while (unsigned long e = ERR_get_error()) {
    if (!first) first = e;
    if (sys.empty() && ERR_GET_LIB(e) == ERR_LIB_SYS) sys = std::strerror(ERR_GET_REASON(e));
  }
  if (first_code) *first_code = first;
  if (!sys.empty()) return sys;
  if (!first) return "unknown error";
  const char* reason = ERR_reason_error_string(first);
  return reason ? reason : "error " + std::to_string(first);
}

int to_openssl(tls_version v) {
  return v == tls_version::tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

const char* version_name(tls_version v) {
  return v == tls_version::tls1_3 ? "1.3" : "1.2";
}

struct password_request {
  const std::optional<std::string>* password;
  bool asked = false;  // OpenSSL asks only for an encrypted key
};

// Hands OpenSSL the configured key password. Without one it answers "no password" at once,
// since OpenSSL's default would prompt on the terminal.
int password_callback(char* buf, int size, int /*rwflag*/, void* user) {
  auto* request = static_cast<password_request*>(user);
  request->asked = true;
  if (!request->password->has_value()) return -1;
  const std::string& p = **request->password;
  if (p.size() > static_cast<std::size_t>(size)) return -1;
  std::memcpy(buf, p.data(), p.size());
  return static_cast<int>(p.size());
}

std::string verify_message(long result, const std::string& name) {
  switch (result) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
      return "hostname mismatch: certificate is not valid for '" + name + "'";
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return "IP address mismatch: certificate is not valid for '" + name + "'";
  }
  std::string msg = "certificate verify failed: ";
  msg += X509_verify_cert_error_string(result);
  switch (result) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      msg += " (wrong CA?)";
      break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
    case X509_V_ERR_CERT_HAS_EXPIRED:
      msg += " (check the certificate dates and the clock)";
      break;
  }
  return msg;
}

// A hint for the failures users meet most, keyed by OpenSSL's reason code.
std::string reason_hint(int reason, tls_version min_version) {
  switch (reason) {
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      return " (the server requires a client certificate: set cert_file and key_file)";
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
      return std::string(" (no TLS version in common with the server; min_version is TLS ") +
             version_name(min_version) + ")";
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
      return " (the server did not answer in TLS: is this the TLS port?)";
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
      return " (the server rejected the client certificate)";
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
      return " (no cipher in common, or the server wants a client certificate)";
  }
  return "";
}

bool is_certificate_alert(int reason) {
  return reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED ||
         reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE || reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA ||
         reason == SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN;
}

}  // namespace

std::shared_ptr<const tls_context> tls_context::create(const tls_options& options, io_error& err) {
  std::shared_ptr<tls_context> self(new tls_context(options));
  auto fail = [&](std::string what) {
    err = {io_errc::tls_config, std::move(what) + ": " + take_openssl_reason()};
    return nullptr;
  };
  ERR_clear_error();
  self->ctx_ = SSL_CTX_new(TLS_client_method());
  if (!self->ctx_) return fail("cannot create TLS context");
  SSL_CTX* ctx = self->ctx_;
  if (!SSL_CTX_set_min_proto_version(ctx, to_openssl(options.min_version)))
    return fail("cannot set min_version");
  if (!options.ciphers.empty() && !SSL_CTX_set_cipher_list(ctx, options.ciphers.c_str()))
    return fail("invalid ciphers '" + options.ciphers + "'");
  if (!options.ciphersuites.empty() && !SSL_CTX_set_ciphersuites(ctx, options.ciphersuites.c_str()))
    return fail("invalid ciphersuites '" + options.ciphersuites + "'");

  if (!options.ca_file.empty() && !SSL_CTX_load_verify_file(ctx, options.ca_file.c_str()))
    return fail("cannot load CA file " + options.ca_file);
  if (!options.ca_dir.empty() && !SSL_CTX_load_verify_dir(ctx, options.ca_dir.c_str()))
    return fail("cannot load CA directory " + options.ca_dir);
  if (options.ca_file.empty() && options.ca_dir.empty() && !SSL_CTX_set_default_verify_paths(ctx))
    return fail("cannot load the default CA store");
  SSL_CTX_set_verify(ctx, options.verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);

  if (!options.cert_file.empty()) {
    const std::string& key = options.key_file.empty() ? options.cert_file : options.key_file;
    if (!SSL_CTX_use_certificate_chain_file(ctx, options.cert_file.c_str()))
      return fail("cannot load certificate file " + options.cert_file);
    // The callback and its data are set for this one call only.
    password_request request{&options.key_password};
    SSL_CTX_set_default_passwd_cb(ctx, password_callback);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, &request);
    int loaded = SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM);
    SSL_CTX_set_default_passwd_cb(ctx, nullptr);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, nullptr);
    if (!loaded) {
      unsigned long code = 0;
      std::string reason = take_openssl_reason(&code);
      if (ERR_GET_LIB(code) == ERR_LIB_X509 && ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH)
        err = {io_errc::tls_config,
               "key file " + key + " does not match certificate file " + options.cert_file};
      else
        err = {io_errc::tls_config,
               "cannot load key file " + key + ": " + reason +
                   (!request.asked         ? ""
                    : options.key_password ? " (wrong key_password?)"
                                           : " (encrypted key: set key_password)")};
      return nullptr;
    }
  } else if (!options.key_file.empty()) {
    err = {io_errc::tls_config, "key file " + options.key_file + " given without cert_file"};
    return nullptr;
  }
  err = {};
  return self;
}

tls_context::~tls_context() {
  SSL_CTX_free(ctx_);
}

std::unique_ptr<tls_session> tls_session::create(std::shared_ptr<const tls_context> context,
                                                 std::string_view host, io_error& err) {
  std::unique_ptr<tls_session> s(new tls_session());
  const tls_options& o = context->options();
  s->context_ = std::move(context);
  ERR_clear_error();
  s->ssl_ = SSL_new(s->context_->native_handle());
  s->rbio_ = BIO_new(BIO_s_mem());
  s->wbio_ = BIO_new(BIO_s_mem());
  if (!s->ssl_ || !s->rbio_ || !s->wbio_) {
    BIO_free(s->rbio_);
    BIO_free(s->wbio_);
    s->rbio_ = s->wbio_ = nullptr;
    err = {io_errc::tls_config, "cannot create TLS session: " + take_openssl_reason()};
    return nullptr;
  }
  // An empty input BIO means "no data yet", not end of stream.
  BIO_set_mem_eof_return(s->rbio_, -1);
  SSL_set_bio(s->ssl_, s->rbio_, s->wbio_);
  SSL_set_connect_state(s->ssl_);

  s->sni_ = o.server_name.value_or(is_ip_literal(host) ? std::string() : std::string(host));
  if (!s->sni_.empty() && is_ip_literal(s->sni_)) s->sni_.clear();
  if (!s->sni_.empty() && !SSL_set_tlsext_host_name(s->ssl_, s->sni_.c_str())) {
    err = {io_errc::tls_config, "invalid server_name '" + s->sni_ + "': " + take_openssl_reason()};
    return nullptr;
  }
  if (o.verify_peer && o.check_hostname) {
    s->verify_name_ = o.server_name && !o.server_name->empty() ? *o.server_name : host;
    X509_VERIFY_PARAM* param = SSL_get0_param(s->ssl_);
    int ok;
    if (is_ip_literal(s->verify_name_)) {
      ok = X509_VERIFY_PARAM_set1_ip_asc(param, s->verify_name_.c_str());
    } else {
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      ok = X509_VERIFY_PARAM_set1_host(param, s->verify_name_.c_str(), s->verify_name_.size());
    }
    if (!ok) {
      err = {io_errc::tls_config, "cannot check the certificate for '" + s->verify_name_ +
                                      "': " + take_openssl_reason()};
      return nullptr;
    }
  }
  err = {};
  return s;
}

tls_session::~tls_session() {
  // SSL_free frees both BIOs attached by SSL_set_bio.
  SSL_free(ssl_);
}

void tls_session::drain_output() {
  std::size_t pending = BIO_ctrl_pending(wbio_);
  if (pending == 0) return;
  if (out_pos_ == out_.size()) {
    out_.clear();
    out_pos_ = 0;
  }
  std::size_t old = out_.size();
  out_.resize(old + pending);
  int got = BIO_read(wbio_, out_.data() + old, static_cast<int>(pending));
  out_.resize(old + (got > 0 ? static_cast<std::size_t>(got) : 0));
}

void tls_session::consume_output(std::size_t n) noexcept {
  out_pos_ += std::min(n, out_.size() - out_pos_);
  if (out_pos_ == out_.size()) {
    out_.clear();
    out_pos_ = 0;
  }
}

void tls_session::fail(io_errc fallback) {
  // Without verify_peer the chain is still checked, but its result is advisory.
  long verify = context_->options().verify_peer ? SSL_get_verify_result(ssl_) : X509_V_OK;
  unsigned long code = 0;
  std::string reason = take_openssl_reason(&code);
  if (verify != X509_V_OK) {
    bool name = verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH;
    error_ = {name ? io_errc::tls_hostname : io_errc::tls_verify,
              verify_message(verify, verify_name_)};
    return;
  }
  int r = ERR_GET_REASON(code);
  io_errc ec = is_certificate_alert(r) ? io_errc::tls_handshake : fallback;
  error_ = {ec, reason + reason_hint(r, context_->options().min_version)};
}

handshake_status tls_session::handshake() {
  if (error_) return handshake_status::error;
  ERR_clear_error();
  int rc = SSL_do_handshake(ssl_);
  int ssl_err = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, rc);
  drain_output();
  if (ssl_err != SSL_ERROR_NONE && ssl_err != SSL_ERROR_WANT_READ &&
      ssl_err != SSL_ERROR_WANT_WRITE) {
    fail(io_errc::tls_handshake);
    return handshake_status::error;
  }
  if (!pending_output().empty()) return handshake_status::want_write;
  return rc == 1 ? handshake_status::done : handshake_status::want_read;
}

void tls_session::feed(std::string_view ciphertext) {
  while (!ciphertext.empty()) {
    int chunk = static_cast<int>(std::min<std::size_t>(ciphertext.size(), 1 << 30));
    int wrote = BIO_write(rbio_, ciphertext.data(), chunk);
    if (wrote <= 0) {
      error_ = {io_errc::tls_protocol, "cannot buffer TLS input: out of memory"};
      return;
    }
    ciphertext.remove_prefix(static_cast<std::size_t>(wrote));
  }
}

tls_read_result tls_session::read(char* out, std::size_t n) {
  if (error_) return {0, read_status::error};
  ERR_clear_error();
  std::size_t got = 0;
  int rc = SSL_read_ex(ssl_, out, n, &got);
  int ssl_err = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, rc);
  // Reading can produce output: a key update answer, or an alert.
  drain_output();
  switch (ssl_err) {
    case SSL_ERROR_NONE:
      return {got, read_status::ok};
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      return {0, read_status::want_read};
    case SSL_ERROR_ZERO_RETURN:
      return {0, read_status::closed};
  }
  fail(io_errc::tls_protocol);
  return {0, read_status::error};
}

bool tls_session::write(const char* data, std::size_t n) {
  if (error_) return false;
  if (n == 0) return true;
  ERR_clear_error();
  std::size_t wrote = 0;
  int rc = SSL_write_ex(ssl_, data, n, &wrote);
  drain_output();
  if (rc != 1) {
    if (SSL_get_shutdown(ssl_) & SSL_SENT_SHUTDOWN) {
      ERR_clear_error();
      error_ = {io_errc::not_connected, "TLS session was shut down"};
    } else {
      fail(io_errc::tls_protocol);
    }
    return false;
  }
  return true;
}

bool tls_session::has_buffered_input() const noexcept {
  return SSL_pending(ssl_) > 0 || BIO_ctrl_pending(rbio_) > 0;
}

void tls_session::shutdown() {
  ERR_clear_error();
  // Returns 0 (close_notify sent, the peer's not yet seen): we do not wait for the answer.
  if (SSL_shutdown(ssl_) < 0) ERR_clear_error();
  drain_output();
}

std::string_view tls_session::protocol() const noexcept {
  return SSL_get_version(ssl_);
}

}  // namespace warren::io
