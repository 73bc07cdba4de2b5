// The exceptions of warren's blocking API, and the std::error_code form of the same errors for
// the non-throwing (async) API.
//
// The hierarchy mirrors py-amqp 5.1.1 (amqp/exceptions.py) class for class, so code ported from
// py-amqp catches the same things:
//
//   amqp_error (std::runtime_error)
//   ├─ connection_error
//   │  ├─ recoverable_connection_error
//   │  │  ├─ connection_forced 320, resource_error 506
//   │  │  ├─ consumer_cancelled, connection_blocked      (py-amqp's ConsumerCancelled, Blocked)
//   │  │  └─ amqp_timeout                               (py-amqp raises socket.timeout, an OSError)
//   │  └─ irrecoverable_connection_error
//   │     └─ invalid_path 402, frame_error 501, frame_syntax_error 502, invalid_command 503,
//   │        channel_not_open 504, unexpected_frame 505, not_allowed 530,
//   │        amqp_not_implemented_error 540, internal_error 541
//   └─ channel_error
//      ├─ no_route 312                                 (py-amqp has no class: ChannelError)
//      ├─ recoverable_channel_error
//      │  └─ content_too_large 311, no_consumers 313, resource_locked 405
//      └─ irrecoverable_channel_error
//         └─ access_refused 403, not_found 404, precondition_failed 406
//   message_nacked (std::runtime_error; not an amqp_error, as in py-amqp)
//
// py-amqp has no NotConfirmed exception; warren has none either.
//
// Thread rules: an exception object is immutable after construction and its copies share that
// immutable state, so copies may be read from any number of threads. Copying never throws.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace warren {

// The (class-id, method-id) of the AMQP method an error refers to; {0, 0} when there is none.
struct method_signature {
  std::uint16_t class_id = 0;
  std::uint16_t method_id = 0;
  bool empty() const noexcept { return class_id == 0 && method_id == 0; }
  bool operator==(const method_signature&) const = default;
};

// The spec's name for a reply code with '-' as '_' ("NOT_FOUND", "REPLY_SUCCESS"), or an empty
// view for a code the spec does not define. The view is static.
std::string_view reply_code_name(std::uint16_t code) noexcept;

// Base of every AMQP error (py-amqp's AMQPError).
//
// what() is `<code> <reply text>`, e.g. `404 NOT_FOUND - no queue 'x'`, followed by
// ` (<method name>)` when the method name is known, else by ` (<class-id>,<method-id>)` when
// only the signature is. RabbitMQ's reply texts start with the code's name; an empty reply text
// is replaced by that name. A reply code of 0 (an error raised locally, not by the broker) is
// left out: `connection already closed`.
//
// The method name is whatever the caller passes (by convention "basic.consume"); this module
// has no method table.
class amqp_error : public std::runtime_error {
 public:
  explicit amqp_error(std::string reply_text, method_signature method = {},
                      std::string method_name = {}, std::uint16_t reply_code = 0);

  std::uint16_t reply_code() const noexcept;
  const std::string& reply_text() const noexcept;
  method_signature method_sig() const noexcept;
  const std::string& method_name() const noexcept;

 protected:
  struct custom_what {};
  // For subclasses whose message is not the standard format.
  amqp_error(custom_what, const std::string& message, std::string reply_text,
             method_signature method, std::string method_name, std::uint16_t reply_code);

 private:
  struct fields;
  std::shared_ptr<const fields> fields_;
};

class connection_error : public amqp_error {
 public:
  using amqp_error::amqp_error;
};
class channel_error : public amqp_error {
 public:
  using amqp_error::amqp_error;
};
class recoverable_connection_error : public connection_error {
 public:
  using connection_error::connection_error;
};
class irrecoverable_connection_error : public connection_error {
 public:
  using connection_error::connection_error;
};
class recoverable_channel_error : public channel_error {
 public:
  using channel_error::channel_error;
};
class irrecoverable_channel_error : public channel_error {
 public:
  using channel_error::channel_error;
};

namespace detail {
// An error class bound to one reply code: its constructors take no code.
template <class Base, std::uint16_t Code>
class coded_error : public Base {
 public:
  static constexpr std::uint16_t code = Code;
  explicit coded_error(std::string reply_text, method_signature method = {},
                       std::string method_name = {})
      : Base(std::move(reply_text), method, std::move(method_name), Code) {}
};
}  // namespace detail

