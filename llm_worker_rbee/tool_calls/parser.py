"""The model's output as content text and tool calls, token by token.

`ToolCallParser.feed` takes the text as it is generated and returns events: content that
can be shown, a call's start (its id and function name) and fragments of its arguments as
the model writes them. Text that may still turn out to open a call (a partial
`<tool_call>`, a leading `{` for Llama 3) is held back, never sent as content; text that
turns out not to be a call is released as content. Whitespace around calls is dropped.

Call markup never becomes content: a call is reported once its name and its arguments' key
are written; an answer that ends before that (cut by max_tokens, or a call the model never
finished) drops what it held of the call, and a call cut inside its arguments keeps them as
far as written. Only a partial opener at the very end is told by how the answer ended: cut,
it is dropped; ended by the model, it was text (`a <`).

The whole answer is the same events folded (`parse_tool_calls`), so a streamed answer and
a whole one always agree.

Each family's syntax is data (tool_calls/syntax.py): JSON call objects (alone, in an array, or
closed by a marker) and calls that name the function outside JSON (a head matched by a
pattern, the arguments' object, end markup), each the same machine's steps.

One piece (over 400 lines): `ToolCallParser` is one state machine (content, head,
arguments, tail, closer, between, call end, calls) whose steps hand one buffer to each
other; the JSON scanning it needs (`json_end`, `_ValueStream`) is small and used nowhere
else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from llm_worker_rbee.tool_calls.family import ToolFamily
from llm_worker_rbee.tool_calls.spec import ToolCall, new_call_id
from llm_worker_rbee.tool_calls.syntax import (
    ARGUMENT_KEYS,
    JSON_HEAD,
    NAME_KEYS,
    OPENERS,
    PROMPT_TAIL,
    Opener,
)

# The first key of a call object as the families write it (OpenAI-style `type` first, too).
_FIRST_KEYS = ("name", "type")
# A head not matched within this many characters is no call's.
_HEAD_LIMIT = 256


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str


@dataclass(frozen=True, slots=True)
class CallStarted:
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ArgumentsDelta:
    index: int
    text: str


ToolEvent = ContentDelta | CallStarted | ArgumentsDelta


_State = Literal["content", "head", "args", "tail", "closer", "between", "call_end", "calls"]


def json_end(text: str, start: int = 0) -> int | None:
    """The index just past the JSON value (object, array or string) at `text[start]`, or
    None while it is incomplete. Only brackets and strings are followed, not validity."""
    depth = 0
    in_string = False
    escaped = False
    for i in range(start, len(text)):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if depth == 0:
                    return i + 1
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


class _ValueStream:
    """Follows one JSON value as it arrives, so it can be passed on piece by piece."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.started = False

    def take(self, text: str) -> tuple[int, bool]:
        """How much of `text` belongs to the value, and whether the value ended there."""
        for i, char in enumerate(text):
            if not self.started:
                if char.isspace():
                    continue
                self.started = True
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
                    if self.depth == 0:
                        return i + 1, True
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                if self.depth == 0:  # a scalar value ended by its object's end
                    return i, True
                self.depth -= 1
                if self.depth == 0:
                    return i + 1, True
            elif char == "," and self.depth == 0:
                return i, True
        return len(text), False


