#include "tools/cli/message_json.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>

namespace warren::cli {
namespace {

using codec::field_value;

[[noreturn]] void fail(std::string_view what, std::string_view name, const std::string& why) {
  throw json_error(std::string(what) + " '" + std::string(name) + "': " + why);
}

// Header (and argument) errors name the value's path: `l[2]`, `outer.inner`.
[[noreturn]] void fail_header(std::string_view name, const std::string& why) {
  fail("header", name, why);
}

const std::string& checked_utf8(const std::string& s, std::string_view what,
                                std::string_view name) {
  if (!is_valid_utf8(s)) fail(what, name, "not valid UTF-8, which JSON cannot carry");
  return s;
}

template <class T>
T integer_from_json(const json& v, std::string_view name, char letter) {
  constexpr auto lo = std::numeric_limits<T>::min();
  constexpr auto hi = std::numeric_limits<T>::max();
  const auto range = [&] {
    return std::string(" out of range for type ") + letter + " (" + std::to_string(lo) + ".." +
           std::to_string(hi) + ")";
  };
  if (v.is_number_unsigned()) {
    const std::uint64_t u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(hi)) fail_header(name, std::to_string(u) + range());
    return static_cast<T>(u);
  }
  if (v.is_number_integer()) {
    const std::int64_t s = v.get<std::int64_t>();
    const bool below = std::is_signed_v<T> ? s < static_cast<std::int64_t>(lo) : s < 0;
    const bool above = s > 0 && static_cast<std::uint64_t>(s) > static_cast<std::uint64_t>(hi);
    if (below || above) fail_header(name, std::to_string(s) + range());
    return static_cast<T>(s);
  }
  fail_header(name, std::string("type ") + letter + " needs an integer, not " + v.dump());
}

json float_to_json(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return d;
}

double float_from_json(const json& v, std::string_view name, char letter) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
    if (s == "Infinity") return std::numeric_limits<double>::infinity();
    if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
  }
  fail_header(name, std::string("type ") + letter +
                        " needs a number or \"NaN\", \"Infinity\", \"-Infinity\", not " + v.dump());
}

std::string decimal_to_string(codec::decimal d) {
  std::string digits = std::to_string(d.value < 0 ? -static_cast<std::int64_t>(d.value)
                                                  : static_cast<std::int64_t>(d.value));
  if (d.scale > 0) {
    if (digits.size() <= d.scale) digits.insert(0, d.scale + 1 - digits.size(), '0');
    digits.insert(digits.size() - d.scale, 1, '.');
  }
  return d.value < 0 ? "-" + digits : digits;
}

codec::decimal decimal_from_json(const json& v, std::string_view name) {
  if (!v.is_string()) fail_header(name, "type D needs a decimal string like \"3.14\"");
  const std::string& s = v.get_ref<const std::string&>();
  const auto bad = [&]() -> codec::decimal {
    fail_header(name, "'" + s + "' is not a decimal of at most 255 fraction digits within 32 bits");
  };
  std::size_t i = 0;
  const bool negative = !s.empty() && s[0] == '-';
  if (negative) ++i;
  std::int64_t value = 0;
  std::size_t int_digits = 0, frac_digits = 0;
  bool point = false;
  for (; i < s.size(); ++i) {
    if (s[i] == '.' && !point) {
      point = true;
      continue;
    }
    if (s[i] < '0' || s[i] > '9') return bad();
    value = value * 10 + (s[i] - '0');
    if (value > std::int64_t{1} << 31) return bad();
    (point ? frac_digits : int_digits) += 1;
  }
  if (int_digits == 0 || (point && frac_digits == 0) || frac_digits > 255) return bad();
  if (negative) value = -value;
  if (value > std::numeric_limits<std::int32_t>::max()) return bad();
  return {static_cast<std::uint8_t>(frac_digits), static_cast<std::int32_t>(value)};
}

std::string base64_from_json(const json& v, std::string_view name, std::string_view what) {
  std::optional<std::string> bytes;
  if (v.is_string()) bytes = base64_decode(v.get_ref<const std::string&>());
  if (!bytes) fail_header(name, std::string(what) + " needs a padded base64 string");
  return *std::move(bytes);
}

