"""The tool-call parser on each family's output: whole, and fed piece by piece (every split
must give the same content and calls, and nothing that opens a call is sent as content)."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from llm_worker_rbee.tool_calls import (
    ArgumentsDelta,
    CallStarted,
    ContentDelta,
    ToolCallParser,
    ToolEvent,
    ToolFamily,
    parse_tool_calls,
)

HERMES, LLAMA3, MISTRAL = ToolFamily.HERMES, ToolFamily.LLAMA3, ToolFamily.MISTRAL
WEATHER = '{"city": "Paris", "days": [1, 2], "note": "a } and \\" inside"}'


def fed(
    family: ToolFamily, pieces: list[str], *, parallel: bool = True, cut: bool = False
) -> list[ToolEvent]:
    counter = itertools.count()
    parser = ToolCallParser(family, parallel=parallel, new_id=lambda: f"call_{next(counter)}")
    events = [e for piece in pieces for e in parser.feed(piece)]
    return events + parser.finish(cut=cut)


def fold(events: list[ToolEvent]) -> tuple[str, list[tuple[str, str, str]]]:
    """Content and (id, name, arguments) per call, as a client assembles a stream."""
    content = ""
    calls: dict[int, list[str]] = {}
    for event in events:
        if isinstance(event, ContentDelta):
            content += event.text
        elif isinstance(event, CallStarted):
            assert event.index == len(calls)
            calls[event.index] = [event.id, event.name, ""]
        else:
            calls[event.index][2] += event.text
    return content, [(c[0], c[1], c[2]) for c in calls.values()]


def splits(text: str) -> list[list[str]]:
    """The whole text, one character at a time, and a few seeded random cuts."""
    out = [[text], list(text)]
    for seed in range(4):
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, 6)))
        out.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    return out


CASES: list[tuple[ToolFamily, str, str, list[tuple[str, str]]]] = [
    # Hermes / Qwen: blocks anywhere; text before them is content.
    (
        HERMES,
        f'Let me look.\n<tool_call>\n{{"name": "get_weather", "arguments": {WEATHER}}}\n'
        "</tool_call>",
        "Let me look.",
        [("get_weather", WEATHER)],
    ),
    (
        HERMES,
        '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {"x": 1}}\n</tool_call>',
        "",
        [("a", "{}"), ("b", '{"x": 1}')],
    ),
    # Keys in another order: known once the object is whole.
    (
        HERMES,
        '<tool_call>{"arguments": {"x": 1}, "name": "b"}</tool_call>',
        "",
        [("b", '{"x": 1}')],
    ),
    # Arguments as a JSON string holding the JSON text.
    (
        HERMES,
        '<tool_call>{"name": "b", "arguments": "{\\"x\\": 1}"}</tool_call>',
        "",
        [("b", '{"x": 1}')],
    ),
    # Not a call after all: shown as it was written.
    (
        HERMES,
        "Use <tool_call>tags</tool_call> like this.",
        "Use <tool_call>tags</tool_call> like this.",
        [],
    ),
    (HERMES, "a < b and <tool is fine", "a < b and <tool is fine", []),
    # Llama 3.x: a JSON object where the answer starts, perhaps after <|python_tag|>.
    (LLAMA3, f'{{"name": "get_weather", "parameters": {WEATHER}}}', "", [("get_weather", WEATHER)]),
    (
        LLAMA3,
        '<|python_tag|>{"type": "function", "name": "f", "parameters": {"q": "x"}}',
        "",
        [("f", '{"q": "x"}')],
    ),
    (LLAMA3, '  {"answer": 42} is JSON', '  {"answer": 42} is JSON', []),
    (
        LLAMA3,
        'The call {"name": "f", "parameters": {}}',
        'The call {"name": "f", "parameters": {}}',
        [],
    ),
    # Mistral: [TOOL_CALLS] and an array (with its own ids, which are not OpenAI's).
    (
        MISTRAL,
        '[TOOL_CALLS] [{"name": "a", "arguments": {"x": 1}, "id": "abc123def"}, '
        '{"name": "b", "arguments": {}}]',
        "",
        [("a", '{"x": 1}'), ("b", "{}")],
    ),
    # A real Mistral model's [TOOL_CALLS] is a control token that decodes to nothing.
    (MISTRAL, '[{"name": "a", "arguments": {"x": 1}}]', "", [("a", '{"x": 1}')]),
    (MISTRAL, "[1] is a footnote", "[1] is a footnote", []),
    (MISTRAL, "Plain answer.\n", "Plain answer.\n", []),
]


@pytest.mark.behavior("INF-029", "SSE-020")
@pytest.mark.parametrize(("family", "text", "content", "calls"), CASES)
def test_every_split_gives_the_same_content_and_calls(
    family: ToolFamily, text: str, content: str, calls: list[tuple[str, str]]
) -> None:
    for pieces in splits(text):
        got_content, got_calls = fold(fed(family, pieces))
        assert got_content == content, pieces
        assert [(name, args) for _, name, args in got_calls] == calls, pieces
        assert [call_id for call_id, _, _ in got_calls] == [f"call_{i}" for i in range(len(calls))]
    whole_content, whole_calls = parse_tool_calls(family, text)
    assert whole_content == content
    assert [(c.name, c.arguments) for c in whole_calls] == calls
    for call in whole_calls:
        assert call.id.startswith("call_") and len(call.id) == 29
        json.loads(call.arguments)


@pytest.mark.behavior("SSE-020")
def test_text_that_may_open_a_call_is_held_back() -> None:
    parser = ToolCallParser(HERMES)
    assert parser.feed("Sure. <tool_") == [ContentDelta("Sure.")]
    assert parser.feed("ca") == []
    assert parser.feed("X") == [ContentDelta(" <tool_caX")]
    llama = ToolCallParser(LLAMA3)
    assert llama.feed("  <|python") == []
    assert llama.feed('_tag|>{"name": "f", "parameters": {"a"') != []
    assert [type(e) for e in llama.feed(": 1}}")] == [ArgumentsDelta]


@pytest.mark.behavior("SSE-020")
def test_arguments_stream_as_they_are_written() -> None:
    parser = ToolCallParser(HERMES, new_id=lambda: "call_x")
    assert parser.feed('<tool_call>\n{"name": "get_weather", ') == []
    assert parser.feed('"arguments": {"city": "Pa') == [
        CallStarted(0, "call_x", "get_weather"),
        ArgumentsDelta(0, '{"city": "Pa'),
    ]
    assert parser.feed('ris"}}\n</tool_call>') == [ArgumentsDelta(0, 'ris"}')]
    assert parser.finish() == []
    assert parser.content == ""


@pytest.mark.behavior("INF-029")
def test_without_parallel_calls_only_the_first_counts() -> None:
    text = (
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "b", "arguments": {}}</tool_call>'
    )
    _, calls = fold(fed(HERMES, [text], parallel=False))
    assert [name for _, name, _ in calls] == ["a"]


@pytest.mark.behavior("INF-029")
def test_an_answer_cut_inside_a_call_keeps_what_was_written() -> None:
    text = '<tool_call>{"name": "a", "arguments": {"x": [1, 2'
    for cut in (True, False):
        content, calls = fold(fed(HERMES, [text], cut=cut))
        assert (content, calls) == ("", [("call_0", "a", '{"x": [1, 2')])
    # Cut before the arguments began: the call's markup is dropped, never content.
    for cut in (True, False):
        assert fold(fed(HERMES, ['<tool_call>{"na'], cut=cut)) == ("", [])


# A forced call as each family's grammar has the model write it, with text a client may
# send in its arguments (a JSON answer with the same first key is no call: see below).
FORCED = [
    (
        HERMES,
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa \\"ris\\""}}\n</tool_call>',
    ),
    (
        HERMES,
        '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {"x": 1}}\n</tool_call>',
    ),
    (LLAMA3, '{ "name": "get_weather", "parameters": {"city": "Paris"}}'),
    (LLAMA3, '<|python_tag|>{"name": "f", "parameters": {"q": "x"}}'),
    (
        MISTRAL,
        '[TOOL_CALLS] [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]',
    ),
    (MISTRAL, '[{"name": "a", "arguments": {"x": 1}}]'),
]


@pytest.mark.behavior("INF-029", "SSE-020")
@pytest.mark.parametrize(("family", "text"), FORCED)
def test_a_call_cut_anywhere_never_shows_its_markup_as_content(
    family: ToolFamily, text: str
) -> None:
    """Cut by max_tokens after any character, streamed in any pieces or whole: no content
    at all, and each call reported is one of the whole answer's, its arguments as far as
    written."""
    _, whole = parse_tool_calls(family, text)
    full = [(call.name, call.arguments) for call in whole]
    for end in range(len(text) + 1):
        prefix = text[:end]
        for pieces in splits(prefix) if prefix else [[]]:
            content, calls = fold(fed(family, pieces, cut=True))
            assert content == "", (prefix, pieces)
            assert len(calls) <= len(full), prefix
            for (_, name, arguments), (full_name, full_arguments) in zip(calls, full, strict=False):
                assert name == full_name and full_arguments.startswith(arguments), prefix
        assert parse_tool_calls(family, prefix, cut=True)[0] == ""


@pytest.mark.behavior("INF-029")
def test_text_before_a_cut_call_stays_and_the_call_s_opening_goes() -> None:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    for end in range(1, len(call)):
        content, _ = fold(fed(HERMES, ["Let me look. ", call[:end]], cut=True))
        assert content == "Let me look.", call[:end]
    # `<tool_` beside a good first call.
    content, calls = fold(fed(HERMES, [call, "\n<tool_"], cut=True))
    assert content == "" and [name for _, name, _ in calls] == ["get_weather"]


@pytest.mark.behavior("INF-029")
def test_how_the_answer_ended_decides_only_a_partial_opener_at_its_end() -> None:
    # Ended by the model: `<` was text. Cut there: it may have begun a call.
    assert fold(fed(HERMES, ["a <"]))[0] == "a <"
    assert fold(fed(HERMES, ["a <"], cut=True))[0] == "a"
    assert fold(fed(LLAMA3, ["<|python"]))[0] == "<|python"
    assert fold(fed(LLAMA3, ["<|python"], cut=True))[0] == ""
    # A Llama 3 JSON answer is no call, cut or not; a call's beginning is one either way.
    for cut in (True, False):
        assert fold(fed(LLAMA3, ['{"answer": [4'], cut=cut))[0] == '{"answer": [4'
        assert fold(fed(LLAMA3, ['{"na'], cut=cut))[0] == ""
        assert fold(fed(LLAMA3, ['{"type": "function", "na'], cut=cut))[0] == ""
        assert fold(fed(MISTRAL, ["["], cut=cut))[0] == ""
        assert fold(fed(MISTRAL, ["[1"], cut=cut))[0] == "[1"
        assert fold(fed(LLAMA3, ["  "], cut=cut))[0] == "  "


def test_whitespace_is_kept_in_plain_answers_and_dropped_around_calls() -> None:
    assert fold(fed(HERMES, list("  two\n\nlines \n")))[0] == "  two\n\nlines \n"
    call = '<tool_call>{"name": "a", "arguments": {}}</tool_call>'
    for pieces in (["\n", call, "\n\n"], [f"\n{call}\n\n"]):
        assert fold(fed(HERMES, pieces))[0] == ""
        assert fold(fed(HERMES, [*pieces, "Done.\n\n", "Bye."]))[0] == "Done.\n\nBye."
