#include "engine/uri.h"

#include <arpa/inet.h>

#include <charconv>
#include <limits>

namespace warren {
namespace {

bool is_alpha(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}
bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_unreserved(char c) noexcept {
  return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}
bool is_sub_delim(char c) noexcept {
  return std::string_view("!$&'()*+,;=").find(c) != std::string_view::npos;
}
int hex_value(char c) noexcept {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
char to_lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
}
char to_upper(char c) noexcept {
  return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (to_lower(a[i]) != to_lower(b[i])) return false;
  }
  return true;
}

bool starts_with_scheme(std::string_view s) noexcept {
  return (s.size() >= 7 && iequals(s.substr(0, 7), "amqp://")) ||
         (s.size() >= 8 && iequals(s.substr(0, 8), "amqps://"));
}

// The characters RFC 3986 allows unencoded in each component, besides unreserved and
// pct-encoded. ':' is taken in a password although RabbitMQ's grammar leaves it out: the
// user name ends at the first ':', so a later one is unambiguous.
enum class component { user, password, host, zone, vhost, query };

bool allowed(component where, char c) noexcept {
  if (is_unreserved(c)) return true;
  switch (where) {
    case component::user:
    case component::host:
      return is_sub_delim(c);
    case component::password:
      return is_sub_delim(c) || c == ':';
    case component::zone:
      return false;
    case component::vhost:
      return is_sub_delim(c) || c == ':' || c == '@';
    case component::query:
      return is_sub_delim(c) || c == ':' || c == '@' || c == '/' || c == '?';
  }
  return false;
}

const char* component_name(component where) noexcept {
  switch (where) {
    case component::user:
      return "the user name";
    case component::password:
      return "the password";
    case component::host:
      return "the host";
    case component::zone:
      return "the IPv6 zone";
    case component::vhost:
      return "the vhost";
    case component::query:
      return "the query";
  }
  return "";
}

// Parses one URI into `out`; on failure returns false with `error` set (without the
// "invalid AMQP URI" prefix). Messages never quote the authority.
class uri_parser {
 public:
  uri_parser(std::string_view in, connection_uri& out, std::string& error)
      : in_(in), out_(out), error_(error) {}

  bool parse() {
    std::size_t sep = in_.find("://");
    if (sep == std::string_view::npos) return fail("expected amqp:// or amqps:// at the start");
    if (!parse_scheme(in_.substr(0, sep))) return false;
    std::string_view rest = in_.substr(sep + 3);
    std::size_t end = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, end);
    std::string_view tail = end == std::string_view::npos ? std::string_view() : rest.substr(end);
    // An '@' after the authority most likely means a '/', '?' or '#' in the user info was not
    // encoded, so the text after it is part of a password: from here on, quote nothing.
    suspect_ = tail.find('@') != std::string_view::npos;
    if (tail.find('#') != std::string_view::npos) {
      return fail("a fragment ('#') is not allowed; percent-encode '#' as %23");
    }
    if (!parse_authority(authority)) return false;
    std::size_t query_at = tail.find('?');
    std::string_view path = tail.substr(0, query_at);
    if (!path.empty() && !parse_vhost(path.substr(1))) return false;
    if (query_at != std::string_view::npos) return parse_query(tail.substr(query_at + 1));
    return true;
  }

 private:
  bool fail(std::string message) {
    if (suspect_) {
      message +=
          " (percent-encode any '/', '?', '#' or '@' in the user name or password, e.g. '/' "
          "as %2F)";
    }
    error_ = std::move(message);
    return false;
  }

  // `text` in quotes when it is safe to show: short, printable, and not possibly a password
  // (nor overlapping the one the URI gave, in case it was pasted into the query too).
  std::string quoted(std::string_view text) const {
    if (suspect_ || text.size() > 64) return {};
    if (password_given_ && !out_.password.empty() &&
        (text.find(out_.password) != std::string_view::npos ||
         (text.size() >= 3 && out_.password.find(text) != std::string::npos))) {
      return {};
    }
    for (char c : text) {
      if (c < 0x20 || c > 0x7e) return {};
    }
    return " '" + std::string(text) + "'";
  }

