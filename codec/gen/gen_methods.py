#!/usr/bin/python3
"""Generates codec/methods.h and codec/methods.cc from the AMQP 0-9-1 spec JSON.

Usage: gen_methods.py SPEC.json OUT_HEADER OUT_SOURCE

Run by the genrule in codec/BUILD; standard library only. The output is plain C++ that a reader
can audit: one struct per method, straight-line encoders (inline, so that a publish is a few
stores), bounds-checked decoders, and one switch from (class-id, method-id) to the struct type.
Every wire type maps to one row of WIRE_TYPES, so adding a type is adding a row.
"""

import json
import sys
from dataclasses import dataclass

SPEC_PATH_IN_REPO = "codec/spec/amqp-rabbitmq-0.9.1.json"
GENERATOR_PATH_IN_REPO = "codec/gen/gen_methods.py"


@dataclass(frozen=True)
class wire_type:
    cpp: str  # member type
    fixed: int  # octets on the wire excluding a variable part
    put: str  # detail:: store helper from codec/wire.h; None for bit
    read: str  # reader member
    var_size: str = ""  # expression (with {m}) adding the variable part's size
    max_len: str = ""  # largest encodable variable part, if limited
    too_long: str = ""  # errc returned above max_len


WIRE_TYPES = {
    "octet": wire_type("std::uint8_t", 1, "put_u8", "read_u8"),
    "short": wire_type("std::uint16_t", 2, "put_u16", "read_u16"),
    "long": wire_type("std::uint32_t", 4, "put_u32", "read_u32"),
    "longlong": wire_type("std::uint64_t", 8, "put_u64", "read_u64"),
    "timestamp": wire_type("std::uint64_t", 8, "put_u64", "read_u64"),
    "bit": wire_type("bool", 0, None, None),
    "shortstr": wire_type("std::string_view", 1, "put_shortstr", "read_shortstr",
                          "{m}.size()", "255", "errc::string_too_long"),
    "longstr": wire_type("std::string_view", 4, "put_longstr", "read_longstr",
                         "{m}.size()", "0xFFFFFFFFu", "errc::value_out_of_range"),
    "table": wire_type("table_view", 4, "put_table", "read_table",
                       "{m}.raw.size()", "0xFFFFFFFFu", "errc::value_out_of_range"),
}

# Every struct carries these static members; an argument with the same name is renamed.
STATIC_MEMBERS = {"class_id", "method_id", "id", "name", "synchronous", "has_content"}
# connection.close and channel.close name the method that failed; the static class_id/method_id
# of the close struct itself keep the plain names.
RENAMES = {"class_id": "failing_class_id", "method_id": "failing_method_id"}

CPP_KEYWORDS = {
    "alignas", "alignof", "and", "asm", "auto", "bool", "break", "case", "catch", "char",
    "class", "concept", "const", "consteval", "constexpr", "constinit", "continue", "default",
    "delete", "do", "double", "else", "enum", "explicit", "export", "extern", "false", "float",
    "for", "friend", "goto", "if", "inline", "int", "long", "mutable", "namespace", "new",
    "noexcept", "not", "nullptr", "operator", "or", "private", "protected", "public",
    "register", "requires", "return", "short", "signed", "sizeof", "static", "struct",
    "switch", "template", "this", "throw", "true", "try", "typedef", "typename", "union",
    "unsigned", "using", "virtual", "void", "volatile", "while", "xor",
}


def ident(spec_name):
    return spec_name.replace("-", "_")


@dataclass
class field:
    spec_name: str
    member: str
    wire: str  # key of WIRE_TYPES
    default: object  # None when the spec gives none


@dataclass
class method:
    cls: str
    cls_id: int
    spec_name: str
    method_id: int
    synchronous: bool
    content: bool
    fields: list

    @property
    def struct(self):
        return ident(f"{self.cls}_{self.spec_name}")

    @property
    def dotted(self):
        return f"{self.cls}.{self.spec_name}"


