"""llama-cpp-python's JSON-schema-to-GBNF converter, with JSON's strings.

Its own strings admit control characters raw (`[^"\\]`), its `pattern`s write quotes,
backslashes and newlines raw, and its literals (`enum`, `const`, property names) leave a
JSON text's backslashes to GBNF, which reads `\\n` in `"a\\nb"` as a newline. Each of
these grammars lets a model write a reply that does not parse; this converter writes what
JSON writes instead (json_gbnf). Importing it loads llama.cpp's library.
"""

from __future__ import annotations

from llama_cpp.llama_grammar import PRIMITIVE_RULES, SchemaConverter

from llm_worker_rbee.json_gbnf import JSON_CHAR, gbnf_literal, json_pattern

# The converter's string character, matched by content rather than by its rule's name (a
# property may be named `char` too).
_CONVERTER_CHAR = PRIMITIVE_RULES["char"].content


class JsonSchemaConverter(SchemaConverter):
    """SchemaConverter (no remote `$ref`s, `.` short of line ends) writing JSON strings."""

    def __init__(self) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
        )
        self._in_pattern = False

    def _format_literal(self, literal: str) -> str:
        return gbnf_literal(literal)

    def _visit_pattern(self, pattern: str, name: str) -> str:
        self._in_pattern = True
        try:
            return str(super()._visit_pattern(pattern, name))  # type: ignore[no-untyped-call]
        finally:
            self._in_pattern = False

    def _add_rule(self, name: str, rule: str) -> str:
        if rule == _CONVERTER_CHAR:
            rule = JSON_CHAR
        elif self._in_pattern:  # every rule a pattern makes: its own, its `dot`, its parts
            rule = json_pattern(rule)
        return str(super()._add_rule(name, rule))  # type: ignore[no-untyped-call]