codec::field_table table_from_json_at(const json& j, const std::string& path, bool infer);

field_value untyped_from_json(const json& v, std::string_view name) {
  if (v.is_boolean()) return field_value::boolean(v.get<bool>());
  if (v.is_number_integer()) return field_value::i64(integer_from_json<std::int64_t>(v, name, 'l'));
  if (v.is_number_float()) return field_value::f64(v.get<double>());
  if (v.is_string()) return field_value::long_string(v.get<std::string>());
  fail_header(name, "expected {\"type\": ..., \"value\": ...}, not " + v.dump());
}

field_value value_from_json_at(const json& j, const std::string& name, bool infer) {
  if (infer && !(j.is_object() && j.contains("type"))) return untyped_from_json(j, name);
  if (!j.is_object()) fail_header(name, "expected {\"type\": ..., \"value\": ...}");
  for (const auto& [key, unused] : j.items()) {
    if (key != "type" && key != "value" && key != "value_base64") {
      fail_header(name, "unknown member '" + key + "'");
    }
  }
  const auto type = j.find("type");
  if (type == j.end() || !type->is_string() || type->get_ref<const std::string&>().size() != 1) {
    fail_header(name, "\"type\" must be one of the letters t b B s u I i l L f d D S A T F V x");
  }
  const char letter = type->get_ref<const std::string&>()[0];
  static const json null_value;
  const auto value_it = j.find("value");
  const json& v = value_it == j.end() ? null_value : *value_it;
  if (j.contains("value_base64")) {
    if (letter != 'S' || value_it != j.end()) {
      fail_header(name, "\"value_base64\" is for type S only, instead of \"value\"");
    }
    return field_value::long_string(base64_from_json(j["value_base64"], name, "value_base64"));
  }
  if (value_it == j.end() && letter != 'V') fail_header(name, "missing \"value\"");
  switch (letter) {
    case 't':
      if (!v.is_boolean()) fail_header(name, "type t needs true or false");
      return field_value::boolean(v.get<bool>());
    case 'b':
      return field_value::i8(integer_from_json<std::int8_t>(v, name, letter));
    case 'B':
      return field_value::u8(integer_from_json<std::uint8_t>(v, name, letter));
    case 's':
      return field_value::i16(integer_from_json<std::int16_t>(v, name, letter));
    case 'u':
      return field_value::u16(integer_from_json<std::uint16_t>(v, name, letter));
    case 'I':
      return field_value::i32(integer_from_json<std::int32_t>(v, name, letter));
    case 'i':
      return field_value::u32(integer_from_json<std::uint32_t>(v, name, letter));
    case 'l':
      return field_value::i64(integer_from_json<std::int64_t>(v, name, letter));
    case 'L':
      return field_value::i64_py(integer_from_json<std::int64_t>(v, name, letter));
    case 'T':
      return field_value::timestamp(integer_from_json<std::uint64_t>(v, name, letter));
    case 'f': {
      const double d = float_from_json(v, name, letter);
      if (std::isfinite(d) && std::fabs(d) > std::numeric_limits<float>::max()) {
        fail_header(name, v.dump() + " out of range for type f (32-bit float)");
      }
      return field_value::f32(static_cast<float>(d));
    }
    case 'd':
      return field_value::f64(float_from_json(v, name, letter));
    case 'D':
      return field_value::decimal(decimal_from_json(v, name));
    case 'S':
      if (!v.is_string()) fail_header(name, "type S needs a string (or \"value_base64\")");
      return field_value::long_string(v.get<std::string>());
    case 'x':
      return field_value::bytes(base64_from_json(v, name, "type x"));
    case 'V':
      if (!v.is_null()) fail_header(name, "type V takes no value (null)");
      return field_value::void_value();
    case 'A': {
      if (!v.is_array()) fail_header(name, "type A needs a list of typed values");
      codec::field_array out;
      out.reserve(v.size());
      for (std::size_t i = 0; i < v.size(); ++i) {
        out.push_back(value_from_json_at(v[i], name + "[" + std::to_string(i) + "]", false));
      }
      return field_value::array(std::move(out));
    }
    case 'F':
      if (!v.is_object()) fail_header(name, "type F needs an object of typed values");
      return field_value::table(table_from_json_at(v, name + ".", false));
    default:
      fail_header(name, std::string("unknown type letter '") + letter + "'");
  }
}

