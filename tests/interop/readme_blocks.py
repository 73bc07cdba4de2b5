#!/usr/bin/python3 -I
"""Writes the two code blocks of README's "py-amqp to warren" section to files.

Usage: readme_blocks.py README.md OUT_CC OUT_PY

OUT_CC gets the ```cpp block, to be #included inside a function body; OUT_PY gets the ```python
block followed by a line printing what it received, so that a test can run both and compare.
Fails when the section or either block is missing, so the test cannot pass on an empty file.
"""

import re
import sys

SECTION = "## py-amqp to warren"


def block(section, lang):
    m = re.search(r"^```" + lang + r"\n(.*?)^```$", section, re.S | re.M)
    if not m:
        sys.exit(f"readme_blocks: no ```{lang} block in '{SECTION}'")
    return m.group(1)


def main(readme, out_cc, out_py):
    text = open(readme, encoding="utf-8").read()
    start = text.find("\n" + SECTION + "\n")
    if start < 0:
        sys.exit(f"readme_blocks: README has no '{SECTION}' section")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end >= 0 else len(text)]
    with open(out_cc, "w", encoding="utf-8") as f:
        f.write("// Generated from README.md by tests/interop/readme_blocks.py; do not edit.\n")
        f.write(block(section, "cpp"))
    with open(out_py, "w", encoding="utf-8") as f:
        f.write("# Generated from README.md by tests/interop/readme_blocks.py; do not edit.\n")
        f.write("import amqp\n")
        f.write(block(section, "python"))
        f.write("body = msg.body if isinstance(msg.body, str) else msg.body.decode()\n")
        f.write("print(body, msg.properties.get('content_type'))\n")
        f.write("conn.close()\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
