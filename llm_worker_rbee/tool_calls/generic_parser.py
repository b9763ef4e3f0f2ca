"""The generic format's answer (tools.generic) as content and tool calls, as it is generated.

The answer is one JSON object: `{"response": "..."}` (a reply: its string, decoded, is the
content, passed on as it comes), `{"tool_call": {"name": ..., "arguments": {...}}}` or
`{"tool_calls": [{...}, ...]}` (calls: each reported once its name and its arguments' key
are written, then its arguments as the model writes them). The text is read once, character
by character, by a small JSON push parser that tracks where in the object it is.

An answer that is not such an object (no grammar held it: a client's test engine, a stop
string) is content as written: decided at its first character that is no `{`, or at a first
key that is none of the three. As in tools.parser: an answer cut before anything was decided
(`{"res`) drops what was held; ended there by the model, it was text. Text after the object
is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from llm_worker_rbee.tool_calls.parser import ArgumentsDelta, CallStarted, ContentDelta, ToolEvent
from llm_worker_rbee.tool_calls.spec import ToolCall, new_call_id

RESPONSE_KEY = "response"
CALL_KEYS = ("tool_call", "tool_calls")
_ROOT_KEYS = (RESPONSE_KEY, *CALL_KEYS)
_ARGUMENT_KEYS = ("arguments", "parameters")
_SCALAR = frozenset("-+.0123456789eEtruefalsn")
_HIGH_SURROGATE = re.compile(r"(?<!\\)(?:\\\\)*\\u[dD][89abAB][0-9a-fA-F]{2}$")
_Role = Literal["key", "name", "response", "other"]


def _ends_in_high_surrogate(raw: str) -> bool:
    """Whether a JSON string's text ends in the escape of a high surrogate, whose low half
    must be decoded with it."""
    return _HIGH_SURROGATE.search(raw) is not None


@dataclass(slots=True)
class _Frame:
    kind: Literal["object", "array"]
    # object: key (expecting a key), colon, value, next (`,` or the end); array: value, next.
    state: str
    key: str | None = None
    index: int = -1


@dataclass(slots=True)
class _Call:
    depth: int
    name: str | None = None
    args_start: int | None = None
    args_end: int | None = None
    args_string: bool = False
    index: int | None = None  # once reported
    sent: int = 0  # characters of the arguments passed on
    muted: bool = False


@dataclass(slots=True)
class _String:
    start: int  # just past the opening quote
    role: _Role
    escape_at: int | None = None  # where an unfinished escape began
    decoded_to: int = 0
    parts: list[str] = field(default_factory=list)


class GenericCallParser:
    """Splits one choice's generic-format answer into content and tool calls.

    Args:
        parallel: False keeps only the first call.
        new_id: makes the id of each call.
    """

    def __init__(self, *, parallel: bool = True, new_id: Callable[[], str] = new_call_id) -> None:
        self._parallel = parallel
        self._new_id = new_id
        self._text = ""
        self._pos = 0
        self._mode: Literal["start", "json", "text", "done"] = "start"
        self._stack: list[_Frame] = []
        self._string: _String | None = None
        self._scalar = False
        self._call: _Call | None = None
        # A `response` that is no string: its JSON text is the content.
        self._raw_response: int | None = None
        self._raw_sent = 0
        self._calls: list[ToolCall] = []
        self._args: list[list[str]] = []
        self.content = ""

    def feed(self, text: str) -> list[ToolEvent]:
        events: list[ToolEvent] = []
        self._text += text
        self._run(events)
        return events

    def finish(self, *, cut: bool = False) -> list[ToolEvent]:
        """What was held back; `cut`: max_tokens ended the answer (see the module)."""
        events: list[ToolEvent] = []
        undecided = self._mode == "start" or (
            self._mode == "json" and len(self._stack) == 1 and self._stack[0].key is None
        )
        if undecided and self._text.strip() and not cut and not (self._calls or self.content):
            self._to_text(events)
        if self._scalar and self._string is None:
            self._scalar = False
            self._end_value(events, self._pos)
        self._mode = "done"
        return events

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(call.id, call.name, "".join(args))
            for call, args in zip(self._calls, self._args, strict=True)
        ]

    # --- reading ---

    def _run(self, events: list[ToolEvent]) -> None:
        text = self._text
        while self._pos < len(text) and self._mode in ("start", "json"):
            i = self._pos
            self._pos += 1
            if not self._char(events, text[i], i):
                self._invalid(events)
        if self._mode == "text":
            self._emit(events, self._text[self._raw_sent :])
            self._raw_sent = len(self._text)
            return
        if self._string is not None:
            self._decode(events, self._string, len(text))
        self._send_arguments(events)
        self._send_raw_response(events)

    def _char(self, events: list[ToolEvent], char: str, i: int) -> bool:
        """One character; False when it cannot belong to the object."""
        if self._string is not None:
            self._string_char(events, self._string, char, i)
            return True
        if self._scalar:
            if char in _SCALAR:
                return True
            self._scalar = False
            self._end_value(events, i)
        if char.isspace():
            return True
        if self._mode == "start":
            if char != "{":
                return False
            self._mode = "json"
            self._stack.append(_Frame("object", "key"))
            return True
        if not self._stack:
            self._mode = "done"  # text after the object
            return True
        frame = self._stack[-1]
        if frame.state == "key":
            if char == '"':
                self._string = _String(i + 1, "key")
                return True
            if char == "}" and frame.key is None:
                self._close(events, i)
                return True
            return False
        if frame.state == "colon":
            if char != ":":
                return False
            frame.state = "value"
            return True
        if frame.state == "next":
            if char == ",":
                if frame.kind == "object":
                    frame.state = "key"
                else:
                    frame.state = "value"
                return True
            if char == ("}" if frame.kind == "object" else "]"):
                self._close(events, i)
                return True
            return False
        if frame.kind == "array" and char == "]" and frame.index < 0:
            self._close(events, i)
            return True
        return self._value(events, char, i)

    def _value(self, events: list[ToolEvent], char: str, i: int) -> bool:
        frame = self._stack[-1]
        if frame.kind == "array":
            frame.index += 1
        frame.state = "next"
        role = self._role()
        if role == "arguments" and self._call is not None:
            self._call.args_start = i
            self._call.args_string = char == '"'
            self._start_call(events, self._call)
        elif role == "response" and char != '"':
            self._raw_response = i
            self._raw_sent = i
        if char == '"':
            kind: _Role = "name" if role == "name" else "other"
            self._string = _String(i + 1, "response" if role == "response" else kind)
        elif char in "{[":
            self._stack.append(_Frame("object", "key") if char == "{" else _Frame("array", "value"))
            if role == "call" and char == "{":
                self._call = _Call(depth=len(self._stack))
        elif char in _SCALAR:
            self._scalar = True
        else:
            return False
        return True

    def _role(self) -> str:
        """What the value now starting is, from the keys (and indexes) that lead to it."""
        path: list[str | int] = []
        for frame in self._stack:
            if frame.kind == "array":
                path.append(frame.index)
            elif frame.key is not None:
                path.append(frame.key)
        if len(path) != len(self._stack):
            return "other"
        if path == [RESPONSE_KEY]:
            return "response"
        if path[:1] and path[0] in CALL_KEYS:
            if len(path) == 1 or (len(path) == 2 and isinstance(path[1], int)):
                return "call"
            call = self._call
            if call is not None and len(path) == call.depth:
                if path[-1] == "name":
                    return "name"
                if path[-1] in _ARGUMENT_KEYS:
                    return "arguments"
        return "other"

    def _string_char(self, events: list[ToolEvent], string: _String, char: str, i: int) -> None:
        if string.escape_at is not None:
            body = self._text[string.escape_at + 1 : i + 1]
            if body[0] != "u" or len(body) == 5:
                string.escape_at = None
            return
        if char == "\\":
            string.escape_at = i
        elif char == '"':
            self._decode(events, string, i)
            self._string = None
            value = "".join(string.parts)
            if string.role == "key":
                self._key(events, value)
            else:
                if string.role == "name" and self._call is not None:
                    self._call.name = value
                    self._start_call(events, self._call)
                self._end_value(events, i + 1)

    def _decode(self, events: list[ToolEvent], string: _String, end: int) -> None:
        """Decodes the string's text up to `end`, short of an unfinished escape (or a high
        surrogate whose low half may follow); a response's text is passed on as content."""
        stop = end if string.escape_at is None else string.escape_at
        start = string.start + string.decoded_to
        raw = self._text[start:stop]
        if (stop < end or end == len(self._text)) and _ends_in_high_surrogate(raw):
            raw = raw[:-6]
        if not raw:
            return
        try:
            text = json.loads(f'"{raw}"', strict=False)
        except ValueError:
            text = raw
        string.decoded_to += len(raw)
        string.parts.append(text)
        if string.role == "response":
            self._emit(events, text)

    def _key(self, events: list[ToolEvent], key: str) -> None:
        frame = self._stack[-1]
        if len(self._stack) == 1 and frame.key is None and key not in _ROOT_KEYS:
            self._to_text(events)
            return
        frame.key = key
        frame.state = "colon"

    def _end_value(self, events: list[ToolEvent], end: int) -> None:
        call = self._call
        if (
            call is not None
            and call.args_start is not None
            and call.args_end is None
            and len(self._stack) == call.depth
        ):
            call.args_end = end
            self._send_arguments(events)
        if self._raw_response is not None and len(self._stack) == 1:
            self._send_raw_response(events, end)
            self._raw_response = None

    def _close(self, events: list[ToolEvent], i: int) -> None:
        depth = len(self._stack)
        self._stack.pop()
        call = self._call
        if call is not None and depth == call.depth:
            self._send_arguments(events)
            if call.index is None and call.name is not None and call.args_start is None:
                self._start_call(events, call, bare=True)  # no arguments written: none
                if call.index is not None:
                    self._args[call.index].append("{}")
                    events.append(ArgumentsDelta(call.index, "{}"))
            self._call = None
        if self._stack:
            self._end_value(events, i + 1)
        else:
            self._mode = "done"

    def _invalid(self, events: list[ToolEvent]) -> None:
        if self._calls or self.content:
            self._mode = "done"
        else:
            self._to_text(events)

    def _to_text(self, events: list[ToolEvent]) -> None:
        self._mode = "text"
        self._string = None
        stripped = self._text.lstrip()
        self._raw_sent = len(self._text) - len(stripped)
        self._emit(events, self._text[self._raw_sent :])
        self._raw_sent = len(self._text)

    # --- output ---

    def _emit(self, events: list[ToolEvent], text: str) -> None:
        if text:
            self.content += text
            events.append(ContentDelta(text))

    def _start_call(self, events: list[ToolEvent], call: _Call, *, bare: bool = False) -> None:
        if call.index is not None or call.name is None or (call.args_start is None and not bare):
            return
        if not self._parallel and self._calls:
            call.muted = True
            return
        call.index = len(self._calls)
        self._calls.append(ToolCall(self._new_id(), call.name, ""))
        self._args.append([])
        events.append(CallStarted(call.index, self._calls[-1].id, call.name))

    def _send_arguments(self, events: list[ToolEvent]) -> None:
        call = self._call
        if call is None or call.index is None or call.args_start is None:
            return
        end = self._pos if call.args_end is None else call.args_end
        if call.args_string:  # a JSON text inside a string: passed on decoded, whole
            if call.args_end is None or call.sent:
                return
            raw = self._text[call.args_start : end]
            try:
                text = str(json.loads(raw))
            except ValueError:
                text = raw
        else:
            text = self._text[call.args_start + call.sent : end]
        call.sent = end - call.args_start
        if text:
            self._args[call.index].append(text)
            events.append(ArgumentsDelta(call.index, text))

    def _send_raw_response(self, events: list[ToolEvent], end: int | None = None) -> None:
        if self._raw_response is None:
            return
        stop = self._pos if end is None else end
        self._emit(events, self._text[self._raw_sent : stop])
        self._raw_sent = max(self._raw_sent, stop)
