#include "engine/uri.h"

#include <gtest/gtest.h>

namespace warren {
namespace {

using namespace std::chrono_literals;

// The error parse_uri reports for `uri`, or "" when it parses.
std::string error_of(std::string_view uri) {
  connection_uri out;
  std::string error;
  return parse_uri(uri, out, error) ? std::string() : error;
}

void expect_error(std::string_view uri, std::string_view fragment) {
  std::string error = error_of(uri);
  EXPECT_NE(error.find(fragment), std::string::npos)
      << "URI " << uri << " gave error \"" << error << "\", expected it to contain \"" << fragment
      << "\"";
}

// ---- RabbitMQ URI spec, appendix A, row by row (absent components take the defaults) ----

struct spec_row {
  const char* uri;
  const char* user;
  const char* password;
  const char* host;
  std::uint16_t port;
  const char* vhost;
  const char* point;  // what the row shows
};

TEST(uri, parses_every_spec_appendix_a_example) {
  const spec_row rows[] = {
      {"amqp://user:pass@host:10000/vhost", "user", "pass", "host", 10000, "vhost", "full URI"},
      {"amqp://user%61:%61pass@ho%61st:10000/v%2fhost", "usera", "apass", "hoast", 10000, "v/host",
       "percent-decoding in every component"},
      {"amqp://", "guest", "guest", "localhost", 5672, "/", "all absent: defaults"},
      {"amqp://:@/", "", "", "localhost", 5672, "", "empty is not absent"},
      {"amqp://user@", "user", "guest", "localhost", 5672, "/", "absent password: default"},
      {"amqp://user:pass@", "user", "pass", "localhost", 5672, "/", "empty host: default"},
      {"amqp://host", "guest", "guest", "host", 5672, "/", "host only"},
      {"amqp://:10000", "guest", "guest", "localhost", 10000, "/", "port only"},
      {"amqp:///vhost", "guest", "guest", "localhost", 5672, "vhost", "vhost only"},
      {"amqp://host/", "guest", "guest", "host", 5672, "", "trailing slash: empty vhost"},
      {"amqp://host/%2f", "guest", "guest", "host", 5672, "/", "encoded slash: vhost /"},
      {"amqp://host/%2F", "guest", "guest", "host", 5672, "/", "upper-case escape"},
      {"amqp://[::1]", "guest", "guest", "::1", 5672, "/", "IPv6 literal, brackets removed"},
  };
  for (const auto& row : rows) {
    SCOPED_TRACE(std::string(row.uri) + ": " + row.point);
    auto u = parse_uri(row.uri);
    EXPECT_FALSE(u.tls);
    EXPECT_EQ(u.user, row.user);
    EXPECT_EQ(u.password, row.password);
    EXPECT_EQ(u.host, row.host);
    EXPECT_EQ(u.port, row.port);
    EXPECT_EQ(u.vhost, row.vhost);
  }
  EXPECT_EQ(parse_uri("amqp://"), connection_uri{});
}

// ---- scheme and port ----

TEST(uri, amqps_defaults_to_tls_port) {
  auto u = parse_uri("amqps://host");
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.port, 5671);
  EXPECT_EQ(parse_uri("amqps://host:5999").port, 5999);
}

TEST(uri, scheme_is_case_insensitive) {
  EXPECT_TRUE(parse_uri("AMQPS://host").tls);
  EXPECT_FALSE(parse_uri("Amqp://host").tls);
}

TEST(uri, rejects_other_schemes_naming_them) {
  expect_error("http://host", "unsupported scheme 'http'");
  expect_error("host:5672", "expected amqp:// or amqps://");
  expect_error("amqp:/host", "expected amqp:// or amqps://");
  expect_error("", "expected amqp:// or amqps://");
}

TEST(uri, empty_port_takes_default) {
  EXPECT_EQ(parse_uri("amqp://host:").port, 5672);
}

TEST(uri, rejects_bad_ports) {
  expect_error("amqp://host:0", "port must be a number from 1 to 65535");
  expect_error("amqp://host:65536", "port must be a number from 1 to 65535");
  expect_error("amqp://host:abc", "port must be");
  expect_error("amqp://host:+5", "port must be");
  expect_error("amqp://host:56:72", "port must be");
  expect_error("amqp://host:99999999999999999999999", "port must be");
  EXPECT_EQ(parse_uri("amqp://host:65535").port, 65535);
}

// ---- hosts ----

TEST(uri, ipv6_with_port_and_vhost) {
  auto u = parse_uri("amqp://u:p@[2001:db8::7]:5673/v");
  EXPECT_EQ(u.host, "2001:db8::7");
  EXPECT_EQ(u.port, 5673);
  EXPECT_EQ(u.vhost, "v");
}

TEST(uri, ipv6_zone_is_decoded) {
  EXPECT_EQ(parse_uri("amqp://[fe80::1%25eth0]:5672").host, "fe80::1%eth0");
}

TEST(uri, rejects_malformed_ipv6) {
  expect_error("amqp://[::1", "closing ']'");
  expect_error("amqp://[not:an:address]", "not an IPv6 address");
  expect_error("amqp://[]", "not an IPv6 address");
  expect_error("amqp://[::1]x", "only ':' and a port may follow");
  expect_error("amqp://[::1]:70000", "port must be");
  expect_error("amqp://[fe80::1%eth0]", "malformed percent-encoding in the IPv6 zone");
  expect_error("amqp://[fe80::1%25]", "malformed IPv6 zone");
}

TEST(uri, ipv4_host) {
  EXPECT_EQ(parse_uri("amqp://127.0.0.1:5672").host, "127.0.0.1");
}

TEST(uri, rejects_bad_characters_in_host) {
  expect_error("amqp://ho st", "character not allowed in the host");
  expect_error("amqp://ho[st", "character not allowed in the host");
  expect_error("amqp://ho%3Ast", "encoded ':' or NUL");
}

// ---- user info ----

TEST(uri, decodes_reserved_and_utf8_octets_in_credentials) {
  auto u = parse_uri("amqp://caf%C3%A9:p%40ss%2Fw%3Ard%25@host");
  EXPECT_EQ(u.user, "caf\xC3\xA9");
  EXPECT_EQ(u.password, "p@ss/w:rd%");
}

TEST(uri, password_may_hold_unencoded_colon_and_sub_delims) {
  auto u = parse_uri("amqp://user:a:b!$&'()*+,;=@host");
  EXPECT_EQ(u.user, "user");
  EXPECT_EQ(u.password, "a:b!$&'()*+,;=");
}

TEST(uri, rejects_malformed_percent_encoding) {
  expect_error("amqp://us%zzer@host", "malformed percent-encoding in the user name");
  expect_error("amqp://user:pw%4@host", "malformed percent-encoding in the password");
  expect_error("amqp://user:pw%@host", "malformed percent-encoding in the password");
  expect_error("amqp://host/v%G0", "malformed percent-encoding in the vhost");
  expect_error("amqp://host?heartbeat=%", "malformed percent-encoding in the query");
}

TEST(uri, rejects_nul_in_credentials) {
  expect_error("amqp://us%00er@host", "the user name must not contain NUL");
  expect_error("amqp://user:pa%00ss@host", "the password must not contain NUL");
}

TEST(uri, rejects_second_at_sign) {
  expect_error("amqp://user:p@ss@host", "more than one '@'");
}

TEST(uri, rejects_unencoded_characters_in_credentials) {
  expect_error("amqp://us er@host", "character not allowed in the user name");
  EXPECT_EQ(error_of("amqp://us:er@host"), "");
  expect_error("amqp://user:pa\"ss@host", "character not allowed in the password");
}

// ---- vhost ----

TEST(uri, rejects_multi_segment_vhost) {
  expect_error("amqp://host/a/b", "single path segment");
  expect_error("amqp://host//", "single path segment");
}

TEST(uri, vhost_allows_pchar_delimiters) {
  EXPECT_EQ(parse_uri("amqp://host/a:b@c!d").vhost, "a:b@c!d");
}

TEST(uri, vhost_is_at_most_255_octets) {
  std::string ok(255, 'v');
  EXPECT_EQ(parse_uri("amqp://host/" + ok).vhost, ok);
  expect_error("amqp://host/" + ok + "v", "longer than 255 octets");
  // The limit counts decoded octets: 255 "%41" escapes are fine.
  std::string encoded;
  for (int i = 0; i < 255; ++i) encoded += "%41";
  EXPECT_EQ(parse_uri("amqp://host/" + encoded).vhost, std::string(255, 'A'));
}

TEST(uri, rejects_fragment) {
  expect_error("amqp://host/v#frag", "fragment ('#')");
}

// ---- query parameters ----

TEST(uri, query_example_a_heartbeat_and_connection_timeout) {
  auto u = parse_uri("amqp://myhost?heartbeat=5&connection_timeout=10000");
  EXPECT_EQ(u.host, "myhost");
  EXPECT_EQ(u.vhost, "/");
  EXPECT_EQ(u.heartbeat, 5);
  EXPECT_EQ(u.connection_timeout, 10000ms);
}

TEST(uri, query_example_b_tls_with_peer_verification) {
  auto u = parse_uri(
      "amqps://myhost?cacertfile=/path/to/ca_certificate.pem"
      "&certfile=/path/to/client_certificate.pem&keyfile=/path/to/client_key.pem"
      "&verify=verify_peer&server_name_indication=myhost");
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.cacertfile, "/path/to/ca_certificate.pem");
  EXPECT_EQ(u.certfile, "/path/to/client_certificate.pem");
  EXPECT_EQ(u.keyfile, "/path/to/client_key.pem");
  EXPECT_EQ(u.verify, tls_verify::verify_peer);
  EXPECT_EQ(u.server_name_indication, "myhost");
}

