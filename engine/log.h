// The logging hook: one callback through which warren tells an operator what happened (README,
// "Logging"). Silent unless the application installs a callback; warren never writes to
// stdout, stderr or syslog itself.
//
//   warren::logger log([](warren::log_level level, std::string_view component,
//                         std::string_view message) {
//     std::fprintf(stderr, "%s %.*s: %.*s\n", warren::to_string(level).data(),
//                  int(component.size()), component.data(), int(message.size()), message.data());
//   });
//
// Passwords never reach the callback: every message passes through redact() first, which
// masks the password of any URI in it (scheme://user:***@host) and every occurrence of the
// logger's secrets (the connection's password, raw and percent-encoded) with "***". Call sites
// should not put credentials in messages in the first place; this is the guarantee when one
// slips in (an error text that quotes a URI, say). A short secret is masked wherever it occurs,
// also inside other words: such messages read worse, never leak.
//
// Threads: the callback is called on the engine's threads (an I/O thread, or the application
// thread inside a blocking call), possibly from several at once; keep it short, make it
// thread-safe, and do not call warren from it. An exception it throws is swallowed (a log line
// must not break a connection). A logger is immutable once built: copy and share it freely.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace warren {

enum class log_level : std::uint8_t { debug, info, warning, error };
std::string_view to_string(log_level level) noexcept;  // "debug", "info", "warning", "error"

// What each component logs (README, "Logging", has the list of messages).
namespace log_component {
inline constexpr std::string_view connection = "connection";  // lost (and why), blocked
inline constexpr std::string_view recovery = "recovery";      // started, finished, entity refused
inline constexpr std::string_view consumer = "consumer";      // cancelled by the broker
}  // namespace log_component

using log_callback =
    std::function<void(log_level level, std::string_view component, std::string_view message)>;

class logger {
 public:
  logger() = default;  // silent
  // Messages at `min_level` and above go to `callback` (none: silent).
  explicit logger(log_callback callback, log_level min_level = log_level::info);

  // False when silent or below the minimum level: a call site skips building the message.
  bool enabled(log_level level) const noexcept { return sink_ && level >= min_; }
  // A copy that also masks `secret` (ignored when empty), for a connection's password.
  logger with_secret(std::string secret) const;

  // Redacts and delivers one message; never throws.
  void log(log_level level, std::string_view component, std::string_view message) const noexcept;

 private:
  struct sink {
    log_callback callback;
  };
  std::shared_ptr<const sink> sink_;
  log_level min_ = log_level::info;
  std::vector<std::string> secrets_;
};

// `text` with the password of every URI in it replaced by "***": "amqp://bob:***@host/vhost".
// A URI is a scheme ("amqp", "amqps", "http", ...) followed by "://"; its userinfo ends at the
// last '@' before the first '/', '?', '#', whitespace or quote; the password is what follows its
// first ':'. URIs without a password are left as they are.
std::string redact_uri_passwords(std::string_view text);

// redact_uri_passwords, then every occurrence of each non-empty secret, raw and percent-encoded
// as in a URI, replaced by "***".
std::string redact(std::string_view text, std::span<const std::string> secrets = {});

}  // namespace warren
