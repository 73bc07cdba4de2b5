#include "engine/errors.h"

#include <type_traits>
#include <utility>

namespace warren {

struct amqp_error::fields {
  std::uint16_t reply_code;
  std::string reply_text;
  method_signature method;
  std::string method_name;
};

namespace {

struct named_code {
  std::uint16_t code;
  std::string_view name;
};

constexpr named_code reply_code_names[] = {
    {200, "REPLY_SUCCESS"},       {311, "CONTENT_TOO_LARGE"}, {312, "NO_ROUTE"},
    {313, "NO_CONSUMERS"},        {320, "CONNECTION_FORCED"}, {402, "INVALID_PATH"},
    {403, "ACCESS_REFUSED"},      {404, "NOT_FOUND"},         {405, "RESOURCE_LOCKED"},
    {406, "PRECONDITION_FAILED"}, {501, "FRAME_ERROR"},       {502, "SYNTAX_ERROR"},
    {503, "COMMAND_INVALID"},     {504, "CHANNEL_ERROR"},     {505, "UNEXPECTED_FRAME"},
    {506, "RESOURCE_ERROR"},      {530, "NOT_ALLOWED"},       {540, "NOT_IMPLEMENTED"},
    {541, "INTERNAL_ERROR"},
};

std::string format_what(std::uint16_t code, const std::string& text, method_signature method,
                        const std::string& method_name) {
  std::string out;
  if (code != 0) out = std::to_string(code);
  std::string_view body = text;
  if (body.empty()) body = reply_code_name(code);
  if (!body.empty()) {
    if (!out.empty()) out += ' ';
    out += body;
  }
  if (out.empty()) out = "AMQP error";
  if (!method_name.empty()) {
    out += " (" + method_name + ")";
  } else if (!method.empty()) {
    out += " (" + std::to_string(method.class_id) + "," + std::to_string(method.method_id) + ")";
  }
  return out;
}

constexpr int local_base = static_cast<int>(amqp_errc::timeout);

// The one place that maps a code to a class. `value` is a reply code, or with Locals also an
// amqp_errc above 999. f receives std::type_identity<E> and must return the same type for all E.
template <bool Locals, class F>
auto with_class(int value, F&& f) {
  using id = amqp_errc;
  switch (value) {
    case content_too_large::code:
      return f(std::type_identity<content_too_large>{});
    case no_route::code:
      return f(std::type_identity<no_route>{});
    case no_consumers::code:
      return f(std::type_identity<no_consumers>{});
    case connection_forced::code:
      return f(std::type_identity<connection_forced>{});
    case invalid_path::code:
      return f(std::type_identity<invalid_path>{});
    case access_refused::code:
      return f(std::type_identity<access_refused>{});
    case not_found::code:
      return f(std::type_identity<not_found>{});
    case resource_locked::code:
      return f(std::type_identity<resource_locked>{});
    case precondition_failed::code:
      return f(std::type_identity<precondition_failed>{});
    case frame_error::code:
      return f(std::type_identity<frame_error>{});
    case frame_syntax_error::code:
      return f(std::type_identity<frame_syntax_error>{});
    case invalid_command::code:
      return f(std::type_identity<invalid_command>{});
    case channel_not_open::code:
      return f(std::type_identity<channel_not_open>{});
    case unexpected_frame::code:
      return f(std::type_identity<unexpected_frame>{});
    case resource_error::code:
      return f(std::type_identity<resource_error>{});
    case not_allowed::code:
      return f(std::type_identity<not_allowed>{});
    case amqp_not_implemented_error::code:
      return f(std::type_identity<amqp_not_implemented_error>{});
    case internal_error::code:
      return f(std::type_identity<internal_error>{});
    default:
      break;
  }
  if constexpr (Locals) {
    switch (static_cast<id>(value)) {
      case id::timeout:
        return f(std::type_identity<amqp_timeout>{});
      case id::message_nacked:
        return f(std::type_identity<message_nacked>{});
      case id::consumer_cancelled:
        return f(std::type_identity<consumer_cancelled>{});
      case id::connection_blocked:
        return f(std::type_identity<connection_blocked>{});
      case id::connection_error:
        return f(std::type_identity<connection_error>{});
      case id::recoverable_connection_error:
        return f(std::type_identity<recoverable_connection_error>{});
      case id::irrecoverable_connection_error:
        return f(std::type_identity<irrecoverable_connection_error>{});
      case id::channel_error:
        return f(std::type_identity<channel_error>{});
      case id::recoverable_channel_error:
        return f(std::type_identity<recoverable_channel_error>{});
      case id::irrecoverable_channel_error:
        return f(std::type_identity<irrecoverable_channel_error>{});
      case id::amqp_error:
        return f(std::type_identity<amqp_error>{});
      default:
        break;
    }
  }
  // The spec's soft (channel) errors are 3xx and 4xx; everything else closes the connection.
  if (value >= 300 && value < 500) return f(std::type_identity<channel_error>{});
  return f(std::type_identity<connection_error>{});
}

// Builds E from the fields every class understands; `code` only reaches the classes that take
// one (the generic ones), the others carry their own.
template <class E>
E construct(int value, std::string text, method_signature method, std::string name) {
  if constexpr (std::is_constructible_v<E, std::string, method_signature, std::string,
                                        std::uint16_t>) {
    auto code = static_cast<std::uint16_t>(value > 0 && value < local_base ? value : 0);
    return E(std::move(text), method, std::move(name), code);
  } else if constexpr (std::is_constructible_v<E, std::string, method_signature, std::string>) {
    return E(std::move(text), method, std::move(name));
  } else {
    return E(text);
  }
}

template <bool Locals>
std::exception_ptr make_ptr(int value, std::string text, method_signature method,
                            std::string name) {
  return with_class<Locals>(value, [&](auto type) {
    using E = typename decltype(type)::type;
    return std::make_exception_ptr(construct<E>(value, std::move(text), method, std::move(name)));
  });
}

bool is_os_category(const std::error_category& c) noexcept {
  return c == std::system_category() || c == std::generic_category() ||
         c == std::iostream_category();
}

bool is_os_error(const std::exception& e) noexcept {
  const auto* se = dynamic_cast<const std::system_error*>(&e);
  return se != nullptr && is_os_category(se->code().category());
}

template <class Base>
bool is_a(const std::exception& e) noexcept {
  return dynamic_cast<const Base*>(&e) != nullptr;
}

// The amqp_errc of an error raised without a reply code: its most derived class that has one.
amqp_errc local_code(const amqp_error& e) noexcept {
  using id = amqp_errc;
  if (is_a<consumer_cancelled>(e)) return id::consumer_cancelled;
  if (is_a<connection_blocked>(e)) return id::connection_blocked;
  if (is_a<amqp_timeout>(e)) return id::timeout;
  if (is_a<recoverable_connection_error>(e)) return id::recoverable_connection_error;
  if (is_a<irrecoverable_connection_error>(e)) return id::irrecoverable_connection_error;
  if (is_a<connection_error>(e)) return id::connection_error;
  if (is_a<recoverable_channel_error>(e)) return id::recoverable_channel_error;
  if (is_a<irrecoverable_channel_error>(e)) return id::irrecoverable_channel_error;
  if (is_a<channel_error>(e)) return id::channel_error;
  return id::amqp_error;
}

class amqp_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "warren.amqp"; }

