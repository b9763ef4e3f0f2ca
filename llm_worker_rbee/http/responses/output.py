"""The Responses API's response object, built the same way whole and streamed: the output
items (a thinking model's reasoning, messages and function calls) and, streamed, their typed
events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from quart import Response

from llm_worker_rbee.actors.choice_stream import ChoiceStream
from llm_worker_rbee.http.chat_turns import TurnOutput, json_response
from llm_worker_rbee.http.errors import ended_error
from llm_worker_rbee.http.frame_loop import read_to_end, session_frames
from llm_worker_rbee.http.responses.schemas import ResponsesBody
from llm_worker_rbee.http.responses.store import ResponseStore, StoredResponse
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sse import sse_data
from llm_worker_rbee.http.translate import DEFAULTS
from llm_worker_rbee.messages.inference import Thinking
from llm_worker_rbee.messages.session import Ended, ErrorInfo, TextDelta
from llm_worker_rbee.prompts import ChatMessage
from llm_worker_rbee.reasoning import ReasoningSplitter
from llm_worker_rbee.tool_calls import (
    ArgumentsDelta,
    CallStarted,
    ContentDelta,
    ToolCall,
    ToolEvent,
    ToolPlan,
    new_call_id,
)


def usage(ended: Ended) -> dict[str, Any]:
    return {
        "input_tokens": ended.tokens_in,
        # cache_write_tokens: what the openai client's types require; the prompt cache here
        # is the slot's own, so nothing is written for later requests to count.
        "input_tokens_details": {"cached_tokens": ended.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": ended.tokens_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": ended.tokens_in + ended.tokens_out,
    }


class ResponseReply:
    """One request's response object, whole or as its stream of typed events."""

    def __init__(
        self,
        services: Services,
        body: ResponsesBody,
        turns: tuple[ChatMessage, ...],
        store: ResponseStore,
        plan: ToolPlan,
        thinking: Thinking = "none",
    ) -> None:
        self.id = f"resp_{uuid.uuid4().hex}"
        self.created_at = int(services.wall_clock())
        self.model_id = services.model_id
        self.body = body
        self.turns = turns
        self.store = store
        self.plan = plan
        self.output = TurnOutput(plan, new_call_id)
        self._sequence = 0
        self.items: list[dict[str, Any]] = []  # the output items, in order
        self._texts: dict[int, list[str]] = {}  # a message's or reasoning's text, by index
        self._calls: dict[int, int] = {}  # a call's index -> its output index
        self._open: int | None = None  # the output index of the item still being written
        # The thinking, split from the answer as chat's reasoning_content (reasoning.py).
        self._splitter = (
            None if thinking == "none" else ReasoningSplitter(in_reasoning=thinking == "inside")
        )

    def response(
        self,
        status: str,
        *,
        output: list[dict[str, Any]],
        ended: Ended | None = None,
        error: ErrorInfo | None = None,
    ) -> dict[str, Any]:
        body = self.body
        text_format: dict[str, Any] = {"type": "text"}
        if body.text is not None and body.text.format is not None:
            text_format = body.text.format.model_dump(by_alias=True, exclude_none=True)
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None if error is None else {"code": error.code, "message": error.message},
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "model": self.model_id,
            "output": output,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "store": body.store is not False,
            "temperature": DEFAULTS.temperature if body.temperature is None else body.temperature,
            "top_p": DEFAULTS.top_p if body.top_p is None else body.top_p,
            "text": {"format": text_format},
            "tool_choice": "auto" if body.tool_choice is None else body.tool_choice,
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "truncation": "disabled",
            "usage": None if ended is None else usage(ended),
            "metadata": body.metadata or {},
            "user": body.user,
        }

    @staticmethod
    def output_text(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    # --- output items: built the same way whole and streamed; the frames are the events ---

    def on(self, events: list[ToolEvent]) -> list[bytes]:
        frames: list[bytes] = []
        for event in events:
            if isinstance(event, ContentDelta):
                if self._open is None or self.items[self._open]["type"] != "message":
                    frames += self.close_item("completed")
                    frames += self.open_message()
                assert self._open is not None
                self._texts[self._open].append(event.text)
                frames.append(
                    self.event(
                        "response.output_text.delta",
                        **self._at(self._open),
                        delta=event.text,
                        logprobs=[],
                    )
                )
            elif isinstance(event, CallStarted):
                frames += self.close_item("completed")
                frames += self.open_call(event)
            elif isinstance(event, ArgumentsDelta):
                index = self._calls[event.index]
                self.items[index]["arguments"] += event.text
                frames.append(
                    self.event(
                        "response.function_call_arguments.delta",
                        item_id=self.items[index]["id"],
                        output_index=index,
                        delta=event.text,
                    )
                )
        return frames

    def on_reasoning(self, text: str) -> list[bytes]:
        """Thinking text: into the reasoning item, opened first if another is open."""
        if not text:
            return []
        frames: list[bytes] = []
        if self._open is None or self.items[self._open]["type"] != "reasoning":
            frames += self.close_item("completed")
            index = len(self.items)
            item = {
                "type": "reasoning",
                "id": f"rs_{uuid.uuid4().hex}",
                "summary": [],
                "content": [],
                "status": "in_progress",
            }
            self.items.append(item)
            self._texts[index] = []
            self._open = index
            frames.append(
                self.event("response.output_item.added", output_index=index, item=dict(item))
            )
        assert self._open is not None
        self._texts[self._open].append(text)
        return [
            *frames,
            self.event("response.reasoning_text.delta", **self._at(self._open), delta=text),
        ]

    def _at(self, index: int) -> dict[str, Any]:
        return {"item_id": self.items[index]["id"], "output_index": index, "content_index": 0}

    def open_message(self) -> list[bytes]:
        index = len(self.items)
        item = {
            "type": "message",
            "id": f"msg_{uuid.uuid4().hex}",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self.items.append(item)
        self._texts[index] = []
        self._open = index
        return [
            self.event("response.output_item.added", output_index=index, item=dict(item)),
            self.event("response.content_part.added", **self._at(index), part=self.output_text("")),
        ]

    def open_call(self, started: CallStarted) -> list[bytes]:
        index = len(self.items)
        item = {
            "type": "function_call",
            "id": f"fc_{uuid.uuid4().hex}",
            "call_id": started.id,
            "name": started.name,
            "arguments": "",
            "status": "in_progress",
        }
        self.items.append(item)
        self._calls[started.index] = index
        self._open = index
        return [self.event("response.output_item.added", output_index=index, item=dict(item))]

    def seal_item(self, status: str) -> int | None:
        """Ends the open item, if any, as `status`; returns its output index."""
        if self._open is None:
            return None
        index, self._open = self._open, None
        item = self.items[index]
        item["status"] = status
        if item["type"] == "message":
            item["content"] = [self.output_text("".join(self._texts[index]))]
        elif item["type"] == "reasoning":
            item["content"] = [{"type": "reasoning_text", "text": "".join(self._texts[index])}]
        return index

    def close_item(self, status: str) -> list[bytes]:
        index = self.seal_item(status)
        if index is None:
            return []
        item = self.items[index]
        frames: list[bytes] = []
        if item["type"] == "message":
            text = item["content"][0]["text"]
            frames += [
                self.event("response.output_text.done", **self._at(index), text=text, logprobs=[]),
                self.event(
                    "response.content_part.done", **self._at(index), part=self.output_text(text)
                ),
            ]
        elif item["type"] == "reasoning":
            text = item["content"][0]["text"]
            frames.append(self.event("response.reasoning_text.done", **self._at(index), text=text))
        else:
            frames.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
        frames.append(self.event("response.output_item.done", output_index=index, item=item))
        return frames

    def finish(self, ended: Ended) -> tuple[list[bytes], dict[str, Any]]:
        """The frames that close the output, and the final response object (kept in the
        store unless `store` is false)."""
        status = "incomplete" if ended.stop_reason == "max_tokens" else "completed"
        frames: list[bytes] = []
        if self._splitter is not None:
            frames += self._split(*self._splitter.finish())
        frames += self.on(self.output.finish(ended))
        if all(item["type"] == "reasoning" for item in self.items):
            # An empty answer is still a message (after the thinking, if it was cut there).
            frames += self.close_item(status)
            frames += self.open_message()
        frames += self.close_item(status)
        final = self.response(status, output=self.items, ended=ended)
        if self.body.store is not False:
            content = "".join(self._item_texts("message"))
            calls = tuple(
                ToolCall(item["call_id"], item["name"], item["arguments"])
                for item in self.items
                if item["type"] == "function_call"
            )
            reasoning = "".join(self._item_texts("reasoning")) or None
            answer = ChatMessage("assistant", content, tool_calls=calls, reasoning=reasoning)
            history = (*self.turns, answer)
            self.store.put(self.id, StoredResponse(final, history))
        return frames, final

    def _item_texts(self, kind: str) -> list[str]:
        return [
            text
            for i in sorted(self._texts)
            if self.items[i]["type"] == kind
            for text in self._texts[i]
        ]

    def text_frames(self, delta: TextDelta) -> list[bytes]:
        if self._splitter is None:
            return self.on(self.output.feed(delta.text))
        return self._split(*self._splitter.feed(delta.text))

    def _split(self, reasoning: str, content: str) -> list[bytes]:
        return self.on_reasoning(reasoning) + self.on(self.output.feed(content))

    async def whole(self, stream: ChoiceStream) -> Response:
        ended = await read_to_end(stream, self.text_frames)
        return json_response(self.finish(ended)[1])

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse_data(payload, kind)

    def frames(self, stream: ChoiceStream, keepalive: float) -> AsyncIterator[bytes]:
        """response.created and .in_progress; each output item opened (the message at once
        without tools; with tools, an item when its content or call begins), its deltas,
        each closed; then response.completed (or .incomplete). A request that fails after it
        started ends with response.failed carrying the error."""
        opening = [
            self.event("response.created", response=self.response("in_progress", output=[])),
            self.event("response.in_progress", response=self.response("in_progress", output=[])),
        ]
        if self.output.parser is None and self._splitter is None:
            opening += self.open_message()  # with thinking, a reasoning item may come first
        return session_frames(stream, keepalive, opening, self.text_frames, self.end_frames)

    def end_frames(self, ended: Ended) -> list[bytes]:
        error = ended_error(ended)
        if error is not None:
            self.seal_item("incomplete")
            failed = self.response("failed", output=self.items, ended=ended, error=error)
            return [self.event("response.failed", response=failed)]
        frames, final = self.finish(ended)
        kind = "response.incomplete" if final["status"] == "incomplete" else None
        return [*frames, self.event(kind or "response.completed", response=final)]
