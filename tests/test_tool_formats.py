"""The tool-call formats beyond Hermes, Llama 3 and Mistral: each told from its published
template (read from llama.cpp's templates in the llama-cpp-python sdist, fetched through pip
on first use: devtools/sdist.py), each answer parsed the same whole and
streamed at every split, and each forced call's grammar accepting what the parser reads."""

from __future__ import annotations

import pytest

from devtools.sdist import template_text
from llm_worker_rbee.prompts import ChatMessage, render_chat
from llm_worker_rbee.tool_calls import (
    ToolCall,
    ToolCallParser,
    ToolChoice,
    ToolDef,
    ToolFamily,
    detect_family,
    parse_tool_calls,
    tool_grammar,
)
from llm_worker_rbee.tool_calls.family import r1_marker as R1

# Published templates and the family llama.cpp's common/chat.cpp gives their format.
PUBLISHED = [
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", ToolFamily.DEEPSEEK_R1),
    ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B", ToolFamily.DEEPSEEK_R1),
    ("llama-cpp-deepseek-r1", ToolFamily.DEEPSEEK_R1),
    ("deepseek-ai-DeepSeek-V3.1", ToolFamily.DEEPSEEK_V3_1),
    ("meetkai-functionary-medium-v3.2", ToolFamily.FUNCTIONARY_V3_2),
    ("meetkai-functionary-medium-v3.1", ToolFamily.FUNCTIONARY_V3_1),
    ("CohereForAI-c4ai-command-r7b-12-2024-tool_use", ToolFamily.COMMAND_R7B),
    ("fireworks-ai-llama-3-firefunction-v2", ToolFamily.FIREFUNCTION_V2),
    ("ibm-granite-granite-3.3-2B-Instruct", ToolFamily.GRANITE),
    ("moonshotai-Kimi-K2", ToolFamily.KIMI_K2),
    ("Kimi-K2-Instruct", ToolFamily.KIMI_K2),
    # The families told before still are, beside the new markers.
    ("meta-llama-Llama-3.1-8B-Instruct", ToolFamily.LLAMA3),
    ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", ToolFamily.HERMES),
    ("mistralai-Mistral-Nemo-Instruct-2407", ToolFamily.MISTRAL),
]

PARIS = '{"location": "Paris"}'
OK = '{"success": true}'
# An answer in each format: text, two calls (one where the template takes one a turn).
ANSWERS: dict[ToolFamily, tuple[str, str, list[tuple[str, str]]]] = {
    ToolFamily.DEEPSEEK_R1: (
        f"Let me look.{R1('tool calls begin')}{R1('tool call begin')}function{R1('tool sep')}"
        f"get_weather\n```json\n{PARIS}\n```{R1('tool call end')}\n{R1('tool call begin')}"
        f"function{R1('tool sep')}test\n```json\n{OK}\n```{R1('tool call end')}"
        f"{R1('tool calls end')}",
        "Let me look.",
        [("get_weather", PARIS), ("test", OK)],
    ),
    ToolFamily.DEEPSEEK_V3_1: (
        f"{R1('tool calls begin')}{R1('tool call begin')}get_weather{R1('tool sep')}{PARIS}"
        f"{R1('tool call end')}{R1('tool call begin')}test{R1('tool sep')}{OK}"
        f"{R1('tool call end')}{R1('tool calls end')}",
        "",
        [("get_weather", PARIS), ("test", OK)],
    ),
    # The prompt ends with `>>>`: the answer starts with the recipient.
    ToolFamily.FUNCTIONARY_V3_2: (
        f"all\nLet me look.\n>>>get_weather\n{PARIS}\n>>>test\n{OK}",
        "Let me look.",
        [("get_weather", PARIS), ("test", OK)],
    ),
    ToolFamily.FUNCTIONARY_V3_1: (
        f"Let me look. <function=get_weather>{PARIS}</function>",
        "Let me look.",
        [("get_weather", PARIS)],
    ),
    ToolFamily.COMMAND_R7B: (
        "<|START_ACTION|>[\n"
        f'  {{"tool_call_id": "0", "tool_name": "get_weather", "parameters": {PARIS}}},\n'
        f'  {{"tool_call_id": "1", "tool_name": "test", "parameters": {OK}}}\n'
        "]<|END_ACTION|>",
        "",
        [("get_weather", PARIS), ("test", OK)],
    ),
    ToolFamily.FIREFUNCTION_V2: (
        f' functools[{{"name": "get_weather", "arguments": {PARIS}}}, '
        f'{{"name": "test", "arguments": {OK}}}]',
        "",
        [("get_weather", PARIS), ("test", OK)],
    ),
    ToolFamily.GRANITE: (
        f'<|tool_call|>[{{"name": "get_weather", "arguments": {PARIS}}}]',
        "",
        [("get_weather", PARIS)],
    ),
    ToolFamily.KIMI_K2: (
        "Let me look.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        f"<|tool_call_argument_begin|>{PARIS}<|tool_call_end|><|tool_call_begin|>functions."
        f"test:1<|tool_call_argument_begin|>{OK}<|tool_call_end|><|tool_calls_section_end|>",
        "Let me look.",
        [("get_weather", PARIS), ("test", OK)],
    ),
}
TOOLS = [
    ToolDef(
        "get_weather",
        None,
        {"type": "object", "properties": {"location": {"type": "string"}}},
    ),
    ToolDef("test", None, {"type": "object", "properties": {"success": {"const": True}}}),
]