  bool parse_scheme(std::string_view scheme) {
    if (iequals(scheme, "amqp")) {
      out_.tls = false;
      out_.port = 5672;
      return true;
    }
    if (iequals(scheme, "amqps")) {
      out_.tls = true;
      out_.port = 5671;
      return true;
    }
    bool token = !scheme.empty() && is_alpha(scheme[0]);
    for (char c : scheme) {
      token = token && (is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.');
    }
    if (!token) return fail("expected amqp:// or amqps:// at the start");
    return fail("unsupported scheme" + quoted(scheme) + "; expected amqp or amqps");
  }

  bool decode(std::string_view raw, component where, std::string& out) {
    std::string decoded;
    decoded.reserve(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i) {
      char c = raw[i];
      if (c == '%') {
        int hi = i + 2 < raw.size() ? hex_value(raw[i + 1]) : -1;
        int lo = hi >= 0 ? hex_value(raw[i + 2]) : -1;
        if (lo < 0) {
          return fail(std::string("malformed percent-encoding in ") + component_name(where));
        }
        decoded += static_cast<char>(hi * 16 + lo);
        i += 2;
      } else if (allowed(where, c)) {
        decoded += c;
      } else {
        return fail(std::string("character not allowed in ") + component_name(where) +
                    " (percent-encode it)");
      }
    }
    out = std::move(decoded);
    return true;
  }

  // SASL PLAIN separates user and password with NUL, so neither may hold one.
  bool decode_credential(std::string_view raw, component where, std::string& out) {
    if (!decode(raw, where, out)) return false;
    if (out.find('\0') != std::string::npos) {
      return fail(std::string(component_name(where)) + " must not contain NUL (%00)");
    }
    return true;
  }

  bool parse_authority(std::string_view authority) {
    std::size_t at = authority.rfind('@');
    if (at != std::string_view::npos) {
      if (authority.find('@') != at) {
        return fail(
            "more than one '@' before the host; percent-encode '@' in the user name or "
            "password as %40");
      }
      std::string_view userinfo = authority.substr(0, at);
      std::size_t colon = userinfo.find(':');
      if (!decode_credential(userinfo.substr(0, colon), component::user, out_.user)) return false;
      password_given_ = colon != std::string_view::npos;
      if (password_given_ &&
          !decode_credential(userinfo.substr(colon + 1), component::password, out_.password)) {
        return false;
      }
      authority = authority.substr(at + 1);
    }
    std::string_view port;
    bool has_port = false;
    if (!authority.empty() && authority[0] == '[') {
      std::size_t close = authority.find(']');
      if (close == std::string_view::npos) return fail("an IPv6 address lacks its closing ']'");
      if (!parse_ipv6(authority.substr(1, close - 1))) return false;
      std::string_view after = authority.substr(close + 1);
      if (!after.empty() && after[0] != ':') {
        return fail("only ':' and a port may follow an IPv6 address");
      }
      has_port = !after.empty();
      if (has_port) port = after.substr(1);
    } else {
      std::size_t colon = authority.find(':');
      has_port = colon != std::string_view::npos;
      if (has_port) port = authority.substr(colon + 1);
      std::string host;
      if (!decode(authority.substr(0, colon), component::host, host)) return false;
      if (host.find_first_of(std::string_view(":\0", 2)) != std::string::npos) {
        return fail("the host holds an encoded ':' or NUL");
      }
      out_.host = host.empty() ? "localhost" : std::move(host);
    }
    // RFC 3986 allows an empty port ("host:"): the default applies.
    if (!has_port || port.empty()) return true;
    std::uint64_t value = 0;
    if (!parse_number(port, value) || value == 0 || value > 65535) {
      return fail("the port must be a number from 1 to 65535");
    }
    out_.port = static_cast<std::uint16_t>(value);
    return true;
  }

  // Accepts what inet_pton accepts, plus an RFC 6874 zone ("fe80::1%25eth0").
  bool parse_ipv6(std::string_view literal) {
    std::size_t zone_at = literal.find('%');
    std::string address(literal.substr(0, zone_at));
    in6_addr parsed{};
    if (address.empty() || inet_pton(AF_INET6, address.c_str(), &parsed) != 1) {
      return fail("the text in brackets is not an IPv6 address");
    }
    if (zone_at != std::string_view::npos) {
      std::string zone;
      if (!decode(literal.substr(zone_at), component::zone, zone)) return false;
      // The decoded text starts with the '%' the "%25" stood for.
      if (zone.size() < 2 || zone[0] != '%') return fail("malformed IPv6 zone");
      address += zone;
    }
    out_.host = std::move(address);
    return true;
  }

  bool parse_vhost(std::string_view raw) {
    if (raw.find('/') != std::string_view::npos) {
      return fail("the vhost must be a single path segment; percent-encode '/' in it as %2F");
    }
    std::string vhost;
    if (!decode(raw, component::vhost, vhost)) return false;
    // connection.open carries the vhost as a shortstr.
    if (vhost.size() > 255) return fail("the vhost is longer than 255 octets");
    out_.vhost = std::move(vhost);
    return true;
  }

  static bool parse_number(std::string_view text, std::uint64_t& value) {
    if (text.empty()) return false;
    for (char c : text) {
      if (!is_digit(c)) return false;
    }
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc() && end == text.data() + text.size();
  }

  bool number(std::string_view key, std::string_view text, std::uint64_t min, std::uint64_t max,
              std::uint64_t& value, const char* range) {
    if (!parse_number(text, value) || value < min || value > max) {
      std::string got = quoted(text);
      return fail("query parameter" + quoted(key) + " must be " + range +
                  (got.empty() ? "" : " (got" + got + ")"));
    }
    return true;
  }

  template <class T>
  bool once(std::string_view key, const std::optional<T>& slot) {
    if (slot) return fail("query parameter" + quoted(key) + " given more than once");
    return true;
  }

  bool tls_only(std::string_view key) {
    if (!out_.tls) return fail("query parameter" + quoted(key) + " needs an amqps:// URI");
    return true;
  }

  bool text_value(std::string_view key, std::string value, std::optional<std::string>& slot) {
    if (!once(key, slot) || !tls_only(key)) return false;
    if (value.empty()) return fail("query parameter" + quoted(key) + " is empty");
    slot = std::move(value);
    return true;
  }

  bool parse_query(std::string_view query) {
    while (!query.empty()) {
      std::size_t amp = query.find('&');
      std::string_view piece = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      if (piece.empty()) continue;
      std::size_t eq = piece.find('=');
      std::string key, value;
      if (!decode(piece.substr(0, eq), component::query, key)) return false;
      if (eq == std::string_view::npos) {
        return fail("query parameter" + quoted(key) + " has no value ('key=value')");
      }
      if (!decode(piece.substr(eq + 1), component::query, value) || !apply(key, std::move(value))) {
        return false;
      }
    }
    return true;
  }

  bool apply(std::string_view key, std::string value) {
    constexpr std::uint64_t u16 = std::numeric_limits<std::uint16_t>::max();
    constexpr std::uint64_t u32 = std::numeric_limits<std::uint32_t>::max();
    std::uint64_t n = 0;
    if (key == "heartbeat") {
      if (!once(key, out_.heartbeat) ||
          !number(key, value, 0, u16, n, "a number from 0 to 65535")) {
        return false;
      }
      out_.heartbeat = static_cast<std::uint16_t>(n);
    } else if (key == "channel_max") {
      if (!once(key, out_.channel_max) ||
          !number(key, value, 0, u16, n, "a number from 0 to 65535")) {
        return false;
      }
      out_.channel_max = static_cast<std::uint16_t>(n);
    } else if (key == "frame_max") {
      if (!once(key, out_.frame_max) ||
          !number(key, value, 0, u32, n, "0 or a number from 4096 to 4294967295")) {
        return false;
      }
      // FRAME-MIN-SIZE: a peer may not ask for frames smaller than 4096 octets.
      if (n != 0 && n < 4096) {
        return fail("query parameter 'frame_max' must be 0 or a number from 4096 to 4294967295");
      }
      out_.frame_max = static_cast<std::uint32_t>(n);
    } else if (key == "connection_timeout") {
      if (!once(key, out_.connection_timeout) ||
          !number(key, value, 1, u32, n, "a number of milliseconds from 1 to 4294967295")) {
        return false;
      }
      out_.connection_timeout = std::chrono::milliseconds(n);
    } else if (key == "cacertfile") {
      return text_value(key, std::move(value), out_.cacertfile);
    } else if (key == "certfile") {
      return text_value(key, std::move(value), out_.certfile);
    } else if (key == "keyfile") {
      return text_value(key, std::move(value), out_.keyfile);
    } else if (key == "server_name_indication") {
      return text_value(key, std::move(value), out_.server_name_indication);
    } else if (key == "verify") {
      if (!once(key, out_.verify) || !tls_only(key)) return false;
      if (value == "verify_peer") {
        out_.verify = tls_verify::verify_peer;
      } else if (value == "verify_none") {
        out_.verify = tls_verify::verify_none;
      } else {
        return fail("query parameter 'verify' must be verify_peer or verify_none");
      }
    } else if (key == "auth_mechanism") {
      bool token = !value.empty();
      for (char& c : value) {
        token = token && (is_alpha(c) || is_digit(c) || c == '-' || c == '_');
        c = to_upper(c);
      }
      if (!token) {
        return fail("query parameter 'auth_mechanism' must be a SASL mechanism name");
      }
      out_.auth_mechanisms.push_back(std::move(value));
    } else {
      return fail("unknown query parameter" + quoted(key));
    }
    return true;
  }

  std::string_view in_;
  connection_uri& out_;
  std::string& error_;
  bool suspect_ = false;
  bool password_given_ = false;
};

constexpr std::string_view error_prefix = "invalid AMQP URI";

bool parse_one(std::string_view uri, connection_uri& out, std::string& reason) {
  connection_uri parsed;
  if (!uri_parser(uri, parsed, reason).parse()) return false;
  out = std::move(parsed);
  return true;
}

std::vector<std::string_view> split_list(std::string_view in) {
  auto separating_comma = [&](std::size_t i) {
    std::size_t j = i + 1;
    while (j < in.size() && is_space(in[j])) ++j;
    return j == in.size() || starts_with_scheme(in.substr(j));
  };
  std::vector<std::string_view> pieces;
  std::size_t start = std::string_view::npos;
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (is_space(c) || (c == ',' && separating_comma(i))) {
      if (start != std::string_view::npos) pieces.push_back(in.substr(start, i - start));
      start = std::string_view::npos;
    } else if (start == std::string_view::npos) {
      start = i;
    }
  }
  if (start != std::string_view::npos) pieces.push_back(in.substr(start));
  return pieces;
}