// One line per class keeps the code -> parent table readable beside py-amqp's.
#define WARREN_CODED_ERROR(name, base, code_value)            \
  class name : public detail::coded_error<base, code_value> { \
   public:                                                    \
    using detail::coded_error<base, code_value>::coded_error; \
  }
WARREN_CODED_ERROR(content_too_large, recoverable_channel_error, 311);
WARREN_CODED_ERROR(no_route, channel_error, 312);
WARREN_CODED_ERROR(no_consumers, recoverable_channel_error, 313);
WARREN_CODED_ERROR(connection_forced, recoverable_connection_error, 320);
WARREN_CODED_ERROR(invalid_path, irrecoverable_connection_error, 402);
WARREN_CODED_ERROR(access_refused, irrecoverable_channel_error, 403);
WARREN_CODED_ERROR(not_found, irrecoverable_channel_error, 404);
WARREN_CODED_ERROR(resource_locked, recoverable_channel_error, 405);
WARREN_CODED_ERROR(precondition_failed, irrecoverable_channel_error, 406);
WARREN_CODED_ERROR(frame_error, irrecoverable_connection_error, 501);
WARREN_CODED_ERROR(frame_syntax_error, irrecoverable_connection_error, 502);
WARREN_CODED_ERROR(invalid_command, irrecoverable_connection_error, 503);
WARREN_CODED_ERROR(channel_not_open, irrecoverable_connection_error, 504);
WARREN_CODED_ERROR(unexpected_frame, irrecoverable_connection_error, 505);
WARREN_CODED_ERROR(resource_error, recoverable_connection_error, 506);
WARREN_CODED_ERROR(not_allowed, irrecoverable_connection_error, 530);
WARREN_CODED_ERROR(amqp_not_implemented_error, irrecoverable_connection_error, 540);
WARREN_CODED_ERROR(internal_error, irrecoverable_connection_error, 541);
#undef WARREN_CODED_ERROR

// The broker cancelled a consumer (basic.cancel from the server, e.g. its queue was deleted).
// As in py-amqp, reply_text() is the consumer tag and the reply code is 0.
class consumer_cancelled : public recoverable_connection_error {
 public:
  explicit consumer_cancelled(std::string consumer_tag, method_signature method = {60, 30},
                              std::string method_name = "basic.cancel");
  const std::string& consumer_tag() const noexcept { return reply_text(); }
};

// The broker has blocked the connection (connection.blocked) and an operation gave up waiting.
class connection_blocked : public recoverable_connection_error {
 public:
  explicit connection_blocked(std::string reply_text = "connection blocked by the broker",
                              method_signature method = {}, std::string method_name = {})
      : recoverable_connection_error(std::move(reply_text), method, std::move(method_name)) {}
};

// A deadline passed: connecting, waiting for a reply, a heartbeat, a confirm. py-amqp raises
// socket.timeout, an OSError, which its Connection lists among both connection_errors and
// recoverable_connection_errors; this class sits in the same place.
class amqp_timeout : public recoverable_connection_error {
 public:
  explicit amqp_timeout(std::string reply_text = "timed out", method_signature method = {},
                        std::string method_name = {})
      : recoverable_connection_error(std::move(reply_text), method, std::move(method_name)) {}
};

// The broker nacked a published message (basic.nack under publisher confirms). As in py-amqp it
// is not an amqp_error: neither a connection nor a channel error, and not recoverable.
class message_nacked : public std::runtime_error {
 public:
  explicit message_nacked(const std::string& what = "message nacked by the broker")
      : std::runtime_error(what) {}
};

// The exception for a reply code received in connection.close or channel.close (or
// basic.return), as py-amqp's error_for_code builds it: the class bound to the code, or for a
// code without one, channel_error for 300-499 (the spec's soft-error range) and
// connection_error otherwise, carrying the code. (py-amqp picks the fallback by which close
// carried the code; the range gives the same answer for every code RabbitMQ sends.)
// 312 NO_ROUTE gives no_route, a plain channel_error, as py-amqp's fallback does.
// Never returns null; throws only std::bad_alloc.
std::unique_ptr<amqp_error> error_for_code(std::uint16_t code, std::string reply_text,
                                           std::uint16_t class_id = 0, std::uint16_t method_id = 0,
                                           std::string method_name = {});
