#include "engine/log.h"

#include <algorithm>
#include <cctype>

namespace warren {
namespace {

constexpr std::string_view mask = "***";

bool scheme_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
}

bool ends_authority(char c) {
  return c == '/' || c == '?' || c == '#' || c == '"' || c == '\'' || c == '<' || c == '>' ||
         std::isspace(static_cast<unsigned char>(c));
}

void replace_all(std::string& s, std::string_view what) {
  if (what.empty()) return;
  for (std::size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + mask.size()))
    s.replace(at, what.size(), mask);
}

// RFC 3986 percent-encoding of everything but the unreserved characters.
std::string percent_encoded(std::string_view s, bool upper) {
  static constexpr char hex_upper[] = "0123456789ABCDEF";
  static constexpr char hex_lower[] = "0123456789abcdef";
  const char* hex = upper ? hex_upper : hex_lower;
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

}  // namespace

std::string_view to_string(log_level level) noexcept {
  switch (level) {
    case log_level::debug:
      return "debug";
    case log_level::info:
      return "info";
    case log_level::warning:
      return "warning";
    case log_level::error:
      return "error";
  }
  return "?";
}

logger::logger(log_callback callback, log_level min_level) : min_(min_level) {
  if (callback) sink_ = std::make_shared<const sink>(sink{std::move(callback)});
}

logger logger::with_secret(std::string secret) const {
  logger copy = *this;
  if (!secret.empty()) copy.secrets_.push_back(std::move(secret));
  return copy;
}

void logger::log(log_level level, std::string_view component,
                 std::string_view message) const noexcept {
  if (!enabled(level)) return;
  try {
    const std::string clean = redact(message, secrets_);
    sink_->callback(level, component, clean);
  } catch (...) {
    // A log line must not break the connection that wrote it.
  }
}

std::string redact_uri_passwords(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t done = 0;
  for (std::size_t sep = text.find("://"); sep != std::string_view::npos;
       sep = text.find("://", sep + 3)) {
    if (sep == 0 || !scheme_char(text[sep - 1])) continue;
    const std::size_t start = sep + 3;
    std::size_t end = start;
    while (end < text.size() && !ends_authority(text[end])) ++end;
    const std::string_view authority = text.substr(start, end - start);
    const std::size_t at = authority.rfind('@');
    if (at == std::string_view::npos) continue;
    const std::size_t colon = authority.find(':');
    if (colon == std::string_view::npos || colon > at) continue;
    out.append(text.substr(done, start + colon + 1 - done));
    out += mask;
    done = start + at;
    sep = end - 3;  // end >= start = sep + 3: the next URI starts after this authority
  }
  out.append(text.substr(done));
  return out;
}

std::string redact(std::string_view text, std::span<const std::string> secrets) {
  std::string out = redact_uri_passwords(text);
  for (const std::string& s : secrets) {
    if (s.empty()) continue;
    replace_all(out, s);
    replace_all(out, percent_encoded(s, true));
    replace_all(out, percent_encoded(s, false));
  }
  return out;
}

}  // namespace warren
