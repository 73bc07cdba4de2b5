#!/usr/bin/python3 -I
"""Keeps README's "py-amqp to warren" tables honest.

Enumerates the public members of Debian's py-amqp (Connection, Channel, Message and
amqp.exceptions) and fails when one has no row in its README table, when a row names something
py-amqp does not have, when a row written as a call does not list py-amqp's parameters in order,
when a row has neither a warren counterpart nor a reason, or when a name in the warren column is
not declared in warren's headers. -I keeps the working directory off sys.path, so a file named like a py-amqp module
cannot shadow it.
"""

import ast
import inspect
import os
import re
import sys
import xml.etree.ElementTree as et

import amqp
import amqp.exceptions

SECTION = "## py-amqp to warren"
CLASSES = {"Connection": amqp.Connection, "Channel": amqp.Channel, "Message": amqp.Message}
HEADERS = [
    "engine/client/connection.h",
    "engine/client/message.h",
    "engine/errors.h",
    "engine/options.h",
    "engine/uri.h",
    "engine/io/socket.h",
    "engine/io/tls.h",
    "engine/io/transport.h",
    "engine/protocol/connection_machine.h",
    "codec/field_table.h",
    "codec/methods.h",
]
# Words of C++ itself that the warren column may use.
CPP_WORDS = {"nullptr", "true", "false", "const", "auto"}


def public(names):
    return {n for n in names if not n.startswith("_")}


def assigned_attributes(cls):
    """Attributes its methods set on self (instance state dir() of the class cannot see)."""
    names = set()
    for klass in cls.__mro__:
        if klass is object or klass.__module__ == "builtins":
            continue
        for node in ast.walk(ast.parse(inspect.getsource(klass))):
            if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                    and isinstance(node.value, ast.Name) and node.value.id == "self"):
                names.add(node.attr)
    return public(names)


def constructor_arguments(cls):
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in params
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def members(cls):
    return public(dir(cls)) | assigned_attributes(cls)


def exception_module_members():
    out = set()
    for name in public(dir(amqp.exceptions)):
        obj = getattr(amqp.exceptions, name)
        if inspect.ismodule(obj):
            continue
        out.add(name)
    error = amqp.exceptions.AMQPError
    out |= public(dir(error)) - set(dir(Exception))
    out |= assigned_attributes(error) - set(dir(Exception))
    return out


def py_amqp_expectations():
    """{table: (members, constructor keyword arguments)}"""
    message = amqp.Message
    return {
        "Connection": (members(amqp.Connection), constructor_arguments(amqp.Connection)),
        "Channel": (members(amqp.Channel), constructor_arguments(amqp.Channel)),
        "Message": (members(message) | {name for name, _ in message.PROPERTIES},
                    constructor_arguments(message)),
        "Exceptions": (exception_module_members(), set()),
    }


