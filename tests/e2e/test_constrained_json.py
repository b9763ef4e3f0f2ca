"""Constrained replies always parse, on the real model: prompts that invite newlines, tabs,
quotes and backslashes (code, poems, file paths, quotations) under chat's `json_schema`, a
required tool call (Qwen 2.5's template) and Responses' `text.format`. Every reply the
grammar completed (`stop`, `tool_calls`, `completed`) passes `json.loads` and the schema;
what the model writes is never asserted. And a forced call cut by `max_tokens` never shows
its markup as text, in chat or Messages, whole or streamed."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anthropic
import jsonschema
import openai
import pytest

from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model
R = TypeVar("R")

PROMPTS = [
    "def add(a, b):\n    return a + b\n\nWhat does this code do? Put the code in text.",
    'print("hello")\nprint("bye")\n\nExplain these two lines of Python.',
    'for f in /tmp/*; do\n  echo "$f"\ndone\n\nWhat does this bash loop do?',
    'printf("a\\tb\\n");\n\nExplain the escapes in this C call.',
    '{"say": "\\"hi\\""}\n\nIs this JSON valid? Quote it.',
    "SELECT name\nFROM people\nWHERE name = 'O''Brien';\n\nExplain this SQL.",
    "C:\\Users\\me\\file.txt\nD:\\data\\x.csv\n\nWhich drive is each path on?",
    "Write a four-line poem about the sea, one line per line.",
    "Roses are red,\nViolets are blue,\nSugar is sweet,\nAnd so are you.\n\nCopy this poem.",
    "Write a haiku about autumn, with its line breaks.",
    "There once was a cat\nwho sat on a mat\n\nFinish this limerick.",
    "C:\\Program Files\\App\\app.exe\n/usr/local/bin/app\n\nWhich path is Windows?",
    "/etc/hosts\n/etc/passwd\n/etc/fstab\n\nWhat is each of these Linux files for?",
    "Show a path with backslashes and another with slashes.",
    '"To be, or not to be,\nthat is the question."\n\nWho wrote this?',
    'She said "hi".\nHe said "bye".\n\nWrite the dialogue as a script.',
    "Write a tweet with \"double quotes\", 'single quotes' and a #tag.",
    '"Stay hungry, stay foolish."\n\nWho said this? Quote it.',
    "eggs\nmilk\nbread\n\nAdd two items to this shopping list.",
    "name\tage\tcity\nAda\t36\tLondon\n\nTurn this table into a sentence.",
]
# The schema; unbounded, a string may run to the token budget (`length`).
TEXT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
}
# Bounded strings close within the budget, so most replies end with `stop`.
NOTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string", "maxLength": 40}},
    "required": ["text"],
    "additionalProperties": False,
}
SAVE: Any = {
    "type": "function",
    "function": {
        "name": "save_note",
        "description": "Saves a note to a file",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "maxLength": 16},
                "text": {"type": "string", "maxLength": 24},
            },
            "required": ["path", "text"],
        },
    },
}
SAVE_SCHEMA = SAVE["function"]["parameters"]
MAX_TOKENS = 32
# A call's markup alone takes about 25 of the bundled model's tokens.
CALL_TOKENS = 48


def two_at_a_time(reply: Callable[[str], R], prompts: list[str]) -> list[R]:
    """`reply` to each prompt, two requests at a time: the session worker's two slots."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(reply, prompts))


@pytest.fixture
def client(worker: WorkerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0) as oai:
        yield oai


@pytest.fixture
def qwen_client(qwen: WorkerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{qwen.url}/v1", api_key="unused", max_retries=0) as oai:
        yield oai


@pytest.fixture
def claude(qwen: WorkerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=qwen.url, api_key="unused", max_retries=0) as client:
        yield client


def ask(prompt: str) -> Any:
    return [{"role": "user", "content": prompt}]


def valid(text: str, schema: dict[str, Any]) -> Any:
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value


@pytest.mark.behavior("INF-048", "INF-012")
def test_json_schema_replies_parse(client: openai.OpenAI) -> None:
    model = client.models.list().data[0].id

    schemas = {p: NOTE_SCHEMA if i % 4 else TEXT_SCHEMA for i, p in enumerate(PROMPTS)}

    def reply(prompt: str) -> tuple[str, str]:
        response = client.chat.completions.create(
            model=model,
            messages=ask(prompt),
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schemas[prompt]},
            },
            max_tokens=MAX_TOKENS,
            temperature=0,
        )
        choice = response.choices[0]
        return choice.finish_reason, choice.message.content or ""

    replies = two_at_a_time(reply, PROMPTS)
    ends = Counter(finish for finish, _ in replies)
    print(f"json_schema: {len(replies)} replies, {dict(ends)}")
    for prompt, (finish, content) in zip(PROMPTS, replies, strict=True):
        assert finish in ("stop", "length"), prompt
        if finish == "stop":
            valid(content, schemas[prompt])
    assert ends["stop"] >= len(PROMPTS) // 3, ends  # most bounded replies close in the budget