TEST(uri, query_example_c_tls_without_peer_verification) {
  auto u = parse_uri("amqps://myhost?verify=verify_none&server_name_indication=disable");
  EXPECT_EQ(u.verify, tls_verify::verify_none);
  EXPECT_EQ(u.server_name_indication, "disable");
}

TEST(uri, absent_query_keys_stay_empty) {
  auto u = parse_uri("amqps://host");
  EXPECT_FALSE(u.heartbeat);
  EXPECT_FALSE(u.channel_max);
  EXPECT_FALSE(u.frame_max);
  EXPECT_FALSE(u.connection_timeout);
  EXPECT_FALSE(u.cacertfile);
  EXPECT_FALSE(u.certfile);
  EXPECT_FALSE(u.keyfile);
  EXPECT_FALSE(u.verify);
  EXPECT_FALSE(u.server_name_indication);
  EXPECT_TRUE(u.auth_mechanisms.empty());
}

TEST(uri, heartbeat_range) {
  EXPECT_EQ(parse_uri("amqp://h?heartbeat=0").heartbeat, 0);
  EXPECT_EQ(parse_uri("amqp://h?heartbeat=65535").heartbeat, 65535);
  expect_error("amqp://h?heartbeat=65536", "query parameter 'heartbeat' must be");
  expect_error("amqp://h?heartbeat=-1", "'heartbeat' must be a number from 0 to 65535 (got '-1')");
  expect_error("amqp://h?heartbeat=abc", "'heartbeat' must be");
  expect_error("amqp://h?heartbeat=", "'heartbeat' must be");
  expect_error("amqp://h?heartbeat=%205", "'heartbeat' must be");
}