def split_row(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def read_tables(readme):
    start = readme.find("\n" + SECTION + "\n")
    if start < 0:
        raise AssertionError(f"README.md has no '{SECTION}' section")
    end = readme.find("\n## ", start + 1)
    section = readme[start:end if end >= 0 else len(readme)]
    tables = {}
    current = None
    for line in section.splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            tables[current] = []
        elif current and line.startswith("|"):
            cells = split_row(line)
            if cells[0] in ("py-amqp", "---") or set(cells[0]) <= {"-"}:
                continue
            tables[current].append(cells)
    return tables


def code_spans(cell):
    return re.findall(r"`([^`]+)`", cell)


def row_names(rows):
    """The py-amqp members and keyword arguments the rows cover."""
    covered, keywords = set(), set()
    for cells in rows:
        for span in code_spans(cells[0]):
            m = re.match(r"([A-Za-z_]\w*)(=?)", span)
            if m:
                (keywords if m.group(2) else covered).add(m.group(1))
    return covered, keywords


def check_coverage(table, rows, expected_members, expected_keywords):
    covered, keywords = row_names(rows)
    failures = []
    for name in sorted(expected_members - covered):
        failures.append(f"{table}: py-amqp member `{name}` has no row")
    for name in sorted(expected_keywords - keywords):
        failures.append(f"{table}: constructor argument `{name}=` has no row")
    # A row for something py-amqp does not have is a mistake too (the constructor and the with
    # statement aside).
    allowed = expected_members | {table, "__enter__", "__exit__"}
    for name in sorted(covered - allowed):
        failures.append(f"{table}: `{name}` is not a py-amqp member")
    for name in sorted(keywords - expected_keywords):
        failures.append(f"{table}: `{name}=` is not a constructor argument")
    return failures


def signature_names(func):
    """Parameter names as the README writes them: no self, no argsig (py-amqp's wire format
    string, not an argument callers pass); *args and **kwargs with their stars."""
    names = []
    for p in inspect.signature(func).parameters.values():
        if p.name in ("self", "argsig"):
            continue
        star = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        names.append(star + p.name)
    return names


def check_signatures(table, rows, cls):
    """A row written as `name(a, b)` must list py-amqp's parameters, in order."""
    failures = []
    for cells in rows:
        for span in code_spans(cells[0]):
            m = re.fullmatch(r"([A-Za-z_]\w*)\((.*)\)", span)
            if not m or m.group(2) == "...":
                continue
            name = m.group(1)
            func = cls.__init__ if name == table else inspect.getattr_static(cls, name, None)
            if not callable(func):
                failures.append(f"{table}: `{span}` is written as a call but is not callable")
                continue
            written = [a.strip() for a in m.group(2).split(",") if a.strip()]
            actual = signature_names(func)
            if written != actual:
                failures.append(f"{table}: `{span}` but py-amqp has ({', '.join(actual)})")
    return failures


def check_rows(table, rows):
    failures = []
    for cells in rows:
        if len(cells) != 3:
            failures.append(f"{table}: row {cells[0]!r} does not have 3 cells")
            continue
        if not code_spans(cells[1]) and not (cells[1] == "none" and cells[2]):
            failures.append(f"{table}: row {cells[0]!r} has neither a warren name nor a reason")
    return failures


def identifiers(span):
    span = re.sub(r'"[^"]*"', "", span)
    span = re.sub(r"\bstd::(\w+::)*\w+", "", span)
    return set(re.findall(r"[A-Za-z_]\w*", span)) - CPP_WORDS


def check_warren_names(tables, declared):
    failures = []
    for table, rows in tables.items():
        for cells in rows:
            if len(cells) < 2:
                continue
            for span in code_spans(cells[1]):
                for word in sorted(identifiers(span) - declared):
                    failures.append(f"{table}: `{word}` (in `{span}`) is not in warren's headers")
    return failures


def main():
    root = os.getcwd()
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        tables = read_tables(f.read())
    declared = set()
    for header in HEADERS:
        with open(os.path.join(root, header), encoding="utf-8") as f:
            declared |= set(re.findall(r"[A-Za-z_]\w*", f.read()))

    cases = []
    for table, (expected_members, expected_keywords) in py_amqp_expectations().items():
        rows = tables.get(table)
        if rows is None:
            cases.append((f"{table}_table_exists", [f"no '### {table}' table"]))
            continue
        print(f"{table}: {len(expected_members)} py-amqp members, "
              f"{len(expected_keywords)} constructor arguments, {len(rows)} rows")
        cases.append((f"{table.lower()}_rows_cover_exactly_py_amqp_members",
                      check_coverage(table, rows, expected_members, expected_keywords)))
        cases.append((f"every_{table.lower()}_row_has_a_counterpart_or_reason",
                      check_rows(table, rows)))
        if table in CLASSES:
            cases.append((f"{table.lower()}_rows_spell_py_amqp_signatures",
                          check_signatures(table, rows, CLASSES[table])))
    cases.append(("warren_names_are_declared_in_headers", check_warren_names(tables, declared)))

    suite = et.Element("testsuite", name="py_amqp_mapping_test", tests=str(len(cases)),
                       failures=str(sum(1 for _, f in cases if f)))
    for name, failures in cases:
        case = et.SubElement(suite, "testcase", name=name, classname="py_amqp_mapping")
        if failures:
            et.SubElement(case, "failure", message=failures[0]).text = "\n".join(failures)
        print(("FAIL " if failures else "ok   ") + name)
        for failure in failures:
            print("     " + failure)
    out = os.environ.get("XML_OUTPUT_FILE")
    if out:
        suites = et.Element("testsuites")
        suites.append(suite)
        et.ElementTree(suites).write(out, encoding="utf-8", xml_declaration=True)
    print(f"py-amqp {amqp.__version__}: {len(cases)} checks, "
          f"{sum(1 for _, f in cases if f)} failed")
    return 1 if any(f for _, f in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