@pytest.mark.behavior("INF-048", "OAI-023")
def test_responses_text_format_replies_parse(client: openai.OpenAI) -> None:
    model = client.models.list().data[0].id

    def reply(prompt: str) -> tuple[str, str]:
        response = client.responses.create(
            model=model,
            input=prompt,
            text={"format": {"type": "json_schema", "name": "note", "schema": NOTE_SCHEMA}},
            max_output_tokens=MAX_TOKENS,
            temperature=0,
        )
        return response.status or "", response.output_text

    replies = two_at_a_time(reply, PROMPTS)
    ends = Counter(status for status, _ in replies)
    print(f"text.format: {len(replies)} replies, {dict(ends)}")
    for prompt, (status, text) in zip(PROMPTS, replies, strict=True):
        assert status in ("completed", "incomplete"), prompt
        if status == "completed":
            valid(text, NOTE_SCHEMA)
    assert ends["completed"] >= len(PROMPTS) // 3, ends


@pytest.mark.behavior("INF-048", "OAI-007")
def test_required_tool_call_arguments_parse(qwen_client: openai.OpenAI) -> None:
    counts: Counter[str] = Counter()
    for prompt in PROMPTS:
        response = qwen_client.chat.completions.create(
            model="qwen2.5",
            messages=ask(prompt),
            tools=[SAVE],
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=CALL_TOKENS,
            temperature=0,
        )
        choice = response.choices[0]
        counts[choice.finish_reason] += 1
        assert choice.finish_reason in ("tool_calls", "length"), prompt
        assert not choice.message.content, prompt  # a forced answer is calls only
        if choice.finish_reason == "tool_calls":
            calls = choice.message.tool_calls or []
            functions = [getattr(call, "function", None) for call in calls]
            assert [f.name for f in functions if f] == ["save_note"]
            assert functions[0] is not None
            valid(functions[0].arguments, SAVE_SCHEMA)
    print(f"required tool call: {len(PROMPTS)} replies, {dict(counts)}")
    assert counts["tool_calls"] >= len(PROMPTS) // 3, counts


# Inside `<tool_call>`, the call's name, its arguments' key, its arguments.
CUTS = (2, 6, 12, 20)


@pytest.mark.behavior("INF-029", "SSE-020")
def test_a_cut_forced_call_never_shows_its_markup(
    qwen_client: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    """Cut after a few tokens (inside `<tool_call>`, the name, the arguments): no content, no
    text block, whole or streamed; a call, when there is one, is `save_note`."""
    prompt = ask(PROMPTS[0])
    for max_tokens in CUTS:
        forced: dict[str, Any] = {
            "model": "qwen2.5",
            "messages": prompt,
            "tools": [SAVE],
            "tool_choice": "required",
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        whole = qwen_client.chat.completions.create(**forced)
        choice = whole.choices[0]
        assert choice.finish_reason == "length"
        assert not choice.message.content, (max_tokens, choice.message.content)
        calls = [getattr(c, "function", None) for c in choice.message.tool_calls or []]
        assert [f.name for f in calls if f] in ([], ["save_note"])
        chunks = list(qwen_client.chat.completions.create(**forced, stream=True))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == "", (max_tokens, streamed)
        names = [
            call.function.name
            for c in chunks
            if c.choices
            for call in c.choices[0].delta.tool_calls or []
            if call.function and call.function.name
        ]
        assert names in ([], ["save_note"])
        assert chunks[-1].choices[0].finish_reason == "length"

        messages: dict[str, Any] = {
            "model": "qwen2.5",
            "messages": prompt,
            # The chat request's tool: the same prompt, which the slot's cache then holds.
            "tools": [
                {
                    "name": "save_note",
                    "description": SAVE["function"]["description"],
                    "input_schema": SAVE_SCHEMA,
                }
            ],
            "tool_choice": {"type": "any"},
            "max_tokens": max_tokens,
            "extra_body": {"temperature": 0},
        }
        message = claude.messages.create(**messages)
        with claude.messages.stream(**messages) as stream:
            final = stream.get_final_message()
        for reply in (message, final):
            assert reply.stop_reason == "max_tokens"
            texts = [b.text for b in reply.content if isinstance(b, anthropic.types.TextBlock)]
            assert "".join(texts) == "", (max_tokens, texts)
            uses = [b.name for b in reply.content if isinstance(b, anthropic.types.ToolUseBlock)]
            assert uses in ([], ["save_note"])
