"""Structured output: a JSON schema (or "any JSON object") as a llama.cpp grammar (GBNF).

The conversion is llama-cpp-python's own (`llama_cpp.llama_grammar`), with JSON's strings
(schema_converter: the converter's own let a model write a raw newline into a string); this
module bounds what it is given, since the converter spells out repetitions (`maxLength:
10**9` would be a string of gigabytes), and turns its failures (it raises anything from
AssertionError to KeyError) into one GrammarError.
"""

from __future__ import annotations

import copy
import re
from typing import Any

# A repetition bound above this (maxLength, minItems, {m,n} in a pattern) is refused: the
# converter writes each repetition out and llama.cpp's parser nests them, so larger bounds
# make grammars llama.cpp refuses anyway, after megabytes of work.
MAX_REPEAT = 1000
MAX_GRAMMAR_CHARS = 256 * 1024
_BOUNDS = frozenset(
    {
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minContains",
        "maxContains",
    }
)
_PATTERN_BOUND = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


class GrammarError(ValueError):
    """The schema cannot be enforced; the message says why, for the client."""


def json_object_grammar() -> str:
    """Any JSON object (OpenAI's `json_object`)."""
    # Imported when first needed: llama_cpp loads the native library, which the HTTP layer
    # (and the fake engine's tests and scenarios) otherwise never needs.
    from llama_cpp.llama_grammar import JSON_GBNF

    return str(JSON_GBNF)


def schema_grammar(schema: dict[str, Any]) -> str:
    """The grammar of the JSON values `schema` accepts.

    Raises:
        GrammarError: the converter cannot handle the schema, or it is too large.
    """
    # It loads llama.cpp's library: imported when first needed (see above).
    from llm_worker_rbee.schema_converter import JsonSchemaConverter

    _check_bounds(schema)
    converter = JsonSchemaConverter()
    try:
        # Refs resolve against "" rather than json_schema_to_gbnf's "stdin": with "stdin",
        # a `$ref` inside the schema a root `$ref` points to is never found.
        resolved = converter.resolve_refs(copy.deepcopy(schema), "")  # it edits refs in place
        converter.visit(resolved, "")  # type: ignore[no-untyped-call]
        grammar = str(converter.format_grammar())  # type: ignore[no-untyped-call]
    except Exception as exc:  # the converter signals "unsupported" with any exception type
        raise GrammarError(f"the JSON schema cannot be enforced: {_reason(exc)}") from None
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise GrammarError(
            f"the JSON schema makes a grammar of {len(grammar)} characters; "
            f"at most {MAX_GRAMMAR_CHARS} are allowed"
        )
    return grammar


def rules_grammar(schemas: dict[str, dict[str, Any]], root: str) -> str:
    """A grammar with one rule per schema, named by its key, and `root ::= {root}` (GBNF
    over those names): e.g. a JSON object wrapped in fixed text. Rules the schemas share
    (strings, numbers, `$ref` targets of the same name) are written once.

    Raises:
        GrammarError: the converter cannot handle a schema, or the grammar is too large.
    """
    # It loads llama.cpp's library: imported when first needed (see above).
    from llm_worker_rbee.schema_converter import JsonSchemaConverter

    for schema in schemas.values():
        _check_bounds(schema)
    converter = JsonSchemaConverter()
    try:
        for name, schema in schemas.items():
            resolved = converter.resolve_refs(copy.deepcopy(schema), "")
            converter.visit(resolved, name)  # type: ignore[no-untyped-call]
        rules = str(converter.format_grammar())  # type: ignore[no-untyped-call]
    except Exception as exc:  # the converter signals "unsupported" with any exception type
        raise GrammarError(f"the JSON schema cannot be enforced: {_reason(exc)}") from None
    grammar = f"root ::= {root}\n{rules}"
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise GrammarError(
            f"the JSON schemas make a grammar of {len(grammar)} characters; "
            f"at most {MAX_GRAMMAR_CHARS} are allowed"
        )
    return grammar


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError):
        text = f"unresolved reference {text}"
    return text[:300]


def _check_bounds(node: Any) -> None:
    """Refuses repetition bounds above MAX_REPEAT anywhere in the schema."""
    if isinstance(node, list):
        for item in node:
            _check_bounds(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in _BOUNDS and isinstance(value, int) and value > MAX_REPEAT:
            raise GrammarError(f"{key} {value} is above the {MAX_REPEAT} this worker enforces")
        if key == "pattern" and isinstance(value, str):
            for match in _PATTERN_BOUND.finditer(value):
                if any(int(n) > MAX_REPEAT for n in match.groups() if n):
                    raise GrammarError(f"a pattern repeats more than {MAX_REPEAT} times")
        _check_bounds(value)