codec::field_table table_from_json_at(const json& j, const std::string& prefix, bool infer) {
  codec::field_table out;
  for (const auto& [key, v] : j.items()) {
    if (key.size() > 255) fail_header(prefix + key, "a name is at most 255 octets");
    out.set(key, value_from_json_at(v, prefix + key, infer));
  }
  return out;
}

// The string properties in wire order; delivery_mode, priority and timestamp are handled apart.
struct string_property {
  const char* name;
  std::optional<std::string> properties::*member;
};
constexpr string_property string_properties[] = {
    {"content_type", &properties::content_type},
    {"content_encoding", &properties::content_encoding},
    {"correlation_id", &properties::correlation_id},
    {"reply_to", &properties::reply_to},
    {"expiration", &properties::expiration},
    {"message_id", &properties::message_id},
    {"type", &properties::type},
    {"user_id", &properties::user_id},
    {"app_id", &properties::app_id},
    {"cluster_id", &properties::cluster_id},
};

std::optional<std::string> properties::*find_string_property(std::string_view name) {
  for (const auto& p : string_properties) {
    if (name == p.name) return p.member;
  }
  return nullptr;
}

template <class T>
T property_integer(const json& v, std::string_view name) {
  constexpr auto hi = std::numeric_limits<T>::max();
  if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<std::int64_t>() < 0) ||
      v.get<std::uint64_t>() > hi) {
    fail("property", name, "needs an integer from 0 to " + std::to_string(hi));
  }
  return static_cast<T>(v.get<std::uint64_t>());
}

}  // namespace

bool is_valid_utf8(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n;
    std::uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i - 1 < n) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    const std::uint32_t min_for_length[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_for_length[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

namespace {
constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t n = static_cast<unsigned char>(bytes[i]) << 16 |
                            static_cast<unsigned char>(bytes[i + 1]) << 8 |
                            static_cast<unsigned char>(bytes[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6) out += alphabet[(n >> shift) & 0x3F];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest > 0) {
    std::uint32_t n = static_cast<unsigned char>(bytes[i]) << 16;
    if (rest == 2) n |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += alphabet[(n >> 18) & 0x3F];
    out += alphabet[(n >> 12) & 0x3F];
    out += rest == 2 ? alphabet[(n >> 6) & 0x3F] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    std::uint32_t n = 0;
    int pad = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = text[i + k];
      std::uint32_t sextet = 0;
      if (c == '=' && last && k >= 2 && (k == 3 || text[i + 3] == '=')) {
        ++pad;
      } else if (pad > 0) {
        return std::nullopt;
      } else if (const char* p = std::char_traits<char>::find(alphabet, 64, c); p) {
        sextet = static_cast<std::uint32_t>(p - alphabet);
      } else {
        return std::nullopt;
      }
      n = n << 6 | sextet;
    }
    // Bits that padding leaves unused must be zero, so that every byte string has one spelling.
    if ((pad == 1 && (n & 0xFF) != 0) || (pad == 2 && (n & 0xFFFF) != 0)) return std::nullopt;
    out += static_cast<char>(n >> 16);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xFF);
    if (pad < 1) out += static_cast<char>(n & 0xFF);
  }
  return out;
}

json value_to_json(const field_value& v) {
  json out = json::object();
  out["type"] = std::string(1, v.type());
  switch (v.type()) {
    case 't':
      out["value"] = *v.as_boolean();
      break;
    case 'b':
    case 'B':
    case 's':
    case 'u':
    case 'I':
    case 'i':
    case 'l':
    case 'L':
      out["value"] = *v.as_integer();
      break;
    case 'T':
      out["value"] = *v.as_timestamp();
      break;
    case 'f':
      out["value"] = float_to_json(*v.as_f32());
      break;
    case 'd':
      out["value"] = float_to_json(*v.as_f64());
      break;
    case 'D':
      out["value"] = decimal_to_string(*v.as_decimal());
      break;
    case 'S':
      if (is_valid_utf8(*v.as_long_string())) {
        out["value"] = *v.as_long_string();
      } else {
        out["value_base64"] = base64_encode(*v.as_long_string());
      }
      break;
    case 'x':
      out["value"] = base64_encode(*v.as_bytes());
      break;
    case 'A': {
      json list = json::array();
      for (const field_value& e : *v.as_array()) list.push_back(value_to_json(e));
      out["value"] = std::move(list);
      break;
    }
    case 'F':
      out["value"] = table_to_json(*v.as_table());
      break;
    default:
      out["value"] = nullptr;
      break;
  }
  return out;
}

