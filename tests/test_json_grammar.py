"""The grammars of structured output write strings as JSON does: a quote, a backslash or a
control character only escaped (a raw newline inside a string does not parse), in every
string the worker's grammars make (`json_schema`, Responses' and Anthropic's formats, forced
tool calls): plain strings, bounded ones, property names, `enum` and `const` values and
`pattern`s. Run by llama.cpp's own grammar sampler over the bundled model's vocabulary."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from llm_worker_rbee.engine.vocab import LlamaVocab
from llm_worker_rbee.grammar import json_object_grammar, schema_grammar
from llm_worker_rbee.json_gbnf import JSON_CHAR, gbnf_literal, json_pattern
from llm_worker_rbee.tool_calls import ToolChoice, ToolDef, ToolFamily, tool_grammar
from llm_worker_rbee.tool_calls.generic import generic_grammar
from tests.test_tool_grammar import accepts, vocab

__all__ = ["vocab"]  # the fixture, shared with test_tool_grammar

TEXT: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
}
# Each way a schema makes a string: plain, bounded, an object's free keys and values, items.
STRING_SCHEMAS: list[dict[str, Any]] = [
    TEXT,
    {"type": "object", "properties": {"text": {"type": "string", "maxLength": 40}}},
    {"type": "object", "additionalProperties": {"type": "string"}},
    {"type": "object", "properties": {"text": {"type": "array", "items": {"type": "string"}}}},
    {},
]
NASTY = 'a "quoted" C:\\path\\to\tfile\nline two\r\n\x01\x1f\x7f é ✓ 😀 </tool_call>'


def check(vocab: object, grammar: str) -> None:
    LlamaVocab(vocab).check_grammar(grammar)


def value_for(schema: dict[str, Any], text: str) -> Any:
    if schema.get("additionalProperties"):
        return {text: text}
    if schema.get("properties", {}).get("text", {}).get("type") == "array":
        return {"text": [text, text]}
    return {"text": text}


@pytest.mark.behavior("INF-048")
@pytest.mark.parametrize("schema", STRING_SCHEMAS)
def test_a_string_takes_quotes_backslashes_and_control_characters_only_escaped(
    vocab: object, schema: dict[str, Any]
) -> None:
    grammar = schema_grammar(schema)
    check(vocab, grammar)
    text = NASTY[:36] if "maxLength" in json.dumps(schema) else NASTY
    value = value_for(schema, text)
    assert accepts(vocab, grammar, json.dumps(value))
    # Unicode raw too; U+007F, which JSON would take raw, only escaped (as llama.cpp's rule).
    unicode = json.dumps(value_for(schema, text.replace("\x7f", "")), ensure_ascii=False)
    assert accepts(vocab, grammar, unicode)
    for raw in ("\n", "\t", "\x01", "\x7f", '"', "\\"):
        # The same reply with one character raw inside its string is refused.
        bad = json.dumps(value_for(schema, "ax")).replace("ax", f"a{raw}x", 1)
        assert not accepts(vocab, grammar, bad), repr(raw)


@pytest.mark.behavior("INF-048")
def test_any_string_a_client_could_send_is_accepted_as_json_writes_it(vocab: object) -> None:
    grammar = schema_grammar(TEXT)
    rng = random.Random(7)
    alphabet = [chr(c) for c in range(0x80)] + list("éß中✓😀\u2028")
    for _ in range(40):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        assert accepts(vocab, grammar, json.dumps({"text": text})), repr(text)


# A forced call in the families whose call is one JSON object between fixed texts (the
# others' grammars share the same JSON rules: tests/test_tool_formats.py).
WRAPPED: dict[ToolFamily, tuple[str, str]] = {
    ToolFamily.HERMES: ("<tool_call>\n", "\n</tool_call>"),
    ToolFamily.LLAMA3: ("", ""),
    ToolFamily.MISTRAL: ("[TOOL_CALLS] [", "]"),
    ToolFamily.GENERIC: ('{"tool_calls": [', "]}"),
}


@pytest.mark.behavior("INF-048", "OAI-007")
@pytest.mark.parametrize("family", list(WRAPPED))
def test_a_forced_call_s_arguments_take_control_characters_only_escaped(
    vocab: object, family: ToolFamily
) -> None:
    tool = ToolDef("save", None, TEXT)
    grammar = (
        generic_grammar([tool], ToolChoice("required"), parallel=True)
        if family is ToolFamily.GENERIC
        else tool_grammar(family, [tool], ToolChoice("required"), parallel=True)
    )
    assert grammar is not None
    check(vocab, grammar)
    key = "parameters" if family is ToolFamily.LLAMA3 else "arguments"
    call = {"name": "save", key: {"text": NASTY}}
    before, after = WRAPPED[family]
    assert accepts(vocab, grammar, before + json.dumps(call) + after)
    raw = before + json.dumps({"name": "save", key: {"text": "ax"}}) + after
    assert not accepts(vocab, grammar, raw.replace("ax", "a\nx"))


@pytest.mark.behavior("INF-048")
def test_enum_const_and_property_names_keep_their_escapes(vocab: object) -> None:
    odd = 'say "hi"\\n\n\t'
    schema = {
        "type": "object",
        "properties": {
            odd: {"enum": [odd, "plain", 1]},
            "c": {"const": {"k": odd}},
        },
        "required": [odd, "c"],
    }
    grammar = schema_grammar(schema)
    check(vocab, grammar)
    assert accepts(vocab, grammar, json.dumps({odd: odd, "c": {"k": odd}}))
    assert accepts(vocab, grammar, json.dumps({odd: 1, "c": {"k": odd}}))
    assert not accepts(vocab, grammar, json.dumps({odd: "say", "c": {"k": odd}}))


PATTERNS = [
    ("^[^,]*$", ['a "b" \\ c\td', ""], ["a,b"]),
    ("^.{1,12}$", ['x"y\\z\t', "é"], ["a\nb", ""]),
    ('^[a-z"\\\\]+$', ['ab"c\\d'], ["aB"]),
    ('^say "(hi|yo)"$', ['say "hi"', 'say "yo"'], ["say hi"]),
    ("^a\tb$", ["a\tb"], ["a b"]),
    ("^[\\x00-\\x1F]$", ["\x00", "\n", "\x1f"], [" "]),
]


@pytest.mark.behavior("INF-048")
@pytest.mark.parametrize(("pattern", "matching", "other"), PATTERNS)
def test_a_pattern_s_strings_are_written_as_json_writes_them(
    vocab: object, pattern: str, matching: list[str], other: list[str]
) -> None:
    grammar = schema_grammar({"type": "string", "pattern": pattern})
    check(vocab, grammar)
    for text in matching:
        assert re.fullmatch(pattern[1:-1], text, re.DOTALL)
        assert accepts(vocab, grammar, json.dumps(text, ensure_ascii=False)), repr(text)
    for text in other:
        assert not accepts(vocab, grammar, json.dumps(text, ensure_ascii=False)), repr(text)
    # Written raw, a quote, a backslash or a control character is refused.
    for text in matching:
        if any(c in text for c in '"\\\t\n\x00\x1f'):
            assert not accepts(vocab, grammar, f'"{text}"'), repr(text)


def test_json_object_keeps_llama_cpp_s_own_json_strings(vocab: object) -> None:
    grammar = json_object_grammar()
    assert accepts(vocab, grammar, json.dumps({"text": NASTY}))
    assert not accepts(vocab, grammar, '{"text": "a\nb"}')


# --- the GBNF text itself (no llama.cpp) ---


def test_the_string_character_is_llama_cpp_s() -> None:
    assert f"char ::= {JSON_CHAR}\n" in schema_grammar(TEXT)
    assert JSON_CHAR.startswith('[^"\\\\\\x7F\\x00-\\x1F] | ')


def test_literals_are_escaped_for_gbnf() -> None:
    assert gbnf_literal('a"b\\c\nd\te\x01\x7f') == '"a\\"b\\\\c\\nd\\te\\x01\\x7F"'


ALL_ESCAPED = r'"\\u00" [01] [0-9a-fA-F] | "\\" [bfnrt] | "\\\"" | "\\\\" | "\\u007f"'


@pytest.mark.parametrize(
    ("rule", "rewritten"),
    [
        # The string's own quotes stay; a quote inside becomes an escaped one.
        (r'"\"" "say \"hi\"" "\"" space', r'"\"" "say \\\"hi\\\"" "\"" space'),
        (r'"a\nb"', r'"a\\nb"'),
        ("[a-z]", "[a-z]"),
        (r'[a-z"]', r'([a-z] | "\\\"")'),
        ("[^,]", rf'([^"\\\x7F\x00-\x1F,] | {ALL_ESCAPED})'),
        # A class's own `-` reads as before: here the character, not a range.
        ("[^-a]", rf'([^"\\\x7F\x00-\x1F-a] | {ALL_ESCAPED})'),
        (r"[\n]", r'("\\n")'),
        # What llama.cpp refuses anyway is left for its check to refuse.
        (r'"\d"', r'"\d"'),
        ("root-1 | (x)?", "root-1 | (x)?"),
    ],
)
def test_pattern_rules_are_rewritten_to_json_escapes(rule: str, rewritten: str) -> None:
    assert json_pattern(rule) == rewritten