TEST(uri, channel_max_range) {
  EXPECT_EQ(parse_uri("amqp://h?channel_max=2047").channel_max, 2047);
  EXPECT_EQ(parse_uri("amqp://h?channel_max=0").channel_max, 0);
  expect_error("amqp://h?channel_max=65536", "'channel_max' must be");
  expect_error("amqp://h?channel_max=1e3", "'channel_max' must be");
}

TEST(uri, frame_max_is_zero_or_at_least_frame_min_size) {
  EXPECT_EQ(parse_uri("amqp://h?frame_max=0").frame_max, 0u);
  EXPECT_EQ(parse_uri("amqp://h?frame_max=4096").frame_max, 4096u);
  EXPECT_EQ(parse_uri("amqp://h?frame_max=131072").frame_max, 131072u);
  EXPECT_EQ(parse_uri("amqp://h?frame_max=4294967295").frame_max, 4294967295u);
  expect_error("amqp://h?frame_max=4095", "'frame_max' must be 0 or a number from 4096");
  expect_error("amqp://h?frame_max=4294967296", "'frame_max' must be");
}

TEST(uri, connection_timeout_is_positive_milliseconds) {
  EXPECT_EQ(parse_uri("amqp://h?connection_timeout=1").connection_timeout, 1ms);
  expect_error("amqp://h?connection_timeout=0", "'connection_timeout' must be");
  expect_error("amqp://h?connection_timeout=1.5", "'connection_timeout' must be");
}

TEST(uri, auth_mechanism_repeats_into_upper_cased_list) {
  auto u =
      parse_uri("amqps://h?auth_mechanism=external&auth_mechanism=plain&auth_mechanism=AMQPLAIN");
  EXPECT_EQ(u.auth_mechanisms, (std::vector<std::string>{"EXTERNAL", "PLAIN", "AMQPLAIN"}));
  EXPECT_EQ(parse_uri("amqp://h?auth_mechanism=plain").auth_mechanisms,
            std::vector<std::string>{"PLAIN"});
  expect_error("amqp://h?auth_mechanism=", "'auth_mechanism' must be a SASL mechanism name");
  expect_error("amqp://h?auth_mechanism=pl%20ain", "'auth_mechanism' must be");
}