field_value value_from_json(const json& j, std::string_view name) {
  return value_from_json_at(j, std::string(name), false);
}

json table_to_json(const codec::field_table& t) {
  json out = json::object();
  for (const codec::field_entry& e : t) {
    out[checked_utf8(e.name, "header name", e.name)] = value_to_json(e.value);
  }
  return out;
}

codec::field_table table_from_json(const json& j, std::string_view what, bool infer_untyped) {
  if (!j.is_object()) throw json_error(std::string(what) + " must be a JSON object");
  return table_from_json_at(j, "", infer_untyped);
}

json properties_to_json(const properties& p) {
  json out = json::object();
  const auto put_string = [&](const char* name, const std::optional<std::string>& v) {
    if (v) out[name] = checked_utf8(*v, "property", name);
  };
  put_string("content_type", p.content_type);
  put_string("content_encoding", p.content_encoding);
  if (p.delivery_mode) out["delivery_mode"] = *p.delivery_mode;
  if (p.priority) out["priority"] = *p.priority;
  for (std::size_t i = 2; i < std::size(string_properties); ++i) {
    const string_property& sp = string_properties[i];
    // timestamp sits between message_id and type on the wire, and so in the output.
    if (sp.member == &properties::type && p.timestamp) out["timestamp"] = *p.timestamp;
    put_string(sp.name, p.*sp.member);
  }
  return out;
}

void properties_from_json(const json& j, properties& out) {
  if (!j.is_object()) throw json_error("\"properties\" must be a JSON object");
  for (const auto& [key, v] : j.items()) {
    if (key == "delivery_mode") {
      out.delivery_mode = property_integer<std::uint8_t>(v, key);
    } else if (key == "priority") {
      out.priority = property_integer<std::uint8_t>(v, key);
    } else if (key == "timestamp") {
      out.timestamp = property_integer<std::uint64_t>(v, key);
    } else if (auto member = find_string_property(key)) {
      if (!v.is_string()) fail("property", key, "needs a string");
      if (v.get_ref<const std::string&>().size() > 255) {
        fail("property", key, "longer than 255 octets");
      }
      out.*member = v.get<std::string>();
    } else if (key == "headers" || key == "application_headers") {
      fail("property", key, "headers go in the top-level \"headers\" object");
    } else {
      fail("property", key, "unknown property");
    }
  }
}

json message_to_json(const message& m, bool with_delivery) {
  json out = json::object();
  if (is_valid_utf8(m.body())) {
    out["body"] = m.body();
  } else {
    out["body_base64"] = base64_encode(m.body());
  }
  json props = properties_to_json(m.props());
  if (!props.empty()) out["properties"] = std::move(props);
  if (m.props().headers) out["headers"] = table_to_json(*m.props().headers);
  if (with_delivery) {
    const delivery_info& d = m.delivery_info();
    json del = json::object();
    del["exchange"] = checked_utf8(d.exchange, "delivery", "exchange");
    del["routing_key"] = checked_utf8(d.routing_key, "delivery", "routing_key");
    del["delivery_tag"] = d.delivery_tag;
    del["redelivered"] = d.redelivered;
    if (!d.consumer_tag.empty()) {
      del["consumer_tag"] = checked_utf8(d.consumer_tag, "delivery", "consumer_tag");
    }
    if (d.message_count) del["message_count"] = *d.message_count;
    out["delivery"] = std::move(del);
  }
  return out;
}

