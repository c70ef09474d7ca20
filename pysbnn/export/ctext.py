"""C99 text for the exporter: literals, tables, identifiers and the kernel template's sections.

Everything here is deterministic: the same values give the same bytes.
"""

import re
from pathlib import Path

import numpy as np

TEMPLATES = Path(__file__).resolve().parent / "mcu"
KERNELS = TEMPLATES / "sbnn_kernels.c"

C99_KEYWORDS = frozenset("""
auto break case char const continue default do double else enum extern float for goto if
inline int long register restrict return short signed sizeof static struct switch typedef
union unsigned void volatile while _Bool _Complex _Imaginary
""".split())
#: <name>_predict must stay within the 31 significant characters C99 promises for external names
MAX_NAME = 31 - len("_predict")


def check_name(name):
    """``name`` if it can prefix the exported C functions; ValueError otherwise."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise ValueError(f"name must be a C identifier (a letter, then letters, digits, _), "
                         f"got {name!r}")
    if name in C99_KEYWORDS or len(name) > MAX_NAME:
        raise ValueError(f"name {name!r} is a C keyword or longer than {MAX_NAME} characters")
    return name


def f32(value):
    """A float32 literal that reads back exactly (9 significant digits)."""
    v = float(np.float32(value))
    if not np.isfinite(v):
        raise ValueError(f"cannot export a non-finite value {v}")
    text = f"{v:.9g}"
    if not any(c in text for c in ".e"):
        text += ".0"
    return text + "f"


def table(decl, values, fmt, per_line):
    """``decl = { ... };`` with ``per_line`` values a line, each ``fmt(v)``."""
    items = [fmt(v) for v in values]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return decl + " = {\n    " + ",\n    ".join(lines) + "\n};\n"


def u8_table(name, data):
    data = bytes(data)
    return table(f"static const uint8_t {name}[{len(data)}]", data, "0x{:02x}".format, 16)


def u32_table(name, words):
    words = np.asarray(words, np.uint32).ravel()
    return table(f"static const uint32_t {name}[{words.size}]", words.tolist(), "0x{:08x}u".format, 8)


def int_table(ctype, name, values, per_line=12):
    values = [int(v) for v in np.ravel(values)]
    return table(f"static const {ctype} {name}[{len(values)}]", values, str, per_line)


def float_table(name, values):
    values = np.ravel(values)
    return table(f"static const float {name}[{values.size}]", values, f32, 6)


def comment(lines, indent=""):
    """A ``/* ... */`` block of text lines."""
    body = "\n".join(f"{indent} * {line}".rstrip() for line in lines)
    return f"{indent}/*\n{body}\n{indent} */\n"


def kernel_sections():
    """``{section: (needs, text)}`` of the template, in file order (``/* @@ name: needs */``)."""
    sections, name = {}, None
    for line in KERNELS.read_text().splitlines(keepends=True):
        head = re.fullmatch(r"/\* @@ (\w+)(?::([\w ]*))? \*/\n?", line)
        if head:
            name = head.group(1)
            sections[name] = ((head.group(2) or "").split(), [])
        elif name is not None:
            sections[name][1].append(line)
    return {k: (needs, "".join(text).strip("\n") + "\n") for k, (needs, text) in sections.items()}


def kernels_for(wanted):
    """The template text of the sections in ``wanted`` and what they need, in template order."""
    sections = kernel_sections()
    need, todo = set(), list(wanted)
    while todo:
        s = todo.pop()
        if s not in need:
            need.add(s)
            todo.extend(sections[s][0])
    return "\n".join(text for s, (_, text) in sections.items() if s in need)
