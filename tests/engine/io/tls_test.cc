// The TLS session driven entirely in memory against an OpenSSL server on memory BIOs: no
// sockets, so every byte exchanged is under the test's control.
#include "engine/io/tls.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include "tests/engine/io/test_support.h"

namespace warren::io {
namespace {

using test::certs;

class memory_server {
 public:
  explicit memory_server(const test::server_config& config = {})
      : ctx_(test::make_server_ctx(config)), ssl_(SSL_new(ctx_.get())) {
    in_ = BIO_new(BIO_s_mem());
    out_ = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(in_, -1);
    SSL_set_bio(ssl_, in_, out_);
    SSL_set_accept_state(ssl_);
  }
  ~memory_server() { SSL_free(ssl_); }

  SSL* ssl() { return ssl_; }
  void receive(std::string_view bytes) {
    if (!bytes.empty()) BIO_write(in_, bytes.data(), static_cast<int>(bytes.size()));
  }
  std::string take_output() {
    std::string out(BIO_ctrl_pending(out_), '\0');
    if (!out.empty()) BIO_read(out_, out.data(), static_cast<int>(out.size()));
    return out;
  }
  void step() {
    if (!SSL_is_init_finished(ssl_)) SSL_do_handshake(ssl_);
  }
  std::string sni() {
    const char* name = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
    return name ? name : "";
  }
  // Decrypts what the client sent so far.
  std::string read_plaintext() {
    std::string all;
    char buf[4096];
    std::size_t got;
    while (SSL_read_ex(ssl_, buf, sizeof buf, &got) == 1) all.append(buf, got);
    return all;
  }
  void write_plaintext(std::string_view text) {
    std::size_t wrote;
    ASSERT_EQ(SSL_write_ex(ssl_, text.data(), text.size(), &wrote), 1);
  }