TEST(uri, query_values_are_percent_decoded) {
  EXPECT_EQ(parse_uri("amqps://h?cacertfile=/etc/my%20certs/ca.pem").cacertfile,
            "/etc/my certs/ca.pem");
}

TEST(uri, empty_query_pieces_are_ignored) {
  auto u = parse_uri("amqp://h/?&heartbeat=5&&");
  EXPECT_EQ(u.vhost, "");
  EXPECT_EQ(u.heartbeat, 5);
  EXPECT_EQ(parse_uri("amqp://h?").heartbeat, std::nullopt);
}

TEST(uri, rejects_unknown_query_key_naming_it) {
  expect_error("amqp://h?heartbeet=5", "unknown query parameter 'heartbeet'");
  expect_error("amqp://h?fail_if_no_peer_cert=true",
               "unknown query parameter 'fail_if_no_peer_cert'");
}

TEST(uri, rejects_key_without_value) {
  expect_error("amqp://h?heartbeat", "query parameter 'heartbeat' has no value");
}

TEST(uri, rejects_repeated_single_valued_key) {
  expect_error("amqp://h?heartbeat=5&heartbeat=6", "'heartbeat' given more than once");
  expect_error("amqps://h?verify=verify_peer&verify=verify_peer", "'verify' given more than once");
  expect_error("amqps://h?keyfile=a&keyfile=b", "'keyfile' given more than once");
}

TEST(uri, rejects_tls_keys_without_amqps) {
  for (const char* key : {"cacertfile", "certfile", "keyfile", "server_name_indication"}) {
    expect_error(std::string("amqp://h?") + key + "=x",
                 std::string("'") + key + "' needs an amqps:// URI");
  }
  expect_error("amqp://h?verify=verify_peer", "'verify' needs an amqps:// URI");
}

TEST(uri, rejects_bad_tls_values) {
  expect_error("amqps://h?verify=yes", "'verify' must be verify_peer or verify_none");
  expect_error("amqps://h?cacertfile=", "'cacertfile' is empty");
  expect_error("amqps://h?server_name_indication=", "'server_name_indication' is empty");
}

// ---- error reporting ----

TEST(uri, throwing_parse_raises_uri_error) {
  try {
    parse_uri("amqp://h?bogus=1");
    ADD_FAILURE() << "did not throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(dynamic_cast<const uri_error*>(&e), nullptr);
    EXPECT_EQ(std::string(e.what()), "invalid AMQP URI: unknown query parameter 'bogus'");
  }
}

TEST(uri, failed_parse_leaves_output_unchanged) {
  connection_uri out = parse_uri("amqp://keep:me@there:1234/v?heartbeat=7");
  connection_uri before = out;
  std::string error;
  EXPECT_FALSE(parse_uri("amqp://other@host?heartbeat=x", out, error));
  EXPECT_EQ(out, before);
  EXPECT_FALSE(error.empty());
}

// Every one of these URIs is malformed and holds the password "Zq9SecretPw" (or pieces of it
// where an unencoded delimiter splits it). No error may show any 4 characters of it.
TEST(uri, errors_never_contain_the_password) {
  const std::string password = "Zq9SecretPw";
  const std::string bad[] = {
      "amqp://user:Zq9SecretPw@host:notaport",
      "amqp://user:Zq9SecretPw@host:0/v",
      "amqp://user:Zq9Secr%zzetPw@host",
      "amqp://user:Zq9Secr%00etPw@host",
      "amqp://user:Zq9Secr\"etPw@host",
      "amqp://user:Zq9Secr etPw@host",
      "amqp://user:Zq9S@cretPw@host",
      "amqp://user:Zq9Se/cretPw@host/",
      "amqp://user:Zq9Se/cretPw@host?heartbeat=1",
      "amqp://user:Zq9Se?cretPw@host",
      "amqp://user:Zq9Se?cretPw=1@host",
      "amqp://user:Zq9Se?heartbeat=cretPw@host",
      "amqp://user:Zq9Se#cretPw@host",
      "amqp://user:Zq9SecretPw@[::1",
      "amqp://user:Zq9SecretPw@[zz]",
      "amqp://user:Zq9SecretPw@host/a/b",
      "amqp://user:Zq9SecretPw@host?Zq9SecretPw",
      "http://user:Zq9SecretPw@host",
      "user:Zq9SecretPw@host",
      "user:Zq9SecretPw@host,amqp://h2",
  };
  for (const auto& uri : bad) {
    std::string error = error_of(uri);
    ASSERT_FALSE(error.empty()) << uri << " parsed";
    for (std::size_t i = 0; i + 4 <= password.size(); ++i) {
      EXPECT_EQ(error.find(password.substr(i, 4)), std::string::npos)
          << "error for " << uri << " leaks the password: " << error;
    }
  }
}