class ToolCallParser:
    """Splits one choice's output into content and tool calls as it is generated.

    Args:
        family: the template's tool-call format.
        parallel: False keeps only the first call (OpenAI's `parallel_tool_calls: false`).
        new_id: makes the id of each call.
    """

    def __init__(
        self,
        family: ToolFamily,
        *,
        parallel: bool = True,
        new_id: Callable[[], str] = new_call_id,
    ) -> None:
        self._openers = OPENERS[family]
        self._parallel = parallel
        self._new_id = new_id
        self._buf = PROMPT_TAIL.get(family, "")
        self._state: _State = "content"
        self._opener: Opener | None = None
        # Text of the current block since its opener, released as content if no call comes.
        self._raw = ""
        self._block_calls = 0
        self._at_start = True
        self._held_space = ""
        self._value = _ValueStream()
        self._string_args = False
        self._depth = 0
        self._ends: tuple[str, ...] = ()
        self._array_open = False
        self._muting = False
        self._after_call = False
        self._cut = False
        self._names: list[str] = []
        self._arguments: list[list[str]] = []
        self._ids: list[str] = []
        self.content = ""

    def feed(self, text: str) -> list[ToolEvent]:
        self._buf += text
        events: list[ToolEvent] = []
        while self._step(events, final=False):
            pass
        return events

    def finish(self, *, cut: bool = False) -> list[ToolEvent]:
        """The events for text held back until the end of the output; `cut`: the output was
        cut short (max_tokens), so a partial opener at its end is no text but a call begun."""
        events: list[ToolEvent] = []
        self._cut = cut
        while self._step(events, final=True):
            pass
        dropped = bool(self._buf.strip()) if self._state == "content" else self._began_call()
        if self._state == "content" and not dropped:
            self._content(events, self._buf)
        elif self._state in ("head", "between") and not self._block_calls and not dropped:
            self._release(events, self._raw + self._buf)
        # Otherwise the output ended inside a call: what was sent of its arguments stays,
        # its markup is dropped.
        self._buf = ""
        self._state = "content"
        if self._held_space and not self._ids and not dropped:
            self._emit_content(events, self._held_space)
        self._held_space = ""
        return events

    def _began_call(self) -> bool:
        """Whether the block held at the end is a call's opening, not text: a marker opened
        it (`<tool_call>`, `[TOOL_CALLS]`, `<|python_tag|>`), or its object's first key is
        (so far) a call's (`{"name"`, `{"type"`); `{"answer": 4` is a JSON answer."""
        if self._opener is None:
            return False
        if self._opener.text not in ("{", "["):
            return True
        rest = self._buf.lstrip()
        if rest[:1] != "{":
            return not rest
        rest = rest[1:].lstrip()
        if rest[:1] != '"':
            return not rest
        end = rest.find('"', 1)
        key = rest[1:] if end < 0 else rest[1:end]
        return any(k.startswith(key) if end < 0 else k == key for k in _FIRST_KEYS)

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(call_id, name, "".join(parts))
            for call_id, name, parts in zip(self._ids, self._names, self._arguments, strict=True)
        ]

    # --- the state machine: each step consumes some of the buffer, or returns False ---

    def _step(self, events: list[ToolEvent], *, final: bool) -> bool:
        if self._state == "content":
            return self._step_content(events, final=final)
        if self._state == "head":
            return self._step_head(events, final=final)
        if self._state == "args":
            return self._step_args(events)
        if self._state == "tail":
            return self._step_tail()
        if self._state == "closer":
            return self._step_closer()
        if self._state == "call_end":
            return self._step_call_end()
        if self._state == "calls":
            return self._step_calls()
        return self._step_between(events, final=final)

    def _step_content(self, events: list[ToolEvent], *, final: bool) -> bool:
        buf = self._buf
        best: tuple[int, Opener] | None = None
        for opener in self._openers:
            if opener.at_start:
                if not self._at_start:
                    continue
                stripped = buf.lstrip()
                if stripped.startswith(opener.text):
                    at = len(buf) - len(stripped)
                    if best is None or at < best[0]:
                        best = (at, opener)
                continue
            at = buf.find(opener.text)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, opener)
        if best is not None:
            at, opener = best
            if (not final or self._cut) and any(
                len(o.text) > len(buf) - at and o.text.startswith(buf[at:]) for o in self._openers
            ):  # `[` so far, which may still become `[TOOL_CALLS]` (or was cut on its way)
                self._content(events, buf[:at])
                self._buf = buf[at:]
                return False
            self._content(events, buf[:at])
            self._buf = buf[at + len(opener.text) :]
            if opener.shape != "drop":
                self._open(opener)
            return True
        # At the end, a partial opener is text unless the output was cut there.
        keep = 0 if final and not self._cut else self._undecided(buf)
        if keep < len(buf):
            self._content(events, buf[: len(buf) - keep])
            self._buf = buf[len(buf) - keep :]
        return False

    def _undecided(self, buf: str) -> int:
        """How many trailing characters could still begin an opener."""
        keep = 0
        for opener in self._openers:
            if opener.at_start:
                if self._at_start and opener.text.startswith(buf.lstrip()):
                    keep = len(buf)
                continue
            for size in range(min(len(opener.text) - 1, len(buf)), 0, -1):
                if opener.text.startswith(buf[-size:]):
                    keep = max(keep, size)
                    break
        return keep

    def _open(self, opener: Opener) -> None:
        self._opener = opener
        # An opener that is itself the value's first character (`{`, `[`) stays in the text.
        if opener.text in ("{", "["):
            self._buf = opener.text + self._buf
            self._raw = ""
        else:
            self._raw = opener.text
        self._block_calls = 0
        self._state = "between" if opener.shape == "array" else "head"
        if opener.shape == "sequence":
            self._state = "calls"
        self._array_open = False

    def _step_between(self, events: list[ToolEvent], *, final: bool) -> bool:
        """Inside an array of calls: before `[`, between elements, or at its `]`."""
        stripped = self._buf.lstrip()
        if not stripped:
            return False
        skipped = self._buf[: len(self._buf) - len(stripped)]
        char = stripped[0]
        if not self._array_open:
            if char != "[":
                self._release(events, self._raw + self._buf)
                self._buf = ""
                self._to_content()
                return False
            self._array_open = True
            self._raw += skipped + "["
            self._buf = stripped[1:]
            self._state = "head"
            return True
        if char == ",":
            self._buf = stripped[1:]
            self._state = "head"
            return True
        if char == "]":
            self._buf = stripped[1:]
        self._to_content()
        return True

    def _step_head(self, events: list[ToolEvent], *, final: bool) -> bool:
        buf = self._buf
        stripped = buf.lstrip()
        if not stripped:
            return False
        assert self._opener is not None
        if self._opener.head is not None:
            return self._step_named_head(events, self._opener.head, final=final)
        if stripped[0] != "{" or (len(stripped) > 1 and stripped[1:].lstrip()[:1] not in ('"', "")):
            return self._not_a_call(events)
        match = JSON_HEAD.match(buf)
        if match is not None:
            try:
                name = json.loads(f'"{match.group("name")}"')
            except ValueError:
                return self._not_a_call(events)
            self._raw += match.group(0)
            self._buf = buf[match.end() :]
            self._start_call(events, name)
            self._value = _ValueStream()
            self._string_args = False
            self._state = "args"
            return True
        start = len(buf) - len(stripped)
        end = json_end(buf, start)
        if end is None:
            return False
        try:
            value = json.loads(buf[start:end])
        except ValueError:
            return self._not_a_call(events)
        name = next((value[k] for k in NAME_KEYS if k in value), None)
        if not isinstance(value, dict) or not isinstance(name, str):
            return self._not_a_call(events)
        arguments: object = next((value[k] for k in ARGUMENT_KEYS if k in value), {})
        self._raw += buf[:end]
        self._buf = buf[end:]
        self._start_call(events, name)
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        self._arguments_delta(events, text)
        self._end_call()
        return True

    def _step_args(self, events: list[ToolEvent]) -> bool:
        buf = self._buf
        if not self._value.started:
            stripped = buf.lstrip()
            if not stripped:
                self._buf = ""
                return False
            buf = self._buf = stripped
            # Arguments written as a JSON string holding the JSON text: passed on decoded.
            self._string_args = stripped[0] == '"'
        if self._string_args:
            end = json_end(buf)
            if end is None:
                return False
            try:
                self._arguments_delta(events, str(json.loads(buf[:end])))
            except ValueError:
                self._arguments_delta(events, buf[:end])
            self._buf = buf[end:]
            self._after_arguments()
            return True
        taken, done = self._value.take(buf)
        if taken:
            self._arguments_delta(events, buf[:taken])
        self._buf = buf[taken:]
        if done:
            self._after_arguments()
            return True
        return False

    def _after_arguments(self) -> None:
        """A JSON call object's rest is skipped to its `}`; a named call's end markup next."""
        assert self._opener is not None
        self._state = "tail" if self._opener.head is None else "call_end"
        self._depth = 1
        self._ends = self._opener.call_end

    def _step_named_head(
        self, events: list[ToolEvent], head: re.Pattern[str], *, final: bool
    ) -> bool:
        """A call that names its function outside JSON (`<function=NAME>`, `>>>NAME\n`)."""
        match = head.match(self._buf)
        if match is None:
            if (not final or self._cut) and len(self._buf) < _HEAD_LIMIT:
                return False  # still arriving (or cut on its way: dropped)
            return self._not_a_call(events)
        self._raw += match.group(0)
        self._buf = self._buf[match.end() :]
        self._start_call(events, match.group("name").strip())
        self._value = _ValueStream()
        self._string_args = False
        self._state = "args"
        return True

    def _step_call_end(self) -> bool:
        """The markup after a named call's arguments (DeepSeek R1's ``` and end marker), each part
        optional, possibly still arriving."""
        while self._ends:
            stripped = self._buf.lstrip()
            if not stripped:
                self._buf = ""
                return False
            part = self._ends[0]
            if stripped.startswith(part):
                self._buf = stripped[len(part) :]
            elif part.startswith(stripped):
                self._buf = stripped
                return False
            self._ends = self._ends[1:]
        self._end_call()
        return True

    def _step_calls(self) -> bool:
        """In a sequence of calls: the next call's start, or the block's closer."""
        assert self._opener is not None
        stripped = self._buf.lstrip()
        if not stripped:
            self._buf = ""
            return False
        closer, start = self._opener.closer, self._opener.call_start
        if stripped.startswith(start):
            self._buf = stripped
            self._state = "head"
            return True
        if stripped.startswith(closer):
            self._buf = stripped[len(closer) :]
        elif closer.startswith(stripped) or start.startswith(stripped):
            self._buf = stripped
            return False
        self._to_content()
        return True

    def _step_tail(self) -> bool:
        """Skips the rest of the call object (e.g. Mistral's `"id"`) up to its `}`."""
        start = 0
        while start < len(self._buf):
            char = self._buf[start]
            if char == '"':
                end = json_end(self._buf, start)
                if end is None:
                    self._buf = self._buf[start:]
                    return False
                start = end
                continue
            if char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self._buf = self._buf[start + 1 :]
                    self._end_call()
                    return True
            start += 1
        self._buf = ""
        return False

    def _end_call(self) -> None:
        self._block_calls += 1
        self._after_call = True
        assert self._opener is not None
        if self._opener.shape == "array":
            self._state = "between"
        elif self._opener.shape == "sequence":
            self._state = "calls"
        elif self._opener.closer:
            self._state = "closer"
        else:
            self._to_content()

    def _step_closer(self) -> bool:
        """After a call: its block's closer (`</tool_call>`), possibly still arriving."""
        assert self._opener is not None
        closer = self._opener.closer
        stripped = self._buf.lstrip()
        if not stripped:
            self._buf = ""
            return False
        if stripped.startswith(closer):
            self._buf = stripped[len(closer) :]
        elif closer.startswith(stripped):
            self._buf = stripped
            return False
        self._to_content()
        return True

    def _to_content(self) -> None:
        self._state = "content"
        self._opener = None
        self._raw = ""
        # Llama 3 writes further calls as further objects.
        self._at_start = self._block_calls > 0 or self._at_start

    def _not_a_call(self, events: list[ToolEvent]) -> bool:
        if self._block_calls:
            # After a call in the same block: the rest is not a call; it is dropped
            # (a Mistral array that goes on with something else).
            self._buf = ""
            self._to_content()
            return False
        self._release(events, self._raw + self._buf)
        self._buf = ""
        self._to_content()
        self._at_start = False
        return False

    def _release(self, events: list[ToolEvent], text: str) -> None:
        self._at_start = False
        self._content(events, text)

    # --- output ---

    def _content(self, events: list[ToolEvent], text: str) -> None:
        """Content, with whitespace held back until something else follows it: whitespace
        around calls is not content."""
        if self._after_call:  # the whitespace a call ends with is not content either
            text = text.lstrip()
        if not text:
            return
        if text.strip():
            self._at_start = self._after_call = False
        text = self._held_space + text
        body = text.rstrip()
        self._held_space = text[len(body) :]
        if body:
            self._emit_content(events, body)

    def _emit_content(self, events: list[ToolEvent], text: str) -> None:
        self.content += text
        events.append(ContentDelta(text))

    def _start_call(self, events: list[ToolEvent], name: str) -> None:
        self._held_space = ""
        # Without parallel calls, the calls after the first are parsed and dropped.
        self._muting = not self._parallel and bool(self._ids)
        if self._muting:
            return
        self._ids.append(self._new_id())
        self._names.append(name)
        self._arguments.append([])
        events.append(CallStarted(len(self._ids) - 1, self._ids[-1], name))

    def _arguments_delta(self, events: list[ToolEvent], text: str) -> None:
        if not text or self._muting:
            return
        self._arguments[-1].append(text)
        events.append(ArgumentsDelta(len(self._ids) - 1, text))


def parse_tool_calls(
    family: ToolFamily, text: str, *, parallel: bool = True, cut: bool = False
) -> tuple[str, list[ToolCall]]:
    """A whole output's content and calls (`cut`: max_tokens ended it)."""
    parser = ToolCallParser(family, parallel=parallel)
    parser.feed(text)
    parser.finish(cut=cut)
    return parser.content, parser.tool_calls()