  std::string message(int value) const override {
    using id = amqp_errc;
    switch (static_cast<id>(value)) {
      case id::timeout:
        return "timed out";
      case id::message_nacked:
        return "message nacked by the broker";
      case id::consumer_cancelled:
        return "consumer cancelled by the broker";
      case id::connection_blocked:
        return "connection blocked by the broker";
      case id::connection_error:
        return "connection error";
      case id::recoverable_connection_error:
        return "recoverable connection error";
      case id::irrecoverable_connection_error:
        return "irrecoverable connection error";
      case id::channel_error:
        return "channel error";
      case id::recoverable_channel_error:
        return "recoverable channel error";
      case id::irrecoverable_channel_error:
        return "irrecoverable channel error";
      case id::amqp_error:
        return "AMQP error";
      default:
        break;
    }
    if (value > 0 && value < local_base) {
      auto name = reply_code_name(static_cast<std::uint16_t>(value));
      return std::to_string(value) + " " +
             (name.empty() ? "unknown reply code" : std::string(name));
    }
    return "unknown AMQP error " + std::to_string(value);
  }

  std::error_condition default_error_condition(int value) const noexcept override {
    if (value == static_cast<int>(amqp_errc::timeout)) return std::errc::timed_out;
    return {value, *this};
  }
};

// The class raise() would throw for an amqp_category value, tested against Base.
template <class Base>
bool amqp_value_is_a(int value) noexcept {
  return with_class<true>(
      value, [](auto type) { return std::is_base_of_v<Base, typename decltype(type)::type>; });
}

}  // namespace

std::string_view reply_code_name(std::uint16_t code) noexcept {
  for (const auto& row : reply_code_names) {
    if (row.code == code) return row.name;
  }
  return {};
}

amqp_error::amqp_error(std::string reply_text, method_signature method, std::string method_name,
                       std::uint16_t reply_code)
    : std::runtime_error(format_what(reply_code, reply_text, method, method_name)),
      fields_(std::make_shared<const fields>(
          fields{reply_code, std::move(reply_text), method, std::move(method_name)})) {}