def load(spec_path):
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    domains = dict(spec["domains"])
    methods = []
    for c in spec["classes"]:
        for m in c["methods"]:
            fields = []
            for a in m["arguments"]:
                wire = a.get("type") or domains[a["domain"]]
                if wire not in WIRE_TYPES:
                    sys.exit(f"{c['name']}.{m['name']}: unknown wire type {wire}")
                member = ident(a["name"])
                if member in STATIC_MEMBERS:
                    if member not in RENAMES:
                        sys.exit(f"{c['name']}.{m['name']}: argument {member} has no rename")
                    member = RENAMES[member]
                if member in CPP_KEYWORDS:
                    sys.exit(f"{c['name']}.{m['name']}: argument {member} is a C++ keyword")
                fields.append(field(a["name"], member, wire, a.get("default-value")))
            methods.append(method(c["name"], c["id"], m["name"], m["id"],
                                  bool(m.get("synchronous")), bool(m.get("content")), fields))
    ids = [(m.cls_id, m.method_id) for m in methods]
    if len(set(ids)) != len(ids):
        sys.exit("duplicate (class-id, method-id) in the spec")
    return spec, methods


def cpp_string(s):
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= ord(ch) < 0x7F:
            out.append(ch)
        else:
            sys.exit(f"unexpected character in a default value: {ch!r}")
    return '"' + "".join(out) + '"'


def default_initializer(f):
    if f.default is None:
        return "{}"
    if f.wire == "bit":
        return "true" if f.default else "false"
    if f.wire in ("shortstr", "longstr"):
        return cpp_string(f.default)
    if f.wire == "table":
        if f.default != {}:
            sys.exit(f"{f.spec_name}: only empty default tables are supported")
        return "{}"
    return str(int(f.default))


def runs(fields):
    """Splits fields into wire items: a single non-bit field, or a list of up to 8 bit fields
    sharing one octet (consecutive bits only; a non-bit field ends a run)."""
    items = []
    bits = []
    for f in fields:
        if f.wire == "bit":
            if len(bits) == 8:
                items.append(bits)
                bits = []
            bits.append(f)
            continue
        if bits:
            items.append(bits)
            bits = []
        items.append(f)
    if bits:
        items.append(bits)
    return items


def gen_struct(m, out):
    out.append(f"// {m.dotted} ({m.cls_id}, {m.method_id})")
    out.append(f"struct {m.struct} {{")
    out.append(f"  static constexpr std::uint16_t class_id = {m.cls_id};")
    out.append(f"  static constexpr std::uint16_t method_id = {m.method_id};")
    out.append(f"  static constexpr std::uint32_t id = 0x{(m.cls_id << 16) | m.method_id:08X}u;")
    out.append(f'  static constexpr std::string_view name = "{m.dotted}";')
    out.append(f"  static constexpr bool synchronous = {'true' if m.synchronous else 'false'};")
    out.append(f"  static constexpr bool has_content = {'true' if m.content else 'false'};")
    if m.fields:
        out.append("")
    for f in m.fields:
        out.append(f"  {WIRE_TYPES[f.wire].cpp} {f.member} = {default_initializer(f)};")
    out.append("")
    out.append(f"  bool operator==(const {m.struct}&) const = default;")
    out.append("")
    out.append("  // Calls f(spec_name, member) for every argument in wire order; Self is this")
    out.append("  // struct, const or not.")
    if m.fields:
        out.append("  template <class Self, class F>")
        out.append("  static constexpr void for_each_field(Self& self, F&& f) {")
        for f in m.fields:
            out.append(f'    f(std::string_view("{f.spec_name}"), self.{f.member});')
        out.append("  }")
    else:
        out.append("  template <class Self, class F>")
        out.append("  static constexpr void for_each_field(Self&, F&&) {}")
    out.append("};")
    out.append("")


def gen_encoded_size(m, out):
    fixed = 4
    var = []
    for item in runs(m.fields):
        if isinstance(item, list):
            fixed += 1
            continue
        w = WIRE_TYPES[item.wire]
        fixed += w.fixed
        if w.var_size:
            var.append(w.var_size.format(m="m." + item.member))
    param = "m" if var else ""
    out.append(f"inline std::size_t encoded_size(const {m.struct}& {param}) noexcept {{")
    out.append(f"  return {' + '.join([str(fixed)] + var)};")
    out.append("}")
    out.append("")