// The same error in an exception_ptr, for handing across threads.
std::exception_ptr make_error(std::uint16_t code, std::string reply_text,
                              std::uint16_t class_id = 0, std::uint16_t method_id = 0,
                              std::string method_name = {});
// Throws the same error, as its most derived class.
[[noreturn]] void throw_for_code(std::uint16_t code, std::string reply_text,
                                 std::uint16_t class_id = 0, std::uint16_t method_id = 0,
                                 std::string method_name = {});

// Predicates matching py-amqp's Connection.connection_errors, channel_errors,
// recoverable_connection_errors and recoverable_channel_errors. py-amqp lists OSError (socket
// and I/O failures) as a recoverable connection error; its counterpart here is
// std::system_error in the system, generic or iostream category.
bool is_connection_error(const std::exception& e) noexcept;
bool is_channel_error(const std::exception& e) noexcept;
bool is_recoverable_connection_error(const std::exception& e) noexcept;
bool is_recoverable_channel_error(const std::exception& e) noexcept;
// Either of the two above: reconnecting (or reopening the channel) and retrying may succeed.
bool is_recoverable_error(const std::exception& e) noexcept;

// ---- std::error_code bridge for the non-throwing API ----

// Reply codes keep their numeric value (any code 1-999 is valid in amqp_category(), named or
// not). Conditions with no reply code take values from 1000 up, one per exception class, so a
// status converts back to the class it came from.
enum class amqp_errc : int {
  content_too_large = 311,
  no_route = 312,
  no_consumers = 313,
  connection_forced = 320,
  invalid_path = 402,
  access_refused = 403,
  not_found = 404,
  resource_locked = 405,
  precondition_failed = 406,
  frame_error = 501,
  frame_syntax_error = 502,
  invalid_command = 503,
  channel_not_open = 504,
  unexpected_frame = 505,
  resource_error = 506,
  not_allowed = 530,
  not_implemented = 540,
  internal_error = 541,

  timeout = 1000,  // equivalent to std::errc::timed_out
  message_nacked,
  consumer_cancelled,
  connection_blocked,
  // An error raised locally without a reply code, by the class it was raised as.
  connection_error,
  recoverable_connection_error,
  irrecoverable_connection_error,
  channel_error,
  recoverable_channel_error,
  irrecoverable_channel_error,
  amqp_error,
};

const std::error_category& amqp_category() noexcept;

inline std::error_code make_error_code(amqp_errc e) noexcept {
  return {static_cast<int>(e), amqp_category()};
}

// An error as a value: everything an amqp_error carries. `code` is empty on success.
struct amqp_status {
  std::error_code code;
  std::string text;  // reply text; for consumer_cancelled, the consumer tag
  std::uint16_t class_id = 0;
  std::uint16_t method_id = 0;
  std::string method_name;

  explicit operator bool() const noexcept { return static_cast<bool>(code); }
};

// The status for an error: its reply code when it has one, else the amqp_errc of its class.
// (A generic class built with a reply code, say channel_error(..., 404), comes back from
// raise() as the class error_for_code gives that code: not_found.)
amqp_status to_status(const amqp_error& e);
amqp_status to_status(const message_nacked& e);

// The exception for a status, the inverse of to_status: an amqp_category code gives the class
// error_for_code (or the amqp_errc) names with the same text and method; a code of another
// category gives std::system_error(code, text). An empty code is a caller bug: throws
// std::invalid_argument.
[[noreturn]] void raise(const amqp_status& status);
// The same exception as an exception_ptr (null for an empty code).
std::exception_ptr make_error(const amqp_status& status);

// The predicates above for a status code: amqp_category by the class raise() would throw,
// system/generic/iostream categories as py-amqp's OSError, any other category false.
bool is_connection_error(std::error_code ec) noexcept;
bool is_channel_error(std::error_code ec) noexcept;
bool is_recoverable_error(std::error_code ec) noexcept;

}  // namespace warren

template <>
struct std::is_error_code_enum<warren::amqp_errc> : std::true_type {};