amqp_error::amqp_error(custom_what, const std::string& message, std::string reply_text,
                       method_signature method, std::string method_name, std::uint16_t reply_code)
    : std::runtime_error(message),
      fields_(std::make_shared<const fields>(
          fields{reply_code, std::move(reply_text), method, std::move(method_name)})) {}

std::uint16_t amqp_error::reply_code() const noexcept {
  return fields_->reply_code;
}
const std::string& amqp_error::reply_text() const noexcept {
  return fields_->reply_text;
}
method_signature amqp_error::method_sig() const noexcept {
  return fields_->method;
}
const std::string& amqp_error::method_name() const noexcept {
  return fields_->method_name;
}

consumer_cancelled::consumer_cancelled(std::string consumer_tag, method_signature method,
                                       std::string method_name)
    : recoverable_connection_error(
          custom_what{},
          format_what(0, "consumer '" + consumer_tag + "' cancelled by the broker", method,
                      method_name),
          // Copies, not moves: argument evaluation order is unspecified, and the message above
          // reads both strings.
          consumer_tag, method, method_name, 0) {}

std::unique_ptr<amqp_error> error_for_code(std::uint16_t code, std::string reply_text,
                                           std::uint16_t class_id, std::uint16_t method_id,
                                           std::string method_name) {
  return with_class<false>(code, [&](auto type) -> std::unique_ptr<amqp_error> {
    using E = typename decltype(type)::type;
    return std::make_unique<E>(
        construct<E>(code, std::move(reply_text), {class_id, method_id}, std::move(method_name)));
  });
}

std::exception_ptr make_error(std::uint16_t code, std::string reply_text, std::uint16_t class_id,
                              std::uint16_t method_id, std::string method_name) {
  return make_ptr<false>(code, std::move(reply_text), {class_id, method_id},
                         std::move(method_name));
}

void throw_for_code(std::uint16_t code, std::string reply_text, std::uint16_t class_id,
                    std::uint16_t method_id, std::string method_name) {
  std::rethrow_exception(
      make_error(code, std::move(reply_text), class_id, method_id, std::move(method_name)));
}

bool is_connection_error(const std::exception& e) noexcept {
  return is_a<connection_error>(e) || is_os_error(e);
}

bool is_channel_error(const std::exception& e) noexcept {
  return is_a<channel_error>(e);
}

bool is_recoverable_connection_error(const std::exception& e) noexcept {
  return is_a<recoverable_connection_error>(e) || is_os_error(e);
}

bool is_recoverable_channel_error(const std::exception& e) noexcept {
  return is_a<recoverable_channel_error>(e);
}

bool is_recoverable_error(const std::exception& e) noexcept {
  return is_recoverable_connection_error(e) || is_recoverable_channel_error(e);
}

const std::error_category& amqp_category() noexcept {
  static const amqp_category_impl category;
  return category;
}

amqp_status to_status(const amqp_error& e) {
  int value = e.reply_code() != 0 ? e.reply_code() : static_cast<int>(local_code(e));
  auto method = e.method_sig();
  return {std::error_code(value, amqp_category()), e.reply_text(), method.class_id,
          method.method_id, e.method_name()};
}

amqp_status to_status(const message_nacked& e) {
  return {make_error_code(amqp_errc::message_nacked), e.what(), 0, 0, {}};
}

std::exception_ptr make_error(const amqp_status& status) {
  if (!status.code) return nullptr;
  if (status.code.category() != amqp_category()) {
    return std::make_exception_ptr(std::system_error(status.code, status.text));
  }
  return make_ptr<true>(status.code.value(), status.text, {status.class_id, status.method_id},
                        status.method_name);
}

void raise(const amqp_status& status) {
  if (!status.code) throw std::invalid_argument("warren::raise: the status holds no error");
  std::rethrow_exception(make_error(status));
}

bool is_connection_error(std::error_code ec) noexcept {
  if (!ec) return false;
  if (ec.category() == amqp_category()) return amqp_value_is_a<connection_error>(ec.value());
  return is_os_category(ec.category());
}

bool is_channel_error(std::error_code ec) noexcept {
  return ec && ec.category() == amqp_category() && amqp_value_is_a<channel_error>(ec.value());
}

bool is_recoverable_error(std::error_code ec) noexcept {
  if (!ec) return false;
  if (ec.category() == amqp_category()) {
    return amqp_value_is_a<recoverable_connection_error>(ec.value()) ||
           amqp_value_is_a<recoverable_channel_error>(ec.value());
  }
  return is_os_category(ec.category());
}

}  // namespace warren
