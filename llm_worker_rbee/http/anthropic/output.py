"""Anthropic's message, built the same way whole and streamed (its content blocks and,
streamed, their events), and its error shape."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from quart import Response

from llm_worker_rbee.actors.choice_stream import ChoiceStream
from llm_worker_rbee.http.anthropic.schemas import MessagesBody
from llm_worker_rbee.http.chat_turns import TurnOutput, json_response
from llm_worker_rbee.http.errors import ended_error
from llm_worker_rbee.http.frame_loop import read_to_end, session_frames
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sse import sse_data
from llm_worker_rbee.messages.inference import Thinking
from llm_worker_rbee.messages.session import Ended, ErrorInfo, InferenceRequest, TextDelta
from llm_worker_rbee.reasoning import ReasoningSplitter
from llm_worker_rbee.tool_calls import (
    ArgumentsDelta,
    CallStarted,
    ContentDelta,
    ToolEvent,
    ToolPlan,
    new_call_id,
)

ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, fields: dict[str, Any]) -> dict[str, Any]:
    """The worker's error fields in Anthropic's shape, keeping `param` and `code` (and
    `details`, Anthropic's machine-readable cause, where the error has one)."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    error = {
        "type": kind,
        "message": fields.get("message", ""),
        "param": fields.get("param"),
        "code": fields.get("code"),
    }
    if fields.get("details") is not None:
        error["details"] = fields["details"]
    return {"type": "error", "error": error}