def bit_octet_expr(bits, obj):
    parts = [f"({obj}.{b.member} ? 0x{1 << i:02X}u : 0u)" for i, b in enumerate(bits)]
    return " | ".join(parts)


def gen_encode(m, out):
    out.append(f"inline errc encode(const {m.struct}& m, writer& w) noexcept {{")
    for f in m.fields:
        w = WIRE_TYPES[f.wire]
        if w.max_len:
            size = w.var_size.format(m="m." + f.member)
            out.append(f"  if ({size} > {w.max_len}) return {w.too_long};")
    out.append("  const std::size_t n = encoded_size(m);")
    out.append("  if (w.reserve(n) == static_cast<std::size_t>(-1)) return errc::buffer_too_small;")
    out.append("  char* p = w.position() - n;")
    out.append(f"  p = detail::put_u32(p, {m.struct}::id);")
    for item in runs(m.fields):
        if isinstance(item, list):
            out.append(f"  p = detail::put_u8(p, static_cast<std::uint8_t>({bit_octet_expr(item, 'm')}));")
        else:
            out.append(f"  p = detail::{WIRE_TYPES[item.wire].put}(p, m.{item.member});")
    out.append("  (void)p;")
    out.append("  return errc::ok;")
    out.append("}")
    out.append("")


def gen_decode(m, out):
    if not m.fields:
        out.append(f"errc decode(std::string_view args, {m.struct}& out) noexcept {{")
        out.append("  if (!args.empty()) return errc::trailing_bytes;")
        out.append("  out = {};")
        out.append("  return errc::ok;")
        out.append("}")
        out.append("")
        return
    out.append(f"errc decode(std::string_view args, {m.struct}& out) noexcept {{")
    out.append("  reader r(args);")
    out.append(f"  {m.struct} m;")
    items = runs(m.fields)
    nbits = sum(1 for i in items if isinstance(i, list))
    for k in range(nbits):
        out.append(f"  std::uint8_t bits{k};")
    k = 0
    for item in items:
        if isinstance(item, list):
            out.append(f"  if (!r.read_u8(bits{k})) return errc::truncated;")
            for i, b in enumerate(item):
                out.append(f"  m.{b.member} = (bits{k} & 0x{1 << i:02X}u) != 0;")
            k += 1
        else:
            out.append(f"  if (!r.{WIRE_TYPES[item.wire].read}(m.{item.member})) return errc::truncated;")
    out.append("  if (!r.empty()) return errc::trailing_bytes;")
    out.append("  out = m;")
    out.append("  return errc::ok;")
    out.append("}")
    out.append("")


def constant_type(c):
    """Reply codes (those with an error class, and REPLY-SUCCESS) are shorts; the frame size is a
    long; the rest (frame types, frame-end) are octets."""
    name, value = c["name"], c["value"]
    if "class" in c or name.startswith("REPLY-"):
        limit, cpp = 0xFFFF, "std::uint16_t"
    elif name == "FRAME-MIN-SIZE":
        limit, cpp = 0xFFFFFFFF, "std::uint32_t"
    else:
        limit, cpp = 0xFF, "std::uint8_t"
    if value > limit:
        sys.exit(f"{name} = {value} does not fit {cpp}")
    return cpp


def banner():
    return [
        f"// Generated from {SPEC_PATH_IN_REPO} by {GENERATOR_PATH_IN_REPO}. Do not edit:",
        "// change the generator or the spec and rebuild.",
    ]