 private:
  test::ssl_ctx_ptr ctx_;
  SSL* ssl_;
  BIO* in_;
  BIO* out_;
};

// Moves bytes both ways (client output in chunks of `chunk` bytes) until the client settles.
handshake_status run_handshake(tls_session& client, memory_server& server,
                               std::size_t chunk = SIZE_MAX) {
  for (int round = 0; round < 10000; ++round) {
    handshake_status st = client.handshake();
    std::string_view out = client.pending_output();
    server.receive(out);
    client.consume_output(out.size());
    server.step();
    std::string back = server.take_output();
    for (std::size_t at = 0; at < back.size(); at += chunk) {
      client.feed(std::string_view(back).substr(at, chunk));
      if (at + chunk < back.size()) {
        EXPECT_NE(client.handshake(), handshake_status::error) << client.error().message;
      }
    }
    if (!back.empty()) continue;
    if (st == handshake_status::done || st == handshake_status::error) return st;
  }
  ADD_FAILURE() << "handshake did not settle";
  return handshake_status::error;
}

tls_options trusting(const std::string& ca) {
  tls_options o;
  o.ca_file = ca;
  return o;
}

std::unique_ptr<tls_session> make_client(const tls_options& options,
                                         std::string_view host = "localhost") {
  io_error err;
  auto ctx = tls_context::create(options, err);
  EXPECT_FALSE(err) << err.message;
  if (!ctx) return nullptr;
  auto session = tls_session::create(ctx, host, err);
  EXPECT_FALSE(err) << err.message;
  return session;
}

io_error context_error(const tls_options& options) {
  io_error err;
  auto ctx = tls_context::create(options, err);
  EXPECT_EQ(ctx, nullptr);
  return err;
}

std::string read_all(tls_session& client) {
  std::string all;
  char buf[64];
  for (;;) {
    tls_read_result r = client.read(buf, sizeof buf);
    if (r.status != read_status::ok) return all;
    all.append(buf, r.bytes);
  }
}

TEST(tls_session, completes_handshake_with_the_right_ca_and_carries_data_both_ways) {
  memory_server server;
  auto client = make_client(trusting(certs().ca));
  ASSERT_TRUE(client);
  ASSERT_EQ(run_handshake(*client, server), handshake_status::done);
  EXPECT_FALSE(client->error());
  EXPECT_EQ(client->protocol(), "TLSv1.3");

  ASSERT_TRUE(client->write("hello ", 6));
  ASSERT_TRUE(client->write("broker", 6));
  server.receive(client->pending_output());
  client->consume_output(client->pending_output().size());
  EXPECT_EQ(server.read_plaintext(), "hello broker");

  server.write_plaintext("hi client");
  client->feed(server.take_output());
  EXPECT_EQ(read_all(*client), "hi client");
  EXPECT_EQ(client->read(nullptr, 0).status, read_status::want_read);
}

TEST(tls_session, completes_handshake_with_input_fed_one_byte_at_a_time) {
  memory_server server;
  auto client = make_client(trusting(certs().ca));
  EXPECT_EQ(run_handshake(*client, server, 1), handshake_status::done);
}

TEST(tls_session, rejects_a_server_signed_by_another_ca_with_a_clear_message) {
  memory_server server({.send_ca = false});
  auto client = make_client(trusting(certs().other_ca));
  EXPECT_EQ(run_handshake(*client, server), handshake_status::error);
  EXPECT_EQ(client->error().code, io_errc::tls_verify);
  EXPECT_EQ(client->error().message,
            "certificate verify failed: unable to get local issuer certificate (wrong CA?)");
  // The failure is sticky.
  EXPECT_EQ(client->handshake(), handshake_status::error);
  EXPECT_EQ(client->read(nullptr, 0).status, read_status::error);
  EXPECT_FALSE(client->write("x", 1));
}

TEST(tls_session, blames_the_ca_when_the_server_sends_its_whole_chain) {
  memory_server server({.send_ca = true});
  auto client = make_client(trusting(certs().other_ca));
  EXPECT_EQ(run_handshake(*client, server), handshake_status::error);
  EXPECT_EQ(client->error().code, io_errc::tls_verify);
  EXPECT_EQ(client->error().message,
            "certificate verify failed: self-signed certificate in certificate chain (wrong CA?)");
}

TEST(tls_session, rejects_a_certificate_for_another_host_name) {
  memory_server server;
  auto client = make_client(trusting(certs().ca), "foo");
  EXPECT_EQ(run_handshake(*client, server), handshake_status::error);
  EXPECT_EQ(client->error().code, io_errc::tls_hostname);
  EXPECT_EQ(client->error().message, "hostname mismatch: certificate is not valid for 'foo'");
}

TEST(tls_session, checks_ip_literals_against_the_certificates_ip_addresses) {
  for (const char* ok : {"127.0.0.1", "::1"}) {
    memory_server server;
    auto client = make_client(trusting(certs().ca), ok);
    EXPECT_EQ(run_handshake(*client, server), handshake_status::done) << ok;
  }
  memory_server server;
  auto client = make_client(trusting(certs().ca), "10.9.8.7");
  EXPECT_EQ(run_handshake(*client, server), handshake_status::error);
  EXPECT_EQ(client->error().code, io_errc::tls_hostname);
  EXPECT_EQ(client->error().message,
            "IP address mismatch: certificate is not valid for '10.9.8.7'");
}

TEST(tls_session, skips_the_name_check_when_check_hostname_is_off) {
  memory_server server;
  tls_options o = trusting(certs().ca);
  o.check_hostname = false;
  auto client = make_client(o, "foo");
  EXPECT_EQ(run_handshake(*client, server), handshake_status::done);
}

TEST(tls_session, accepts_any_certificate_when_verify_peer_is_off) {
  memory_server server;
  tls_options o = trusting(certs().other_ca);
  o.verify_peer = false;
  auto client = make_client(o, "foo");
  EXPECT_EQ(run_handshake(*client, server), handshake_status::done);
}

TEST(tls_session, sends_the_host_as_sni_when_it_is_a_name) {
  memory_server server;
  auto client = make_client(trusting(certs().ca), "localhost");
  ASSERT_EQ(run_handshake(*client, server), handshake_status::done);
  EXPECT_EQ(server.sni(), "localhost");
  EXPECT_EQ(client->server_name(), "localhost");
}

TEST(tls_session, sends_no_sni_for_an_ip_literal_or_an_empty_server_name) {
  memory_server by_ip;
  auto a = make_client(trusting(certs().ca), "127.0.0.1");
  ASSERT_EQ(run_handshake(*a, by_ip), handshake_status::done);
  EXPECT_EQ(by_ip.sni(), "");

  memory_server disabled;
  tls_options o = trusting(certs().ca);
  o.server_name = "";
  auto b = make_client(o, "localhost");
  ASSERT_EQ(run_handshake(*b, disabled), handshake_status::done);
  EXPECT_EQ(disabled.sni(), "");
}

TEST(tls_session, server_name_sets_sni_and_the_name_checked) {
  tls_options o = trusting(certs().ca);
  o.server_name = "localhost";
  memory_server server;
  auto client = make_client(o, "192.0.2.1");  // the certificate does not cover this address
  ASSERT_EQ(run_handshake(*client, server), handshake_status::done);
  EXPECT_EQ(server.sni(), "localhost");

  o.server_name = "other.example";
  memory_server other;
  auto mismatch = make_client(o, "localhost");
  EXPECT_EQ(run_handshake(*mismatch, other), handshake_status::error);
  EXPECT_EQ(other.sni(), "other.example");
  EXPECT_EQ(mismatch->error().message,
            "hostname mismatch: certificate is not valid for 'other.example'");
}

TEST(tls_session, presents_the_client_certificate_when_the_server_requires_one) {
  memory_server server({.require_client_cert = true});
  tls_options o = trusting(certs().ca);
  o.cert_file = certs().client_cert;
  o.key_file = certs().client_key;
  auto client = make_client(o);
  ASSERT_EQ(run_handshake(*client, server), handshake_status::done);
  EXPECT_EQ(test::peer_common_name(server.ssl()), "warren-client");
}

TEST(tls_session, loads_an_encrypted_client_key_with_its_password) {
  memory_server server({.require_client_cert = true});
  tls_options o = trusting(certs().ca);
  o.cert_file = certs().client_cert;
  o.key_file = certs().client_key_encrypted;
  o.key_password = "s3cret";
  auto client = make_client(o);
  ASSERT_EQ(run_handshake(*client, server), handshake_status::done);
  EXPECT_EQ(test::peer_common_name(server.ssl()), "warren-client");
}

TEST(tls_session, reports_a_missing_client_certificate_when_the_server_alerts) {
  memory_server server({.require_client_cert = true});
  auto client = make_client(trusting(certs().ca));
  // In TLS 1.3 the client finishes first; the server's verdict arrives as an alert.
  ASSERT_EQ(run_handshake(*client, server), handshake_status::done);
  char buf[16];
  EXPECT_EQ(client->read(buf, sizeof buf).status, read_status::error);
  EXPECT_EQ(client->error().code, io_errc::tls_handshake);
  EXPECT_EQ(client->error().message,
            "tlsv13 alert certificate required (the server requires a client certificate: set "
            "cert_file and key_file)");
}

TEST(tls_session, negotiates_tls_1_2_when_the_server_tops_out_there) {
  memory_server server({.max_version = TLS1_2_VERSION});
  auto client = make_client(trusting(certs().ca));
  ASSERT_EQ(run_handshake(*client, server), handshake_status::done);
  EXPECT_EQ(client->protocol(), "TLSv1.2");
}

TEST(tls_session, enforces_min_version) {
  memory_server server({.max_version = TLS1_2_VERSION});
  tls_options o = trusting(certs().ca);
  o.min_version = tls_version::tls1_3;
  auto client = make_client(o);
  EXPECT_EQ(run_handshake(*client, server), handshake_status::error);
  EXPECT_EQ(client->error().code, io_errc::tls_handshake);
  EXPECT_NE(client->error().message.find("min_version is TLS 1.3"), std::string::npos)
      << client->error().message;
}

TEST(tls_session, points_at_the_port_when_the_server_does_not_speak_tls) {
  auto client = make_client(trusting(certs().ca));
  ASSERT_EQ(client->handshake(), handshake_status::want_write);
  client->consume_output(client->pending_output().size());
  EXPECT_EQ(client->handshake(), handshake_status::want_read);
  client->feed(std::string_view("AMQP\0\0\x09\x01", 8));
  EXPECT_EQ(client->handshake(), handshake_status::error);
  EXPECT_EQ(client->error().code, io_errc::tls_handshake);
  EXPECT_NE(client->error().message.find("is this the TLS port?"), std::string::npos)
      << client->error().message;
}

TEST(tls_session, reads_closed_after_the_peers_close_notify) {
  memory_server server;
  auto client = make_client(trusting(certs().ca));
  ASSERT_EQ(run_handshake(*client, server), handshake_status::done);
  server.write_plaintext("last");
  SSL_shutdown(server.ssl());
  client->feed(server.take_output());
  char buf[16];
  tls_read_result r = client->read(buf, sizeof buf);
  ASSERT_EQ(r.status, read_status::ok);
  EXPECT_EQ(std::string_view(buf, r.bytes), "last");
  EXPECT_EQ(client->read(buf, sizeof buf).status, read_status::closed);
}

TEST(tls_session, shutdown_queues_close_notify_and_stops_writes) {
  memory_server server;
  auto client = make_client(trusting(certs().ca));
  ASSERT_EQ(run_handshake(*client, server), handshake_status::done);
  client->shutdown();
  ASSERT_FALSE(client->pending_output().empty());
  server.receive(client->pending_output());
  char buf[8];
  std::size_t got;
  EXPECT_EQ(SSL_read_ex(server.ssl(), buf, sizeof buf, &got), 0);
  EXPECT_EQ(SSL_get_error(server.ssl(), 0), SSL_ERROR_ZERO_RETURN);
  EXPECT_FALSE(client->write("x", 1));
  EXPECT_EQ(client->error().code, io_errc::not_connected);
}

TEST(tls_session, hands_out_ciphertext_in_pieces) {
  memory_server server;
  auto client = make_client(trusting(certs().ca));
  ASSERT_EQ(client->handshake(), handshake_status::want_write);
  std::string hello(client->pending_output());
  ASSERT_GT(hello.size(), 10u);
  client->consume_output(10);
  EXPECT_EQ(client->pending_output(), std::string_view(hello).substr(10));
  client->consume_output(hello.size());  // more than is left: drops what is left
  EXPECT_TRUE(client->pending_output().empty());
}

TEST(tls_session, reports_buffered_input_until_it_is_read) {
  memory_server server;
  auto client = make_client(trusting(certs().ca));
  ASSERT_EQ(run_handshake(*client, server), handshake_status::done);
  // The server's session tickets were fed but not yet processed.
  EXPECT_TRUE(client->has_buffered_input());
  EXPECT_EQ(read_all(*client), "");
  EXPECT_FALSE(client->has_buffered_input());
  server.write_plaintext("0123456789");
  client->feed(server.take_output());
  EXPECT_TRUE(client->has_buffered_input());
  char buf[4];
  ASSERT_EQ(client->read(buf, sizeof buf).bytes, 4u);
  EXPECT_TRUE(client->has_buffered_input());
  EXPECT_EQ(read_all(*client), "456789");
  EXPECT_FALSE(client->has_buffered_input());
}

TEST(tls_context, names_a_missing_ca_file) {
  io_error err = context_error(trusting("/nonexistent/ca.pem"));
  EXPECT_EQ(err.code, io_errc::tls_config);
  EXPECT_EQ(err.message, "cannot load CA file /nonexistent/ca.pem: No such file or directory");
}

TEST(tls_context, names_a_ca_file_without_certificates) {
  io_error err = context_error(trusting(certs().client_key));
  EXPECT_EQ(err.code, io_errc::tls_config);
  EXPECT_EQ(err.message.rfind("cannot load CA file " + certs().client_key + ": ", 0), 0u)
      << err.message;
}

TEST(tls_context, names_a_missing_certificate_file) {
  tls_options o = trusting(certs().ca);
  o.cert_file = "/nonexistent/client.pem";
  io_error err = context_error(o);
  EXPECT_EQ(err.message,
            "cannot load certificate file /nonexistent/client.pem: No such file or directory");
}

TEST(tls_context, hints_at_the_password_of_an_encrypted_key) {
  tls_options o = trusting(certs().ca);
  o.cert_file = certs().client_cert;
  o.key_file = certs().client_key_encrypted;
  io_error none = context_error(o);
  EXPECT_EQ(none.code, io_errc::tls_config);
  EXPECT_NE(none.message.find("(encrypted key: set key_password)"), std::string::npos)
      << none.message;
  o.key_password = "wrong";
  io_error wrong = context_error(o);
  EXPECT_NE(wrong.message.find("(wrong key_password?)"), std::string::npos) << wrong.message;
  EXPECT_EQ(wrong.message.rfind("cannot load key file " + o.key_file + ": ", 0), 0u);
}

TEST(tls_context, rejects_a_key_that_does_not_match_the_certificate) {
  tls_options o = trusting(certs().ca);
  o.cert_file = certs().client_cert;
  o.key_file = certs().server_key;
  io_error err = context_error(o);
  EXPECT_EQ(err.message.rfind(
                "key file " + o.key_file + " does not match certificate file " + o.cert_file, 0),
            0u)
      << err.message;
}

TEST(tls_context, rejects_a_key_without_a_certificate) {
  tls_options o = trusting(certs().ca);
  o.key_file = certs().client_key;
  EXPECT_EQ(context_error(o).message, "key file " + o.key_file + " given without cert_file");
}

TEST(tls_context, rejects_unknown_ciphers) {
  tls_options o = trusting(certs().ca);
  o.ciphers = "NOT-A-CIPHER";
  EXPECT_EQ(context_error(o).message.rfind("invalid ciphers 'NOT-A-CIPHER': ", 0), 0u);
  o.ciphers.clear();
  o.ciphersuites = "TLS_NOPE";
  EXPECT_EQ(context_error(o).message.rfind("invalid ciphersuites 'TLS_NOPE': ", 0), 0u);
}

TEST(tls_context, uses_the_configured_ciphersuite) {
  tls_options o = trusting(certs().ca);
  o.ciphersuites = "TLS_CHACHA20_POLY1305_SHA256";
  memory_server server;
  auto client = make_client(o);
  ASSERT_EQ(run_handshake(*client, server), handshake_status::done);
  EXPECT_STREQ(SSL_CIPHER_get_name(SSL_get_current_cipher(server.ssl())),
               "TLS_CHACHA20_POLY1305_SHA256");
}

}  // namespace
}  // namespace warren::io