class MessageReply:
    """One request's message, whole or as Anthropic's stream of events."""

    def __init__(
        self,
        services: Services,
        body: MessagesBody,
        inference: InferenceRequest,
        plan: ToolPlan,
        thinking: Thinking = "none",
    ) -> None:
        self.id = f"msg_{uuid.uuid4().hex}"
        self.model_id = services.model_id
        self.stops = frozenset(body.stop_sequences or ())
        self.input_tokens = len(inference.prompt_tokens)
        # Below the client's max_tokens when the slot's context had less room left.
        self.clamped = inference.max_tokens < body.max_tokens
        self.output = TurnOutput(plan, _tool_use_id)
        self.blocks: list[dict[str, Any]] = []  # the content blocks, in order
        self._texts: dict[int, list[str]] = {}  # a text block's text, by index
        self._arguments: dict[int, list[str]] = {}  # a tool_use block's JSON, by index
        self._calls: dict[int, int] = {}  # a call's index -> its block's index
        self._open: int | None = None
        # The thinking split from the answer (reasoning.py): a `thinking` block when the
        # request asked for one (its text left out with display "omitted"), else dropped.
        self._splitter = (
            None if thinking == "none" else ReasoningSplitter(in_reasoning=thinking == "inside")
        )
        asked = body.thinking is not None and body.thinking.type != "disabled"
        self._show_thinking = asked
        self._omit_thinking = (
            asked and body.thinking is not None and (body.thinking.display == "omitted")
        )

    def stop_reason(self, ended: Ended) -> tuple[str, str | None]:
        """(stop_reason, stop_sequence): `tool_use` once a call was made; a stop string the
        client gave is `stop_sequence`; the chat template's own end of turn, like an
        end-of-generation token, `end_turn`; the end of the slot's context before
        max_tokens, `model_context_window_exceeded`."""
        if ended.stop_reason == "max_tokens":
            return ("model_context_window_exceeded" if self.clamped else "max_tokens"), None
        if self._calls:
            return "tool_use", None
        if ended.stop_reason == "stop_sequence" and ended.stop in self.stops:
            return "stop_sequence", ended.stop
        return "end_turn", None

    @staticmethod
    def usage(ended: Ended) -> dict[str, Any]:
        """Anthropic counts prompt tokens read from the cache apart: `input_tokens` are
        the ones decoded, the prompt is `input_tokens + cache_read_input_tokens`."""
        return {
            "input_tokens": ended.tokens_in - ended.cached_tokens,
            "output_tokens": ended.tokens_out,
            "cache_read_input_tokens": ended.cached_tokens,
            "cache_creation_input_tokens": 0,
        }

    def message(self, content: list[dict[str, Any]], ended: Ended | None) -> dict[str, Any]:
        reason, sequence = (None, None) if ended is None else self.stop_reason(ended)
        usage = (
            {"input_tokens": self.input_tokens, "output_tokens": 0}
            if ended is None
            else self.usage(ended)
        )
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model_id,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": usage,
        }

    # --- content blocks: built the same way whole and streamed; the frames are the events ---

    def on(self, events: list[ToolEvent]) -> list[bytes]:
        frames: list[bytes] = []
        for event in events:
            if isinstance(event, ContentDelta):
                if self._open is None or self.blocks[self._open]["type"] != "text":
                    frames += self.close_block()
                    frames += self.open_text()
                assert self._open is not None
                self._texts[self._open].append(event.text)
                delta = {"type": "text_delta", "text": event.text}
                frames.append(_block_delta(self._open, delta))
            elif isinstance(event, CallStarted):
                frames += self.close_block()
                index = len(self.blocks)
                block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
                self.blocks.append(block)
                self._arguments[index] = []
                self._calls[event.index] = index
                self._open = index
                frames.append(_block_start(index, block))
            elif isinstance(event, ArgumentsDelta):
                index = self._calls[event.index]
                self._arguments[index].append(event.text)
                frames.append(
                    _block_delta(index, {"type": "input_json_delta", "partial_json": event.text})
                )
        return frames

    def open_text(self) -> list[bytes]:
        frames = self.close_block()  # e.g. the thinking's, when the text begins
        index = len(self.blocks)
        self.blocks.append({"type": "text", "text": ""})
        self._texts[index] = []
        self._open = index
        return [*frames, _block_start(index, {"type": "text", "text": ""})]

    def close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        index, self._open = self._open, None
        block = self.blocks[index]
        frames: list[bytes] = []
        if block["type"] == "text":
            block["text"] = "".join(self._texts[index])
        elif block["type"] == "thinking":
            thought = "".join(self._texts[index])
            block["thinking"] = "" if self._omit_thinking else thought
            block["signature"] = hashlib.sha256(thought.encode()).hexdigest()
            delta = {"type": "signature_delta", "signature": block["signature"]}
            frames.append(_block_delta(index, delta))
        else:
            block["input"] = _arguments_object("".join(self._arguments[index]))
        stop = sse_data({"type": "content_block_stop", "index": index}, "content_block_stop")
        return [*frames, stop]

    def on_thinking(self, text: str) -> list[bytes]:
        """Thinking text: into the thinking block, opened first (it comes before the
        answer's blocks); dropped when the request did not ask for thinking."""
        if not text or not self._show_thinking:
            return []
        frames: list[bytes] = []
        if self._open is None or self.blocks[self._open]["type"] != "thinking":
            frames += self.close_block()
            index = len(self.blocks)
            block = {"type": "thinking", "thinking": "", "signature": ""}
            self.blocks.append(block)
            self._texts[index] = []
            self._open = index
            frames.append(_block_start(index, block))
        assert self._open is not None
        self._texts[self._open].append(text)
        if not self._omit_thinking:
            delta = {"type": "thinking_delta", "thinking": text}
            frames.append(_block_delta(self._open, delta))
        return frames

    def finish(self, ended: Ended) -> list[bytes]:
        frames = [] if self._splitter is None else self._split(*self._splitter.finish())
        frames += self.on(self.output.finish(ended))
        if all(block["type"] == "thinking" for block in self.blocks):
            frames += self.open_text()  # an empty answer is still a text block
        return frames + self.close_block()

    def text_frames(self, delta: TextDelta) -> list[bytes]:
        if self._splitter is None:
            return self.on(self.output.feed(delta.text))
        return self._split(*self._splitter.feed(delta.text))

    def _split(self, thinking: str, answer: str) -> list[bytes]:
        return self.on_thinking(thinking) + self.on(self.output.feed(answer))

    async def whole(self, stream: ChoiceStream) -> Response:
        ended = await read_to_end(stream, self.text_frames)
        self.finish(ended)
        return json_response(self.message(self.blocks, ended))

    def frames(self, stream: ChoiceStream, keepalive: float) -> AsyncIterator[bytes]:
        """message_start, a ping, each content block's start, deltas (`thinking_delta` then
        one `signature_delta`, `text_delta`, `input_json_delta`) and stop (the text block at
        once without tools or thinking; otherwise a block when its thinking, text or call
        begins), message_delta (stop_reason and usage),
        message_stop; a request that fails after it started ends with an `error` event.
        Silence gets `ping` events."""
        start = {"type": "message_start", "message": self.message([], None)}
        opening = [sse_data(start, "message_start")]
        if self.output.parser is None and not self._show_thinking:
            opening += self.open_text()
        opening.append(_PING)
        return session_frames(
            stream, keepalive, opening, self.text_frames, self.end_frames, ping=_PING
        )

    def end_frames(self, ended: Ended) -> list[bytes]:
        error = ended_error(ended)
        if error is not None:
            return [_error_event(error)]
        frames = self.finish(ended)  # before the stop reason: the last call may end here
        reason, sequence = self.stop_reason(ended)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": self.usage(ended),
        }
        frames.append(sse_data(delta, "message_delta"))
        frames.append(sse_data({"type": "message_stop"}, "message_stop"))
        return frames


def _tool_use_id() -> str:
    """Anthropic's style of call id: `toolu_` and 24 letters or digits."""
    return "toolu_" + new_call_id().removeprefix("call_")


def _arguments_object(text: str) -> dict[str, Any]:
    """A call's input as an object; arguments cut short (max_tokens) or not an object
    give {}, as the call could not be made anyway."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    payload = {"type": "content_block_start", "index": index, "content_block": dict(block)}
    return sse_data(payload, "content_block_start")


def _block_delta(index: int, delta: dict[str, Any]) -> bytes:
    payload = {"type": "content_block_delta", "index": index, "delta": delta}
    return sse_data(payload, "content_block_delta")


_PING = sse_data({"type": "ping"}, "ping")


def _error_event(error: ErrorInfo) -> bytes:
    fields = {"message": error.message, "param": error.param, "code": error.code}
    return sse_data(anthropic_error(error.status, fields), "error")