// Percent-encodes all but unreserved characters and those in `keep`.
void append_encoded(std::string& out, std::string_view text, std::string_view keep = {}) {
  static constexpr char hex[] = "0123456789ABCDEF";
  for (char c : text) {
    if (is_unreserved(c) || keep.find(c) != std::string_view::npos) {
      out += c;
    } else {
      auto byte = static_cast<unsigned char>(c);
      out += '%';
      out += hex[byte >> 4];
      out += hex[byte & 0xF];
    }
  }
}

void append_param(std::string& out, char& sep, std::string_view key, std::string_view value) {
  out += sep;
  sep = '&';
  out += key;
  out += '=';
  append_encoded(out, value, "/:");
}

}  // namespace

bool parse_uri(std::string_view uri, connection_uri& out, std::string& error) {
  std::string reason;
  if (parse_one(uri, out, reason)) return true;
  error = std::string(error_prefix) + ": " + reason;
  return false;
}

connection_uri parse_uri(std::string_view uri) {
  connection_uri out;
  std::string error;
  if (!parse_uri(uri, out, error)) throw uri_error(error);
  return out;
}

bool parse_uri_list(std::string_view uris, std::vector<connection_uri>& out, std::string& error) {
  auto pieces = split_list(uris);
  if (pieces.empty()) {
    error = std::string(error_prefix) + " list: no URI given";
    return false;
  }
  std::vector<connection_uri> parsed(pieces.size());
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    std::string reason;
    if (!parse_one(pieces[i], parsed[i], reason)) {
      error = std::string(error_prefix) + " #" + std::to_string(i + 1) + " of " +
              std::to_string(pieces.size()) + ": " + reason;
      return false;
    }
  }
  out = std::move(parsed);
  return true;
}

