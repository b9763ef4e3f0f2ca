"""The generic tool format (a template without one of its own, or none): the plan, the
grammar run by llama.cpp's sampler over the bundled model's vocabulary, the prompt's
instructions and history, and the parser whole and split at every boundary."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from llm_worker_rbee.prompts import ChatMessage, render_chat
from llm_worker_rbee.tool_calls import (
    ArgumentsDelta,
    CallStarted,
    ContentDelta,
    ToolCall,
    ToolChoice,
    ToolDef,
    ToolEvent,
    ToolFamily,
    ToolsUnsupported,
    plan_tools,
)
from llm_worker_rbee.tool_calls.generic_parser import GenericCallParser
from tests.test_tool_grammar import accepts, vocab  # noqa: F401 (vocab: a fixture)
from tests.test_tool_parser import fold

GEMMA = (Path(__file__).parent / "templates" / "gemma3.jinja").read_text()
QWEN = (Path(__file__).parent / "templates" / "qwen2.5.jinja").read_text()
WEATHER = ToolDef(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolDef("get_time")
ARGS = '{"city": "Pa}ri\\"s", "n": [1, {"x": null}], "t": true, "f": -1.5e3}'


def fed(
    pieces: list[str], *, parallel: bool = True, cut: bool = False
) -> tuple[str, list[tuple[str, str, str]], list[ToolEvent]]:
    counter = itertools.count()
    parser = GenericCallParser(parallel=parallel, new_id=lambda: f"call_{next(counter)}")
    events = [e for piece in pieces for e in parser.feed(piece)]
    events += parser.finish(cut=cut)
    content, folded = fold(events)
    assert content == parser.content
    assert folded == [(c.id, c.name, c.arguments) for c in parser.tool_calls()]
    return content, folded, events


CASES: list[tuple[str, str, list[tuple[str, str]]]] = [
    ('{"response": "Hi \\u00e9 \\ud83d\\ude00 \\"q\\"\\n\\\\ end"}', 'Hi é 😀 "q"\n\\ end', []),
    (
        f'{{"tool_call": {{"name": "get_weather", "arguments": {ARGS}}}}}',
        "",
        [("get_weather", ARGS)],
    ),
    (
        '{ "tool_calls" : [ {"name": "get_time", "arguments": {}},\n'
        ' {"arguments": {"city": "Oslo"}, "name": "get_weather"} ] }',
        "",
        [("get_time", "{}"), ("get_weather", '{"city": "Oslo"}')],
    ),
    ('{"tool_call": {"name": "f", "arguments": "{\\"a\\": 1}"}}', "", [("f", '{"a": 1}')]),
    ('{"tool_call": {"name": "get_time"}}', "", [("get_time", "{}")]),
    ('{"response": {"answer": [1, 2]}}', '{"answer": [1, 2]}', []),
    ("It is sunny {really}.", "It is sunny {really}.", []),
    ('{"answer": 4}', '{"answer": 4}', []),
]


@pytest.mark.behavior("HTTP-080")
@pytest.mark.parametrize(("text", "content", "calls"), CASES)
def test_every_split_gives_the_same_content_and_calls(
    text: str, content: str, calls: list[tuple[str, str]]
) -> None:
    whole = fed([text])
    assert (whole[0], [(name, args) for _, name, args in whole[1]]) == (content, calls)
    for split in range(1, len(text)):  # two pieces, at every boundary
        assert fed([text[:split], text[split:]])[:2] == whole[:2], split
    assert fed(list(text))[:2] == whole[:2]


@pytest.mark.behavior("HTTP-080")
def test_a_response_streams_as_it_is_written_and_a_call_once_named() -> None:
    parser = GenericCallParser()
    assert parser.feed('{"response": "Hel') == [ContentDelta("Hel")]
    assert parser.feed("lo \\u00") == [ContentDelta("lo ")]  # an escape is decoded whole
    assert parser.feed('e9"}') == [ContentDelta("é")]
    calls = GenericCallParser(new_id=lambda: "call_1")
    assert calls.feed('{"tool_call": {"name": "get_weather", ') == []
    assert calls.feed('"arguments": {"ci') == [
        CallStarted(0, "call_1", "get_weather"),
        ArgumentsDelta(0, '{"ci'),
    ]
    assert calls.feed('ty": "Oslo"}}}  ') == [ArgumentsDelta(0, 'ty": "Oslo"}')]
    assert calls.finish() == []


@pytest.mark.behavior("HTTP-080")
def test_without_parallel_calls_only_the_first_counts() -> None:
    text = '{"tool_calls": [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]}'
    assert [c[1] for c in fed([text], parallel=False)[1]] == ["a"]


@pytest.mark.behavior("HTTP-080")
def test_a_cut_answer_never_shows_its_json() -> None:
    head = '{"tool_call": {"name": "get_weather", "arguments": '
    call = head + '{"city": "Pa'
    for split in range(1, len(call) + 1):
        content, calls, _ = fed([call[:split]], cut=True)
        assert content == ""
        if split > len(head):  # kept as far as written, once its arguments began
            assert [(n, a) for _, n, a in calls] == [("get_weather", call[len(head) : split])]
        else:
            assert calls == []
    # Undecided at the end: cut, dropped; ended by the model, it was text.
    assert fed(['{"res'], cut=True)[0] == ""
    assert fed(['{"res'])[0] == '{"res'
    assert fed(['{"response": "Hi \\u00'], cut=True)[0] == "Hi "


def _grammar(choice: ToolChoice, *, parallel: bool = True) -> str:
    plan = plan_tools(None, [WEATHER, TIME], choice, parallel=parallel)
    assert plan.family is ToolFamily.GENERIC and plan.grammar is not None
    return plan.grammar


@pytest.mark.behavior("HTTP-081")
def test_the_grammar_holds_every_answer_to_the_json(vocab: object) -> None:  # noqa: F811
    weather = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    time = '{"name": "get_time", "arguments": {}}'
    auto = _grammar(ToolChoice("auto"))
    assert accepts(vocab, auto, '{"response": "It is sunny."}')
    assert accepts(vocab, auto, f'{{"tool_calls": [{weather}, {time}]}}')
    assert not accepts(vocab, auto, f'{{"tool_call": {weather}}}')  # parallel: a list
    assert not accepts(vocab, auto, "It is sunny.")
    assert not accepts(vocab, auto, '{"tool_calls": [{"name": "other", "arguments": {}}]}')
    assert not accepts(vocab, auto, '{"tool_calls": [{"name": "get_weather", "arguments": {}}]}')
    single = _grammar(ToolChoice("auto"), parallel=False)
    assert accepts(vocab, single, f'{{"tool_call": {weather}}}')
    required = _grammar(ToolChoice("required"))
    assert accepts(vocab, required, f'{{"tool_calls": [{time}]}}')
    assert not accepts(vocab, required, '{"response": "No."}')
    named = _grammar(ToolChoice("named", "get_weather"))
    assert accepts(vocab, named, f'{{"tool_call": {weather}}}')
    assert not accepts(vocab, named, f'{{"tool_call": {time}}}')
    assert not accepts(vocab, named, '{"response": "No."}')


@pytest.mark.behavior("HTTP-081", "CFG-045")
def test_only_templates_without_a_format_get_it_and_it_can_be_turned_off() -> None:
    assert plan_tools(QWEN, [WEATHER], None).family is ToolFamily.HERMES
    for template in (None, GEMMA):
        plan = plan_tools(template, [WEATHER], None)
        assert plan.family is ToolFamily.GENERIC and plan.tools == ()
        assert plan.generic is not None and plan.grammar is not None and not plan.forced
        assert plan_tools(template, [WEATHER], ToolChoice("none")).family is None
        with pytest.raises(ToolsUnsupported, match="--tool-fallback off"):
            plan_tools(template, [WEATHER], None, fallback=False)


CALL = ToolCall("call_abc", "get_weather", '{"city": "Paris"}')
HISTORY = [
    ChatMessage("user", "Weather in Paris and Oslo?"),
    ChatMessage("assistant", "", tool_calls=(CALL, ToolCall("call_def", "get_time", "{}"))),
    ChatMessage("tool", "18 C", tool_call_id="call_abc"),
    ChatMessage("tool", "noon", tool_call_id="call_def"),
    ChatMessage("user", "And tomorrow?"),
]
CALLS_JSON = (
    '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
    '{"name": "get_time", "arguments": {}}]}'
)
RESULTS_JSON = (
    '{"tool_response": {"tool": "get_weather", "tool_call_id": "call_abc", "content": "18 C"}}\n'
    '{"tool_response": {"tool": "get_time", "tool_call_id": "call_def", "content": "noon"}}\n'
    "And tomorrow?"
)


@pytest.mark.behavior("HTTP-082")
def test_the_tools_and_the_history_are_rendered_as_json() -> None:
    plan = plan_tools(None, [WEATHER], ToolChoice("auto"))
    text = render_chat(HISTORY, None, bos="", eos="", generic=plan.generic).text
    system, rest = text.split("\nUser: ", 1)
    assert system.startswith("System: You can call these tools")
    assert json.dumps(WEATHER.template_value()["function"]) in system
    assert '{"tool_calls": [' in system and '{"response": ' in system
    assert rest == (
        f"Weather in Paris and Oslo?\nAssistant: {CALLS_JSON}\nUser: {RESULTS_JSON}\nAssistant:"
    )
    # Gemma's template: the instructions open the first user turn, turns still alternate.
    gemma = render_chat(HISTORY, GEMMA, bos="<bos>", eos="", generic=plan.generic).text
    assert gemma.startswith("<bos><start_of_turn>user\nYou can call these tools")
    assert f"<start_of_turn>model\n{CALLS_JSON}<end_of_turn>" in gemma
    assert f"<start_of_turn>user\n{RESULTS_JSON}<end_of_turn>" in gemma
    # A template that refuses the system role: the instructions open the first user turn.
    strict = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('no system role') }}{% endif %}"
        "[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    )
    text = render_chat(HISTORY, strict, bos="", eos="", generic=plan.generic).text
    assert text.startswith("[user] You can call these tools")
    assert "\n\nWeather in Paris and Oslo?\n[assistant] {" in text
    # A named choice, one call per answer: the instructions say so, a past call is one.
    named = plan_tools(None, [WEATHER], ToolChoice("named", "get_weather"), parallel=True)
    assert named.generic is not None
    asked = [HISTORY[0], ChatMessage("assistant", "", (CALL,))]
    one = render_chat(asked, None, bos="", eos="", generic=named.generic).text
    assert "call the tool 'get_weather'" in one and '{"response"' not in one
    assert 'Assistant: {"tool_call": {"name": "get_weather"' in one


def _value(rng: random.Random, depth: int = 0) -> object:
    """A random JSON value, its strings full of characters JSON escapes."""
    kind = rng.randrange(6 if depth < 3 else 4)
    if kind == 0:
        return "".join(rng.choice(NASTY) for _ in range(rng.randrange(8)))
    if kind == 1:
        return rng.choice([0, -17, 2.5e-3, 1e21])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return "x"
    if kind == 4:
        return {str(_value(rng, 3)): _value(rng, depth + 1) for _ in range(rng.randrange(3))}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(3))]


NASTY = list('ab "\\\n\t{}[],:é😀\u2028\x01')


@pytest.mark.behavior("HTTP-080")
def test_random_answers_cut_anywhere_parse_as_json_reads_them() -> None:
    rng = random.Random(11)
    for _ in range(300):
        calls = [
            {"name": str(_value(rng)), "arguments": {"k": _value(rng), "j": _value(rng)}}
            for _ in range(rng.randrange(1, 3))
        ]
        answer = rng.choice(
            [{"response": str(_value(rng)) * 3}, {"tool_calls": calls}, {"tool_call": calls[0]}]
        )
        text = json.dumps(answer, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, 12)))
        bounds = zip([0, *cuts], [*cuts, len(text)], strict=True)
        content, got, _ = fed([text[a:b] for a, b in bounds])
        assert content == answer.get("response", "")
        expected = (
            answer.get("tool_calls") or [answer["tool_call"]] if "response" not in answer else []
        )
        assert [(name, json.loads(args)) for _, name, args in got] == [
            (call["name"], call["arguments"]) for call in expected
        ]