message message_from_json(const json& j) {
  if (!j.is_object()) throw json_error("a message must be a JSON object");
  for (const auto& [key, unused] : j.items()) {
    if (key != "body" && key != "body_base64" && key != "properties" && key != "headers" &&
        key != "delivery") {
      throw json_error("unknown message member '" + key + "'");
    }
  }
  std::string body;
  if (j.contains("body") && j.contains("body_base64")) {
    throw json_error("a message has \"body\" or \"body_base64\", not both");
  }
  if (auto it = j.find("body"); it != j.end()) {
    if (!it->is_string()) throw json_error("\"body\" must be a string");
    body = it->get<std::string>();
  } else if (auto b64 = j.find("body_base64"); b64 != j.end()) {
    std::optional<std::string> bytes;
    if (b64->is_string()) bytes = base64_decode(b64->get_ref<const std::string&>());
    if (!bytes) throw json_error("\"body_base64\" must be a padded base64 string");
    body = *std::move(bytes);
  }
  properties props;
  if (auto it = j.find("properties"); it != j.end()) properties_from_json(*it, props);
  if (auto it = j.find("headers"); it != j.end()) props.headers = table_from_json(*it);
  return message(std::move(body), std::move(props));
}

field_value value_from_text(std::string_view name, std::string_view type_and_value) {
  if (type_and_value.size() < 2 || type_and_value[1] != ':') {
    fail_header(name, "expected TYPE:VALUE, e.g. I:42 or S:text");
  }
  const char letter = type_and_value[0];
  const std::string_view text = type_and_value.substr(2);
  json typed = json::object();
  typed["type"] = std::string(1, letter);
  json& v = typed["value"];
  switch (letter) {
    case 't':
      if (text != "true" && text != "false") fail_header(name, "type t takes true or false");
      v = text == "true";
      break;
    case 'b':
    case 'B':
    case 's':
    case 'u':
    case 'I':
    case 'i':
    case 'l':
    case 'L':
    case 'T': {
      std::int64_t s = 0;
      std::uint64_t u = 0;
      const char* end = text.data() + text.size();
      if (auto r = std::from_chars(text.data(), end, s); r.ec == std::errc() && r.ptr == end) {
        v = s;
      } else if (auto r2 = std::from_chars(text.data(), end, u);
                 r2.ec == std::errc() && r2.ptr == end) {
        v = u;
      } else {
        fail_header(name, "'" + std::string(text) + "' is not a 64-bit integer");
      }
      break;
    }
    case 'f':
    case 'd': {
      double d = 0;
      const char* end = text.data() + text.size();
      if (auto r = std::from_chars(text.data(), end, d); r.ec == std::errc() && r.ptr == end) {
        v = float_to_json(d);  // from_chars also reads "nan" and "inf"
      } else {
        v = std::string(text);  // "NaN", "Infinity", "-Infinity", or an error below
      }
      break;
    }
    case 'D':
    case 'S':
    case 'x':
      v = std::string(text);
      break;
    case 'V':
      if (!text.empty()) fail_header(name, "type V takes no value");
      break;
    case 'A':
    case 'F':
      v = json::parse(text.begin(), text.end(), nullptr, false);
      if (v.is_discarded()) fail_header(name, std::string("type ") + letter + " needs JSON");
      break;
    default:
      break;  // value_from_json names the letter
  }
  return value_from_json(typed, name);
}

void property_from_text(std::string_view name_and_value, properties& out) {
  const std::size_t eq = name_and_value.find('=');
  if (eq == std::string_view::npos) {
    throw json_error("property '" + std::string(name_and_value) + "': expected NAME=VALUE");
  }
  const std::string name(name_and_value.substr(0, eq));
  const std::string_view text = name_and_value.substr(eq + 1);
  json j = json::object();
  if (name == "delivery_mode" || name == "priority" || name == "timestamp") {
    std::uint64_t u = 0;
    const char* end = text.data() + text.size();
    if (auto r = std::from_chars(text.data(), end, u); r.ec != std::errc() || r.ptr != end) {
      fail("property", name, "'" + std::string(text) + "' is not a non-negative integer");
    }
    j[name] = u;
  } else {
    j[name] = std::string(text);
  }
  properties_from_json(j, out);
}

}  // namespace warren::cli