HEADER_CONTRACT = """\
// The AMQP 0-9-1 methods as RabbitMQ speaks them: one plain struct per method, with its
// ids and flags as static members and its arguments, in spec order, as data members.
//
// Method payload = class-id (short) . method-id (short) . arguments. Consecutive bit
// arguments share octets, least significant bit first; any other argument ends the run.
//
// Views: shortstr/longstr arguments are std::string_view and tables are table_view. After
// decode() they point into the `args` bytes given to it and are valid exactly as long as
// those bytes are; nothing here owns or copies them. Table contents are not parsed here;
// codec/field_table.h parses a table_view with limits.
//
// Threads: every function is pure apart from its output arguments; any thread may call any
// function concurrently on distinct outputs.
//
// Functions, for every method struct T:
//   std::size_t encoded_size(const T&) noexcept
//     The exact payload size encode() writes, class-id and method-id included.
//   errc encode(const T&, writer&) noexcept
//     Appends the payload. Errors: string_too_long (a shortstr above 255 octets),
//     value_out_of_range (a longstr or table above 4 GiB - 1), both before anything is
//     written; buffer_too_small (a fixed writer without room; the writer is then
//     overflowed() and nothing of this method was written).
//   errc decode(std::string_view args, T&) noexcept
//     Decodes the arguments that follow class-id and method-id. Errors: truncated (an
//     argument or a length prefix runs past the end), trailing_bytes (bytes after the last
//     argument). On error the output is left unchanged. Bits above the arguments in a bit
//     octet are ignored, as RabbitMQ does.
//   errc dispatch_method(std::string_view payload, Visitor&& v)
//     Reads the ids, decodes into the matching struct and calls v(const T&). v must accept
//     every method type (a generic lambda, or an overload set) and return void or errc;
//     a returned errc is passed through. Errors: truncated (payload under 4 octets, or as
//     decode), unknown_method (ids not in the spec; nothing decoded), trailing_bytes. v is
//     called only on success and may throw only if the caller is prepared for it.
"""


def generate_header(spec, methods):
    out = banner()
    out.append("//")
    out.extend(HEADER_CONTRACT.rstrip("\n").split("\n"))
    out.append("#pragma once")
    out.append("")
    for inc in ["<cstddef>", "<cstdint>", "<string_view>", "<type_traits>",
                "<utility>"]:
        out.append(f"#include {inc}")
    out.append("")
    out.append('#include "codec/error.h"')
    out.append('#include "codec/wire.h"')
    out.append("")
    out.append("namespace warren::codec {")
    out.append("")
    out.append("namespace constants {")
    out.append("")
    out.append(f"inline constexpr std::uint8_t version_major = {spec['major-version']};")
    out.append(f"inline constexpr std::uint8_t version_minor = {spec['minor-version']};")
    out.append(f"inline constexpr std::uint8_t version_revision = {spec['revision']};")
    out.append(f"inline constexpr std::uint16_t default_port = {spec['port']};")
    out.append("")
    hard = []
    for c in spec["constants"]:
        out.append(f"inline constexpr {constant_type(c)} "
                   f"{ident(c['name']).lower()} = {c['value']};")
        if c.get("class") == "hard-error":
            hard.append(ident(c["name"]).lower())
    out.append("")
    for c in spec["classes"]:
        out.append(f"inline constexpr std::uint16_t class_{ident(c['name'])} = {c['id']};")
    out.append("")
    out.append("// True for the reply codes the spec classes as hard errors: a peer sending or")
    out.append("// receiving one closes the connection, not just the channel.")
    out.append("constexpr bool is_hard_error(std::uint16_t code) noexcept {")
    out.append("  switch (code) {")
    for h in hard:
        out.append(f"    case {h}:")
    out.append("      return true;")
    out.append("    default:")
    out.append("      return false;")
    out.append("  }")
    out.append("}")
    out.append("")
    out.append("}  // namespace constants")
    out.append("")
    out.append("// A compile-time list of method structs, to iterate every method.")
    out.append("template <class... Ts>")
    out.append("struct method_list {")
    out.append("  static constexpr std::size_t size = sizeof...(Ts);")
    out.append("};")
    out.append("")
    for m in methods:
        gen_struct(m, out)
        gen_encoded_size(m, out)
        gen_encode(m, out)
        out.append(f"errc decode(std::string_view args, {m.struct}& out) noexcept;")
        out.append("")
    out.append("using all_methods = method_list<")
    out.append(",\n".join(f"    {m.struct}" for m in methods) + ">;")
    out.append("")
    out.append("namespace detail {")
    out.append("")
    out.append("// Calls f(std::type_identity<T>{}) for the method struct T whose id is")
    out.append("// (class-id << 16 | method-id) and returns its result, or `unknown` for any other id.")
    out.append("template <class R, class F>")
    out.append("constexpr R with_method_type(std::uint32_t id, R unknown, F&& f) {")
    out.append("  switch (id) {")
    for m in methods:
        out.append(f"    case {m.struct}::id:")
        out.append(f"      return f(std::type_identity<{m.struct}>{{}});")
    out.append("    default:")
    out.append("      return unknown;")
    out.append("  }")
    out.append("}")
    out.append("")
    out.append("}  // namespace detail")
    out.append("")
    out.append(DISPATCH)
    out.append("// Facts about a method by its ids; for ids not in the spec: \"\", false, false, false.")
    out.append("std::string_view method_name(std::uint16_t class_id, std::uint16_t method_id) noexcept;")
    out.append("bool method_known(std::uint16_t class_id, std::uint16_t method_id) noexcept;")
    out.append("bool method_has_content(std::uint16_t class_id, std::uint16_t method_id) noexcept;")
    out.append("bool method_is_synchronous(std::uint16_t class_id, std::uint16_t method_id) noexcept;")
    out.append("")
    out.append("}  // namespace warren::codec")
    return "\n".join(out) + "\n"


