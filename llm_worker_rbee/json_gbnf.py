"""JSON strings in GBNF: what a grammar may let a model write between a string's quotes.

JSON (RFC 8259, section 7) writes a quote, a backslash and the control characters
U+0000-U+001F inside a string only as escapes. llama-cpp-python's schema converter writes a
string's characters as `[^"\\]` (control characters raw: a model then writes a raw newline
into a string, and the reply does not parse) and a `pattern`'s characters exactly as the
pattern names them (its quotes, backslashes and newlines raw). Here are llama.cpp's own
converter's string character (which keeps U+007F out too) and a rewrite of a pattern's
GBNF after which each character the pattern matches is written as JSON writes it.
"""

from __future__ import annotations

import json

# One character of a JSON string, raw or escaped: llama.cpp's json-schema-to-grammar `char`.
JSON_CHAR = (
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] '
    r"[0-9a-fA-F])"
)
# The characters a JSON string holds only as escapes (and U+007F, as llama.cpp's rule).
_ESCAPED = (*range(0x20), 0x22, 0x5C, 0x7F)
_ESCAPED_CLASS = r'"\\\x7F\x00-\x1F'
_CONTROLS = frozenset(range(0x20))
# A pattern's whole rule: the string's own quotes around the pattern's GBNF.
_OPEN, _CLOSE = '"\\"" ', ' "\\"" space'
_SIMPLE_ESCAPES = {"t": "\t", "r": "\r", "n": "\n", "\\": "\\", '"': '"', "[": "[", "]": "]"}
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}


def gbnf_literal(text: str) -> str:
    """`text` as a GBNF string literal (every character that needs it escaped)."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char in "\t\r\n":
            out.append({"\t": "\\t", "\r": "\\r", "\n": "\\n"}[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def json_pattern(rule: str) -> str:
    """A rule the converter made of a `pattern`, with its literals and character classes
    rewritten to JSON's escapes: `"` becomes `\\"`, a newline `\\n`, `[^,]` takes a quote
    only as `\\"`. The strings it matches are the same; only their JSON spelling changes.
    Text llama.cpp would refuse anyway (an escape GBNF lacks, such as `\\d`) is kept as is,
    for its check to refuse."""
    if rule.startswith(_OPEN) and rule.endswith(_CLOSE):
        return _OPEN + json_pattern(rule[len(_OPEN) : -len(_CLOSE)]) + _CLOSE
    out = []
    i = 0
    while i < len(rule):
        char = rule[i]
        if char in '"[':
            end = _token_end(rule, i)
            token = rule[i:end]
            try:
                out.append(_json_literal(token) if char == '"' else _json_class(token))
            except ValueError:
                out.append(token)
            i = end
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _token_end(text: str, start: int) -> int:
    """The index past a literal's closing `"` or a class's closing `]` (or the text's end)."""
    closer = '"' if text[start] == '"' else "]"
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == closer:
            return i + 1
        else:
            i += 1
    return len(text)


def _parse_char(text: str, i: int) -> tuple[int, int]:
    """The code point GBNF text has at `i` (llama.cpp's `parse_char`), and the index after it.

    Raises:
        ValueError: an escape llama.cpp does not know.
    """
    if text[i] != "\\":
        return ord(text[i]), i + 1
    kind = text[i + 1 : i + 2]
    if kind in _HEX_DIGITS:
        digits = text[i + 2 : i + 2 + _HEX_DIGITS[kind]]
        if len(digits) != _HEX_DIGITS[kind]:
            raise ValueError(f"a short \\{kind} escape")
        return int(digits, 16), i + 2 + len(digits)
    if kind in _SIMPLE_ESCAPES:
        return ord(_SIMPLE_ESCAPES[kind]), i + 2
    raise ValueError(f"unknown escape \\{kind}")


def _json_literal(token: str) -> str:
    if len(token) < 2 or not token.endswith('"'):
        raise ValueError("an unterminated literal")
    body, codes, i = token[1:-1], [], 0
    while i < len(body):
        code, i = _parse_char(body, i)
        codes.append(code)
    text = "".join(map(chr, codes))
    if not any(ord(c) in _ESCAPED for c in text):
        return token
    return gbnf_literal("".join(_json_escape(ord(c)) if ord(c) in _ESCAPED else c for c in text))


def _json_escape(code: int) -> str:
    """A character as a JSON string writes it (`\\n`, `\\"`, `\\u0001`)."""
    return json.dumps(chr(code))[1:-1]


def _json_class(token: str) -> str:
    """A character class as its characters a JSON string holds raw, and beside them the
    escapes of those it holds only escaped."""
    if len(token) < 2 or not token.endswith("]"):
        raise ValueError("an unterminated class")
    negated = token.startswith("[^")
    ranges = _ranges(token[2 if negated else 1 : -1])

    def inside(code: int) -> bool:
        return any(low <= code <= high for low, high in ranges)

    if negated:
        escaped = [code for code in _ESCAPED if not inside(code)]
        if not escaped:
            return token
        # First: after the range it ends with, a class's own `-` still reads as it did.
        raw = "[^" + _ESCAPED_CLASS + token[2:]
    else:
        escaped = [code for code in _ESCAPED if inside(code)]
        if not escaped:
            return token
        kept = _without(ranges, set(_ESCAPED))
        raw = "[" + "".join(_class_range(r) for r in kept) + "]" if kept else ""
    return "(" + " | ".join([*([raw] if raw else []), *_escapes(escaped)]) + ")"


def _ranges(body: str) -> list[tuple[int, int]]:
    """A class body's characters and ranges as (low, high), read as llama.cpp reads them."""
    out = []
    i = 0
    while i < len(body):
        low, i = _parse_char(body, i)
        high = low
        if body[i : i + 1] == "-" and i + 1 < len(body):
            high, i = _parse_char(body, i + 1)
        out.append((low, high))
    return out


def _without(ranges: list[tuple[int, int]], drop: set[int]) -> list[tuple[int, int]]:
    out = []
    for low, high in ranges:
        start = low
        for code in sorted(c for c in drop if low <= c <= high):
            if start < code:
                out.append((start, code - 1))
            start = code + 1
        if start <= high:
            out.append((start, high))
    return out


def _class_range(span: tuple[int, int]) -> str:
    low, high = span
    return _class_char(low) if low == high else f"{_class_char(low)}-{_class_char(high)}"


def _class_char(code: int) -> str:
    if chr(code).isascii() and chr(code).isalnum():
        return chr(code)
    if code < 0x100:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def _escapes(codes: list[int]) -> list[str]:
    """Literals of the escapes of `codes`, as JSON writes them (`\\n`, `\\u0001`); all the
    control characters in both of JSON's spellings."""
    out = []
    if set(codes) >= _CONTROLS:
        out.append('"\\\\u00" [01] [0-9a-fA-F] | "\\\\" [bfnrt]')
        codes = [code for code in codes if code not in _CONTROLS]
    return out + [gbnf_literal(_json_escape(code)) for code in codes]
