// Messages as JSON, one object per line, for the `warren` command line tool:
//
//   {"body": "utf-8 text"}            or {"body_base64": "..."} when the body is not valid UTF-8
//   "properties": {"content_type": "text/plain", "delivery_mode": 2, ...}
//                                     py-amqp's names; headers are not among them, see below
//   "headers": {"name": {"type": "I", "value": 42}, ...}
//   "delivery": {"exchange": "", "routing_key": "q", "delivery_tag": 1, "redelivered": false,
//                "consumer_tag": "...", "message_count": 0}   (output only; ignored on input)
//
// Typed values use RabbitMQ's letters (codec/field_table.h):
//   t  JSON boolean                     b B s u I i l  JSON integer, range-checked for the letter
//   f d  JSON number, or "NaN", "Infinity", "-Infinity"
//   D  decimal string: "3.14" is scale 2, value 314 ("-0.050" is scale 3, value -50)
//   T  integer seconds since the epoch  S  text, or "value_base64" when the bytes are not UTF-8
//   x  base64 string                    V  null (or no "value")
//   A  JSON array of typed values       F  JSON object of typed values
// Object members keep their order, so a table survives message -> JSON -> message with its
// entries in wire order, and the round trip gives back an equal message (floats included, NaN
// aside: any NaN comes back as the quiet NaN).
//
// Errors: every function that reads JSON throws json_error with a one-line message naming the
// value at fault, e.g. `header 'x-n': 300 out of range for type B (0..255)` or
// `header 'l[2]': unknown type letter 'Q'`. The writers throw json_error only for what JSON
// cannot carry faithfully: a header name, property or delivery string that is not valid UTF-8.
// Nothing here does I/O; every function may be called from any thread.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "codec/field_table.h"
#include "engine/client/message.h"

namespace warren::cli {

// Insertion-ordered, so header tables keep their wire order.
using json = nlohmann::ordered_json;

class json_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. This is
// the rule nlohmann::json enforces when it writes a string.
bool is_valid_utf8(std::string_view s) noexcept;

// Standard base64 (RFC 4648 section 4) with padding.
std::string base64_encode(std::string_view bytes);
// The decoded bytes, or nullopt unless `text` is canonical padded base64 (length a multiple of
// 4, alphabet only, unused bits zero), so that each byte string has exactly one spelling.
std::optional<std::string> base64_decode(std::string_view text);

// One typed value: {"type": "<letter>", "value": ...}.
json value_to_json(const codec::field_value& v);
// `name` is used in error messages only (`header 'name': ...`).
codec::field_value value_from_json(const json& j, std::string_view name);

// A table as a JSON object of typed values, in entry order.
json table_to_json(const codec::field_table& t);
// With `infer_untyped` (queue arguments on the command line), a member that is not a typed
// object may be a plain JSON scalar: boolean -> t, integer -> l, other number -> d,
// string -> S. A duplicated name keeps its first position and last value.
codec::field_table table_from_json(const json& j, std::string_view what = "headers",
                                   bool infer_untyped = false);

// The 13 non-header properties that are set, by py-amqp name, in property order.
json properties_to_json(const properties& p);
// Sets the properties named in `j` (an object), leaving the others (and headers) as they are.
void properties_from_json(const json& j, properties& out);

// The whole message; "delivery" only with `with_delivery`. "headers" appears when the message
// has a headers property, even an empty one, so that its presence also survives a round trip.
json message_to_json(const message& m, bool with_delivery = true);
// An outgoing message. Unknown top-level members are errors (a misspelt "properties" must not
// publish a message without them); "delivery" is accepted and ignored.
message message_from_json(const json& j);

// Command-line forms. `type_and_value` is "<letter>:<text>": t takes true/false, integers and
// T decimal digits, f/d a number or NaN/Infinity/-Infinity, D a decimal, S the text itself,
// x base64, V nothing, A and F the JSON of their "value" (a list or object of typed values).
codec::field_value value_from_text(std::string_view name, std::string_view type_and_value);
// "name=value" for one property; delivery_mode, priority and timestamp take integers.
void property_from_text(std::string_view name_and_value, properties& out);

}  // namespace warren::cli