def _fold(family: ToolFamily, pieces: list[str]) -> tuple[str, list[tuple[str, str]]]:
    parser = ToolCallParser(family, new_id=lambda: "call")
    for piece in pieces:
        parser.feed(piece)
    parser.finish()
    return parser.content, [(call.name, call.arguments) for call in parser.tool_calls()]


@pytest.mark.behavior("HTTP-090")
@pytest.mark.parametrize(("name", "family"), PUBLISHED)
def test_each_published_template_is_told_its_format(name: str, family: ToolFamily) -> None:
    assert detect_family(template_text(name)) is family


@pytest.mark.behavior("HTTP-091")
@pytest.mark.parametrize("family", list(ANSWERS))
def test_each_format_parses_the_same_whole_and_split_anywhere(family: ToolFamily) -> None:
    text, content, calls = ANSWERS[family]
    whole, parsed = parse_tool_calls(family, text)
    assert (whole, [(c.name, c.arguments) for c in parsed]) == (content, calls)
    for split in range(len(text) + 1):
        assert _fold(family, [text[:split], text[split:]]) == (content, calls), split
    assert _fold(family, list(text)) == (content, calls)


@pytest.mark.behavior("HTTP-091")
@pytest.mark.parametrize("family", list(ANSWERS))
def test_a_call_cut_anywhere_never_shows_its_markup(family: ToolFamily) -> None:
    text, content, _ = ANSWERS[family]
    for end in range(len(text) + 1):
        parser = ToolCallParser(family)
        parser.feed(text[:end])
        parser.finish(cut=True)
        assert content.startswith(parser.content.rstrip()), (end, parser.content)


@pytest.mark.behavior("HTTP-091")
def test_functionary_text_to_all_is_content_and_other_text_stays() -> None:
    assert parse_tool_calls(ToolFamily.FUNCTIONARY_V3_2, "all\nHello!") == ("Hello!", [])
    assert parse_tool_calls(ToolFamily.DEEPSEEK_R1, "Just text.") == ("Just text.", [])
    content, calls = parse_tool_calls(ToolFamily.FUNCTIONARY_V3_1, "<function= no call")
    assert (content, calls) == ("<function= no call", [])


@pytest.mark.behavior("HTTP-092")
@pytest.mark.parametrize("family", list(ANSWERS))
def test_a_forced_call_s_grammar_writes_the_family_s_markers(family: ToolFamily) -> None:
    grammar = tool_grammar(family, TOOLS, ToolChoice("named", "test"), parallel=True)
    assert grammar is not None
    root = grammar.splitlines()[0]
    assert "test" in grammar and "get_weather" not in grammar
    text = ANSWERS[family][0]
    for marker in (R1("tool calls begin"), "<function=", "<|START_ACTION|>", "functools["):
        assert (marker in root) == (marker in text)


@pytest.mark.behavior("HTTP-093")
@pytest.mark.parametrize(
    ("name", "written"),
    [
        # `'\n' + arguments`: the arguments added to text are their JSON text.
        ("meetkai-functionary-medium-v3.2", '>>>calculate\n{"expression": "2 + 2"}<|eot_id|>'),
        # `tools | map(attribute='function') | tojson`; the arguments with `tojson`.
        ("llama-cpp-deepseek-r1", 'calculate\n```json\n{"expression": "2 + 2"}\n```'),
    ],
)
def test_past_calls_render_where_templates_add_arguments_to_text(name: str, written: str) -> None:
    calculate = ToolDef("calculate", None, {"type": "object", "properties": {}})
    history = [
        ChatMessage("user", "2 + 2?"),
        ChatMessage(
            "assistant", "", tool_calls=(ToolCall("c1", "calculate", '{"expression": "2 + 2"}'),)
        ),
        ChatMessage("tool", "4", tool_call_id="c1"),
    ]
    prompt = render_chat(history, template_text(name), bos="<s>", eos="</s>", tools=(calculate,))
    assert written in prompt.text
