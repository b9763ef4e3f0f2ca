"""Tools and past calls rendered through published chat templates (tests/templates/), the
family told from each template, and the grammar forcing a call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from llm_worker_rbee.prompts import ChatMessage, render_chat
from llm_worker_rbee.tool_calls import (
    ToolCall,
    ToolChoice,
    ToolChoiceError,
    ToolDef,
    ToolFamily,
    ToolsUnsupported,
    call_schema,
    detect_family,
    plan_tools,
    template_call_id,
)
from tests.gguf_factory import CHAT_TEMPLATE_KEY, with_chat_template, write_model

TEMPLATES = Path(__file__).parent / "templates"
WEATHER = ToolDef(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALL = ToolCall("call_abc", "get_weather", '{"city": "Paris"}')
HISTORY = [
    ChatMessage("user", "Weather in Paris?"),
    ChatMessage("assistant", "", tool_calls=(CALL,)),
    ChatMessage("tool", "18 C", tool_call_id="call_abc"),
]


def template(name: str) -> str:
    return (TEMPLATES / name).read_text()


def render(name: str, messages: list[ChatMessage], tools: tuple[ToolDef, ...] = ()) -> str:
    return render_chat(messages, template(name), bos="<s>", eos="</s>", tools=tools).text


@pytest.mark.behavior("INF-032")
@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("qwen2.5.jinja", ToolFamily.HERMES),
        ("llama3.2.jinja", ToolFamily.LLAMA3),
        ("mistral-7b-v0.3.jinja", ToolFamily.MISTRAL),
    ],
)
def test_the_family_is_told_from_the_template(name: str, family: ToolFamily) -> None:
    assert detect_family(template(name)) is family


@pytest.mark.behavior("INF-032", "ERR-020")
def test_templates_without_tools_are_refused_with_the_reason() -> None:
    for text, reason in (
        (None, "no chat template"),
        (template("gemma3.jinja"), "never renders tools"),
        ("{% for tool in tools %}{{ tool }}{% endfor %}", "does not parse"),
    ):
        with pytest.raises(ToolsUnsupported, match=reason):
            detect_family(text)


@pytest.mark.behavior("INF-028")
def test_tools_are_rendered_as_each_template_expects() -> None:
    user = [ChatMessage("user", "Weather in Paris?")]
    qwen = render("qwen2.5.jinja", user, (WEATHER,))
    # Hugging Face's tojson: keys in order, nothing HTML-escaped.
    assert (
        '<tools>\n{"type": "function", "function": {"name": "get_weather", '
        '"description": "The weather in a city", "parameters": {"type": "object"'
    ) in qwen
    llama = render("llama3.2.jinja", user, (WEATHER,))
    assert "Environment: ipython" in llama and '    "type": "function",' in llama
    mistral = render("mistral-7b-v0.3.jinja", user, (WEATHER,))
    assert '[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather"' in mistral
    # Without tools the templates render as before.
    assert "<tools>" not in render("qwen2.5.jinja", user)


@pytest.mark.behavior("INF-031")
def test_past_calls_and_results_are_rendered_in_the_family_s_own_form() -> None:
    qwen = render("qwen2.5.jinja", HISTORY, (WEATHER,))
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n18 C'
    ) in qwen
    llama = render("llama3.2.jinja", HISTORY, (WEATHER,))
    assert '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>' in llama
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"18 C"' in llama
    mistral = render("mistral-7b-v0.3.jinja", HISTORY, (WEATHER,))
    short = template_call_id("call_abc", ToolFamily.MISTRAL)
    assert len(short) == 9 and short.isalnum()
    assert f'"arguments": {{"city": "Paris"}}, "id": "{short}"}}]</s>' in mistral
    assert f'[TOOL_RESULTS] {{"content": 18 C, "call_id": "{short}"}}' in mistral
    assert template_call_id("abc123XYZ", ToolFamily.MISTRAL) == "abc123XYZ"


def test_the_plain_transcript_shows_calls_and_results() -> None:
    text = render_chat(HISTORY, None, bos="", eos="").text
    assert text == (
        "User: Weather in Paris?\n"
        'Assistant: (called get_weather({"city": "Paris"}))\n'
        "Tool: 18 C\nAssistant:"
    )


@pytest.mark.behavior("INF-030")
def test_a_forced_call_s_schema_wraps_the_parameters() -> None:
    nested = ToolDef(
        "add",
        None,
        {
            "type": "object",
            "properties": {"item": {"$ref": "#/$defs/Item"}},
            "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        },
    )
    schema = call_schema(ToolFamily.HERMES, nested)
    assert schema["properties"]["name"] == {"const": "add"}
    assert schema["$defs"] == {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}}
    assert schema["properties"]["arguments"]["additionalProperties"] is False
    assert "parameters" in call_schema(ToolFamily.LLAMA3, WEATHER)["properties"]
    empty = call_schema(ToolFamily.MISTRAL, ToolDef("now"))["properties"]["arguments"]
    assert empty == {"type": "object", "properties": {}, "additionalProperties": False}


@pytest.mark.behavior("INF-030")
@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("qwen2.5.jinja", '"<tool_call>\\n" ( call-0 ) "\\n</tool_call>"'),
        ("llama3.2.jinja", "( call-0 )"),
        ("mistral-7b-v0.3.jinja", '"[TOOL_CALLS]" " "? "[" ( call-0 ) "]"'),
    ],
)
def test_a_named_choice_is_one_call_of_that_function(name: str, start: str) -> None:
    other = ToolDef("get_time")
    plan = plan_tools(template(name), [WEATHER, other], ToolChoice("named", "get_weather"))
    assert plan.grammar is not None
    root = plan.grammar.splitlines()[0]
    assert root == f"root ::= {start}"
    assert '"\\"get_weather\\""' in plan.grammar and "get_time" not in plan.grammar
    assert plan.tools == (WEATHER, other)


def test_plans_for_each_choice() -> None:
    qwen = template("qwen2.5.jinja")
    required = plan_tools(qwen, [WEATHER, ToolDef("get_time")], ToolChoice("required"))
    assert required.grammar is not None
    assert required.grammar.splitlines()[0].endswith(
        '( "\\n" "<tool_call>\\n" ( call-0 | call-1 ) "\\n</tool_call>" )*'
    )
    single = plan_tools(qwen, [WEATHER], ToolChoice("required"), parallel=False)
    assert single.grammar is not None and ")*" not in single.grammar.splitlines()[0]
    auto = plan_tools(qwen, [WEATHER], None)
    assert (auto.family, auto.grammar, auto.tools) == (ToolFamily.HERMES, None, (WEATHER,))
    none = plan_tools(None, [WEATHER], ToolChoice("none"))
    assert (none.family, none.tools, none.parser()) == (None, (), None)
    with pytest.raises(ToolChoiceError):
        plan_tools(qwen, [WEATHER], ToolChoice("named", "nope"))
    with pytest.raises(ToolChoiceError):
        plan_tools(qwen, [], ToolChoice("required"))


@pytest.mark.parametrize("old", [None, "{{ messages }}"])
def test_the_template_copy_matches_gguf_new_metadata(tmp_path: Path, old: str | None) -> None:
    """tests/gguf_factory.py:with_chat_template (which the end-to-end tests use on the
    bundled model) writes what gguf's own gguf-new-metadata writes, read back by gguf."""
    source = write_model(tmp_path / "tiny.gguf", chat_template=old)
    ours = with_chat_template(source, tmp_path / "ours.gguf", template("qwen2.5.jinja"))
    theirs = tmp_path / "theirs.gguf"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "gguf-new-metadata"),
            str(source),
            str(theirs),
            "--chat-template-file",
            str(TEMPLATES / "qwen2.5.jinja"),
            "--force",
        ],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )

    def contents(path: Path) -> tuple[dict[str, object], list[bytes]]:
        reader = gguf.GGUFReader(path)
        fields = {
            name: field.contents()
            for name, field in reader.fields.items()
            if name != "GGUF.kv_count"
        }
        return fields, [bytes(t.data) for t in reader.tensors]

    assert contents(ours) == contents(theirs)
    assert gguf.GGUFReader(ours).fields[CHAT_TEMPLATE_KEY].contents() == template("qwen2.5.jinja")