DISPATCH = """\
template <class Visitor>
errc dispatch_method(std::string_view payload, Visitor&& v) {
  if (payload.size() < 4) return errc::truncated;
  const std::uint32_t id = reader::load_u32(payload.data());
  const std::string_view args = payload.substr(4);
  return detail::with_method_type(id, errc::unknown_method, [&](auto type) -> errc {
    using method_type = typename decltype(type)::type;
    method_type m;
    if (const errc e = decode(args, m); e != errc::ok) return e;
    using result = std::invoke_result_t<Visitor&, const method_type&>;
    static_assert(std::is_void_v<result> || std::is_convertible_v<result, errc>,
                  "a method visitor returns void or errc");
    if constexpr (std::is_void_v<result>) {
      v(std::as_const(m));
      return errc::ok;
    } else {
      return static_cast<errc>(v(std::as_const(m)));
    }
  });
}
"""


def generate_source(methods):
    out = banner()
    out.append('#include "codec/methods.h"')
    out.append("")
    out.append("namespace warren::codec {")
    out.append("")
    for m in methods:
        gen_decode(m, out)
    out.append(SOURCE_INFO)
    out.append("}  // namespace warren::codec")
    return "\n".join(out) + "\n"


SOURCE_INFO = """\
namespace {

struct method_info {
  std::string_view name;
  bool known = false;
  bool synchronous = false;
  bool has_content = false;
};

method_info info(std::uint16_t class_id, std::uint16_t method_id) noexcept {
  const std::uint32_t id = (std::uint32_t{class_id} << 16) | method_id;
  return detail::with_method_type(id, method_info{}, [](auto type) {
    using method_type = typename decltype(type)::type;
    return method_info{method_type::name, true, method_type::synchronous,
                       method_type::has_content};
  });
}

}  // namespace

std::string_view method_name(std::uint16_t class_id, std::uint16_t method_id) noexcept {
  return info(class_id, method_id).name;
}

bool method_known(std::uint16_t class_id, std::uint16_t method_id) noexcept {
  return info(class_id, method_id).known;
}

bool method_has_content(std::uint16_t class_id, std::uint16_t method_id) noexcept {
  return info(class_id, method_id).has_content;
}

bool method_is_synchronous(std::uint16_t class_id, std::uint16_t method_id) noexcept {
  return info(class_id, method_id).synchronous;
}
"""


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    spec, methods = load(argv[1])
    with open(argv[2], "w", encoding="utf-8") as f:
        f.write(generate_header(spec, methods))
    with open(argv[3], "w", encoding="utf-8") as f:
        f.write(generate_source(methods))


if __name__ == "__main__":
    main(sys.argv)