TEST(uri, suspect_uri_gets_encoding_hint) {
  expect_error("amqp://user:Zq9Se/cretPw@host/", "percent-encode any '/', '?', '#' or '@'");
}

// ---- lists ----

TEST(uri, list_splits_on_commas_and_whitespace) {
  auto list = parse_uri_list("amqp://h1,amqps://h2:6000 amqp://h3\n\tamqp://h4 , amqp://h5,");
  ASSERT_EQ(list.size(), 5u);
  EXPECT_EQ(list[0].host, "h1");
  EXPECT_EQ(list[1].host, "h2");
  EXPECT_TRUE(list[1].tls);
  EXPECT_EQ(list[1].port, 6000);
  EXPECT_EQ(list[2].host, "h3");
  EXPECT_EQ(list[3].host, "h4");
  EXPECT_EQ(list[4].host, "h5");
}

TEST(uri, list_keeps_commas_inside_a_uri) {
  auto list = parse_uri_list("amqp://u:a,b@h1/v,w,AMQP://h2?auth_mechanism=plain");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].password, "a,b");
  EXPECT_EQ(list[0].vhost, "v,w");
  EXPECT_EQ(list[1].host, "h2");
  EXPECT_EQ(list[1].auth_mechanisms, std::vector<std::string>{"PLAIN"});
}

TEST(uri, single_uri_is_a_list_of_one) {
  EXPECT_EQ(parse_uri_list("amqp://h"), std::vector<connection_uri>{parse_uri("amqp://h")});
}

TEST(uri, list_error_names_position_not_password) {
  std::vector<connection_uri> out;
  std::string error;
  EXPECT_FALSE(parse_uri_list("amqp://h1 amqp://u:Zq9SecretPw@h2:x amqp://h3", out, error));
  EXPECT_EQ(error, "invalid AMQP URI #2 of 3: the port must be a number from 1 to 65535");
  EXPECT_TRUE(out.empty());
  EXPECT_THROW(parse_uri_list("amqp://h1,amqp://h2?x=1"), uri_error);
}

TEST(uri, empty_list_is_an_error) {
  EXPECT_THROW(parse_uri_list(""), uri_error);
  EXPECT_THROW(parse_uri_list(" ,\n "), uri_error);
}

// ---- to_string ----

TEST(uri, to_string_redacts_password_by_default) {
  auto u = parse_uri("amqp://bob:Zq9SecretPw@host/v");
  std::string s = to_string(u);
  EXPECT_EQ(s, "amqp://bob:***@host:5672/v");
  EXPECT_EQ(s.find("Zq9"), std::string::npos);
  EXPECT_EQ(to_string(u, false), "amqp://bob:Zq9SecretPw@host:5672/v");
}

TEST(uri, to_string_writes_defaults_and_encodes_components) {
  EXPECT_EQ(to_string(connection_uri{}), "amqp://guest:***@localhost:5672/%2F");
  auto u = parse_uri("amqps://us%3Aer:p%40ss@[fe80::1%25eth0]/?heartbeat=10");
  EXPECT_EQ(to_string(u, false), "amqps://us%3Aer:p%40ss@[fe80::1%25eth0]:5671/?heartbeat=10");
}

TEST(uri, to_string_round_trips_through_parse) {
  const char* uris[] = {
      "amqp://",
      "amqp://:@/",
      "amqp://user%61:%61pass@ho%61st:10000/v%2fhost",
      "amqps://caf%C3%A9:a:b!$&'()*+,;=%25@[2001:db8::1]:1/a:b@c",
      "amqp://h/?heartbeat=0&channel_max=10&frame_max=131072&connection_timeout=2500",
      "amqps://h?cacertfile=/etc/my%20certs/ca.pem&certfile=c:/x&keyfile=k%26y&verify=verify_none"
      "&server_name_indication=disable&auth_mechanism=external&auth_mechanism=plain",
  };
  for (const char* text : uris) {
    SCOPED_TRACE(text);
    connection_uri u = parse_uri(text);
    EXPECT_EQ(parse_uri(to_string(u, false)), u) << to_string(u, false);
  }
}

}  // namespace
}  // namespace warren
