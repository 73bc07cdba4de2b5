// AMQP URIs as RabbitMQ specifies them (https://www.rabbitmq.com/uri-spec.html, and
// uri-query-parameters.html for the query keys):
//
//   amqp[s]://[user[:password]@]host[:port][/vhost][?key=value&...]
//
// Absent components take defaults: user and password "guest" (each on its own, as rabbitmq-c
// does: `amqp://bob@h` logs in as bob with password "guest"), host "localhost" (a zero-length
// host counts as absent), port 5672 for amqp and 5671 for amqps, vhost "/". The spec separates
// an absent vhost from an empty one:
//   amqp://host      -> vhost "/"  (absent: the default)
//   amqp://host/     -> vhost ""   (present, zero-length)
//   amqp://host/%2f  -> vhost "/"
//   amqp://host/a/b  -> error      (a vhost is one path segment; '/' inside it is written %2F)
// User, password, host and vhost are percent-decoded. An IPv6 literal is written in brackets
// (`amqp://[::1]:5673`) and stored without them ("::1").
//
// Query keys (each at most once, except auth_mechanism): heartbeat (seconds), channel_max,
// frame_max (0 or at least 4096), connection_timeout (milliseconds, at least 1), and for amqps
// only: cacertfile, certfile, keyfile, verify (verify_peer | verify_none),
// server_name_indication (a host name, or "disable"). auth_mechanism may repeat; the list keeps
// URI order, upper-cased (`?auth_mechanism=external&auth_mechanism=plain`). Any other key is an
// error. A TLS key on an amqp:// URI is an error rather than ignored, so a URI never looks
// encrypted when it is not.
//
// Passwords: no error message and no to_string() output (unless asked) contains the password
// or any other part of the user info. The spec asks that the full URI never reach exception
// messages or logs; messages here quote only the scheme, query keys and numeric query values,
// and not even those when the URI looks like it holds an unencoded delimiter in its user info.
//
// Everything here is pure string work: no I/O, no name resolution; safe from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace warren {

class uri_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

enum class tls_verify { verify_peer, verify_none };

struct connection_uri {
  bool tls = false;
  std::string host = "localhost";  // IPv6 literals without brackets
  std::uint16_t port = 5672;
  std::string user = "guest";
  std::string password = "guest";
  std::string vhost = "/";

  // Absent query keys stay empty: the connection uses its own defaults.
  std::optional<std::uint16_t> heartbeat;  // seconds; 0 asks for no heartbeats
  std::optional<std::uint16_t> channel_max;
  std::optional<std::uint32_t> frame_max;
  std::optional<std::chrono::milliseconds> connection_timeout;
  std::optional<std::string> cacertfile;
  std::optional<std::string> certfile;
  std::optional<std::string> keyfile;
  std::optional<tls_verify> verify;
  std::optional<std::string> server_name_indication;  // "disable" turns SNI off
  std::vector<std::string> auth_mechanisms;           // upper-cased, in URI order

  bool operator==(const connection_uri&) const = default;
};

// Parses one URI. Throws uri_error, whose message starts with "invalid AMQP URI: " and names
// the component or query key at fault (never the password).
connection_uri parse_uri(std::string_view uri);

// The same without exceptions: on success fills `out` and returns true; on failure leaves `out`
// unchanged, sets `error` to the message parse_uri would throw, and returns false.
bool parse_uri(std::string_view uri, connection_uri& out, std::string& error);

// Several URIs for failover, in order, separated by whitespace or by commas. Since a comma is a
// legal character inside user info, vhost and query, a comma separates only where the next
// URI's scheme ("amqp://" or "amqps://") follows it (after optional whitespace). Throws
// uri_error naming the 1-based position of the first bad URI; an input without any URI is an
// error too.
std::vector<connection_uri> parse_uri_list(std::string_view uris);
bool parse_uri_list(std::string_view uris, std::vector<connection_uri>& out, std::string& error);

// The URI in canonical form: every component written out (defaults included), percent-encoded
// so that parse_uri gives back an equal connection_uri. With `redact_password` (the default)
// the password is written as "***", fit for logs and error messages.
std::string to_string(const connection_uri& uri, bool redact_password = true);

}  // namespace warren