std::vector<connection_uri> parse_uri_list(std::string_view uris) {
  std::vector<connection_uri> out;
  std::string error;
  if (!parse_uri_list(uris, out, error)) throw uri_error(error);
  return out;
}

std::string to_string(const connection_uri& uri, bool redact_password) {
  std::string out = uri.tls ? "amqps://" : "amqp://";
  append_encoded(out, uri.user);
  out += ':';
  if (redact_password) {
    out += "***";
  } else {
    append_encoded(out, uri.password);
  }
  out += '@';
  if (uri.host.find(':') != std::string::npos) {
    std::size_t zone = uri.host.find('%');
    out += '[';
    out += std::string_view(uri.host).substr(0, zone);
    if (zone != std::string::npos) {
      out += "%25";
      append_encoded(out, std::string_view(uri.host).substr(zone + 1));
    }
    out += ']';
  } else {
    append_encoded(out, uri.host);
  }
  out += ':';
  out += std::to_string(uri.port);
  out += '/';
  append_encoded(out, uri.vhost);

  char sep = '?';
  if (uri.heartbeat) append_param(out, sep, "heartbeat", std::to_string(*uri.heartbeat));
  if (uri.channel_max) append_param(out, sep, "channel_max", std::to_string(*uri.channel_max));
  if (uri.frame_max) append_param(out, sep, "frame_max", std::to_string(*uri.frame_max));
  if (uri.connection_timeout) {
    append_param(out, sep, "connection_timeout", std::to_string(uri.connection_timeout->count()));
  }
  if (uri.cacertfile) append_param(out, sep, "cacertfile", *uri.cacertfile);
  if (uri.certfile) append_param(out, sep, "certfile", *uri.certfile);
  if (uri.keyfile) append_param(out, sep, "keyfile", *uri.keyfile);
  if (uri.verify) {
    append_param(out, sep, "verify",
                 *uri.verify == tls_verify::verify_peer ? "verify_peer" : "verify_none");
  }
  if (uri.server_name_indication) {
    append_param(out, sep, "server_name_indication", *uri.server_name_indication);
  }
  for (const auto& mechanism : uri.auth_mechanisms) {
    append_param(out, sep, "auth_mechanism", mechanism);
  }
  return out;
}

}  // namespace warren
