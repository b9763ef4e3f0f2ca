"""OpenAI's Responses API: POST /v1/responses (whole or streamed as typed events), and the
bounded store behind `previous_response_id`, GET and DELETE /v1/responses/{id}."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from quart import Response
from quart_trio import QuartTrio

from llm_worker_rbee.actors.session import ChoiceStream
from llm_worker_rbee.http.app import deadline_for, job_id_for, log_prompt, open_session, parse_body
from llm_worker_rbee.http.chat_turns import (
    TurnOutput,
    chat_request,
    check_model,
    render,
    sampling_fields,
    tool_plan,
)
from llm_worker_rbee.http.errors import ApiError, bad_request, ended_error
from llm_worker_rbee.http.response_store import ResponseStore, StoredResponse
from llm_worker_rbee.http.responses_api_schemas import (
    FunctionTool,
    InputItem,
    InputPart,
    ResponsesBody,
    TextFormat,
)
from llm_worker_rbee.http.schemas import JsonSchemaFormat, ResponseFormat
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sse import PING, SSE_HEADERS, SessionBody, next_choice, sse_data
from llm_worker_rbee.http.translate import DEFAULTS
from llm_worker_rbee.messages.session import Ended, ErrorInfo, TextDelta
from llm_worker_rbee.prompts import ChatMessage
from llm_worker_rbee.tools import (
    ArgumentsDelta,
    CallStarted,
    ContentDelta,
    ToolCall,
    ToolChoice,
    ToolDef,
    ToolEvent,
    ToolPlan,
    new_call_id,
)

# Responses API fields this worker does not implement: 400 naming the field when given a
# value other than null, false or empty.
REFUSED: dict[str, str] = {
    "background": "background responses are not supported",
    "conversation": "conversation objects are not supported; use previous_response_id",
    "include": "include (extra output data) is not supported",
    "prompt": "prompt templates are not supported",
    "reasoning": "reasoning options are not supported: the served model does not reason",
    "top_logprobs": "logprobs are not supported on /v1/responses",
    "stream_options": "stream_options are not supported on /v1/responses",
}
# Content parts an input message may carry, as text.
TEXT_PARTS = frozenset({"input_text", "output_text"})
# Parameter names build_request's errors use -> this API's.
PARAMS = {"prompt": "input", "messages": "input", "response_format": "text.format"}


def register(app: QuartTrio, services: Services) -> None:
    store = ResponseStore()

    @app.post("/v1/responses")
    async def create_response() -> Response:
        body = await parse_body(ResponsesBody)
        model, _ = services.serving()
        _check(services, body)
        history: tuple[ChatMessage, ...] = ()
        if body.previous_response_id is not None:
            previous = store.get(body.previous_response_id)
            if previous is None:
                raise bad_request(
                    f"no response {body.previous_response_id!r} is stored here (this worker "
                    f"keeps the last {store.limit}, in memory)",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            history = previous.history
        turns = history + input_messages(body.input)
        system = () if body.instructions is None else (ChatMessage("system", body.instructions),)
        plan = tool_plan(
            model,
            function_tools(body.tools or []),
            tool_choice(body.tool_choice),
            parallel=body.parallel_tool_calls is not False,
        )
        text_format = body.text.format if body.text else None
        if plan.family is not None and text_format is not None and text_format.type != "text":
            raise bad_request(
                "text.format with tools is not supported: a reply is either JSON text or "
                'tool calls; send tool_choice "none" for JSON text',
                param="text.format",
                code="unsupported_parameter",
            )
        prompt = render(model, system + turns, param="input", tools=plan.tools)
        fields = sampling_fields(
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            min_p=body.min_p,
            seed=body.seed,
            response_format=_response_format(text_format),
        )
        job_id = job_id_for(services)
        log_prompt(services, prompt.text)
        inference = chat_request(
            model,
            prompt,
            fields,
            job_id=job_id,
            max_tokens=body.max_output_tokens,
            deadline=deadline_for(services, body.timeout),
            params=PARAMS,
            grammar=plan.grammar,
        )
        reply = ResponseReply(services, body, turns, store, plan)
        stream = await open_session(services, inference)
        if body.stream:
            frames = reply.frames(stream, services.settings.sse_keepalive)
            response = Response(SessionBody(stream, frames), headers=SSE_HEADERS)
            response.timeout = None
        else:
            response = await reply.whole(stream)
        response.headers["X-Request-Id"] = job_id
        return response

    @app.get("/v1/responses/<response_id>")
    async def get_response(response_id: str) -> Response:
        return _json(_stored(store, response_id).response)

    @app.delete("/v1/responses/<response_id>")
    async def delete_response(response_id: str) -> Response:
        _stored(store, response_id)
        store.delete(response_id)
        return _json({"id": response_id, "object": "response.deleted", "deleted": True})


def _stored(store: ResponseStore, response_id: str) -> StoredResponse:
    entry = store.get(response_id)
    if entry is None:
        raise ApiError(
            404,
            f"no response {response_id!r} is stored here (this worker keeps the last "
            f"{store.limit} responses made with store, in memory)",
            code="response_not_found",
        )
    return entry


def _check(services: Services, body: ResponsesBody) -> None:
    """Refused fields, the model's name, tools and truncation.

    Raises:
        ApiError: 400 `unsupported_parameter` naming a field this worker does not implement;
            404 `model_not_found`.
    """
    for name, value in (body.model_extra or {}).items():
        if name in REFUSED and _given(value):
            raise bad_request(REFUSED[name], param=name, code="unsupported_parameter")
    check_model(services, body.model)
    if body.truncation == "auto":
        raise bad_request(
            "truncation 'auto' is not supported: a conversation longer than the context is "
            "refused, never cut",
            param="truncation",
            code="unsupported_parameter",
        )


def _given(value: Any) -> bool:
    """A value other than null, false, 0 or empty (dicts: with a non-null entry)."""
    if isinstance(value, dict):
        return any(_given(v) for v in value.values())
    return value not in (None, False, 0, "", [])


def input_messages(value: str | list[InputItem]) -> tuple[ChatMessage, ...]:
    """`input` as chat messages: a string is one user message; a `function_call` joins the
    assistant turn before it (or makes one), a `function_call_output` is a `tool` message.

    Raises:
        ApiError: 400 naming the item (`input.3.content.1`) for a type this worker does not
            read (images, files, audio, built-in tool calls) or an item without its fields.
    """
    if isinstance(value, str):
        return (ChatMessage("user", value),)
    turns: list[ChatMessage] = []
    for i, item in enumerate(value):
        where = f"input.{i}"
        kind = item.type or "message"
        if kind == "function_call":
            call = ToolCall(
                _required(item.call_id, f"{where}.call_id"),
                _required(item.name, f"{where}.name"),
                _required(item.arguments, f"{where}.arguments"),
            )
            if turns and turns[-1].role == "assistant":
                last = turns[-1]
                turns[-1] = dataclasses.replace(last, tool_calls=(*last.tool_calls, call))
            else:
                turns.append(ChatMessage("assistant", "", tool_calls=(call,)))
        elif kind == "function_call_output":
            output = item.output
            if output is None:
                raise _missing(f"{where}.output")
            text = output if isinstance(output, str) else _text(output, f"{where}.output")
            call_id = _required(item.call_id, f"{where}.call_id")
            turns.append(ChatMessage("tool", text, tool_call_id=call_id))
        elif kind == "message":
            role = _required(item.role, f"{where}.role")
            content = item.content
            if content is None:
                raise _missing(f"{where}.content")
            text = content if isinstance(content, str) else _text(content, f"{where}.content")
            turns.append(ChatMessage(role, text))
        else:
            raise bad_request(
                f"{where}: input items of type {kind!r} are not supported; this worker reads "
                "messages, function_call and function_call_output",
                param=f"{where}.type",
                code="unsupported_input",
            )
    return tuple(turns)


T = TypeVar("T")


def _required(value: T | None, where: str) -> T:
    if value is None:
        raise _missing(where)
    return value


def _missing(where: str) -> ApiError:
    return bad_request(f"'{where}' is required", param=where, code="missing_required_parameter")


def _text(parts: list[InputPart], where: str) -> str:
    texts: list[str] = []
    for j, part in enumerate(parts):
        here = f"{where}.{j}"
        if part.type not in TEXT_PARTS:
            raise bad_request(
                f"{here}: content of type {part.type!r} is not supported; the served model "
                "reads text only (input_text, output_text)",
                param=f"{here}.type",
                code="unsupported_input",
            )
        texts.append(_required(part.text, f"{here}.text"))
    return "".join(texts)


def function_tools(tools: list[FunctionTool]) -> list[ToolDef]:
    """The function tools; built-in ones (web_search, file_search, ...) are refused.

    Raises:
        ApiError: 400 naming `tools.N.type` for a tool that is not a function.
    """
    defs: list[ToolDef] = []
    for i, tool in enumerate(tools):
        if tool.type != "function":
            raise bad_request(
                f"tools.{i}: {tool.type!r} tools are not supported; only function tools are",
                param=f"tools.{i}.type",
                code="unsupported_parameter",
            )
        defs.append(
            ToolDef(_required(tool.name, f"tools.{i}.name"), tool.description, tool.parameters)
        )
    return defs


def tool_choice(value: str | dict[str, Any] | None) -> ToolChoice | None:
    """`none`, `auto`, `required` or `{"type": "function", "name"}`; None: the default.

    Raises:
        ApiError: 400 naming `tool_choice` for anything else.
    """
    if value is None:
        return None
    if isinstance(value, str) and value in ("none", "auto", "required"):
        return ToolChoice(value)  # type: ignore[arg-type]
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("name")
        if isinstance(name, str):
            return ToolChoice("named", name)
    raise bad_request(
        'tool_choice must be "none", "auto", "required" or {"type": "function", "name"}; '
        "allowed_tools and built-in tool choices are not supported",
        param="tool_choice",
        code="unsupported_parameter",
    )


def _response_format(text_format: TextFormat | None) -> ResponseFormat | None:
    """`text.format` as chat's response_format, enforced by the same grammar."""
    if text_format is None or text_format.type == "text":
        return None
    if text_format.type == "json_object":
        return ResponseFormat(type="json_object")
    assert text_format.name is not None  # the body's validator saw to it
    schema = JsonSchemaFormat(
        name=text_format.name,
        description=text_format.description,
        schema=text_format.json_schema,
        strict=text_format.strict,
    )
    return ResponseFormat(type="json_schema", json_schema=schema)


def _json(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), content_type="application/json")


def usage(ended: Ended) -> dict[str, Any]:
    return {
        "input_tokens": ended.tokens_in,
        "input_tokens_details": {"cached_tokens": ended.cached_tokens},
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
        self._texts: dict[int, list[str]] = {}  # a message item's text, by output index
        self._calls: dict[int, int] = {}  # a call's index -> its output index
        self._open: int | None = None  # the output index of the item still being written

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
        frames = self.on(self.output.finish())
        if not self.items:  # an empty answer is still a message
            frames += self.open_message()
        frames += self.close_item(status)
        final = self.response(status, output=self.items, ended=ended)
        if self.body.store is not False:
            content = "".join(t for i in sorted(self._texts) for t in self._texts[i])
            calls = tuple(
                ToolCall(item["call_id"], item["name"], item["arguments"])
                for item in self.items
                if item["type"] == "function_call"
            )
            history = (*self.turns, ChatMessage("assistant", content, tool_calls=calls))
            self.store.put(self.id, StoredResponse(final, history))
        return frames, final

    async def whole(self, stream: ChoiceStream) -> Response:
        try:
            async for _, event in stream.events:
                if isinstance(event, TextDelta):
                    self.on(self.output.feed(event.text))
                elif isinstance(event, Ended):
                    error = ended_error(event)
                    if error is not None:
                        raise ApiError.from_info(error)
                    return _json(self.finish(event)[1])
        finally:
            stream.close()
        raise ApiError(500, "generation ended without a result", type="server_error")

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse_data(payload, kind)

    async def frames(self, stream: ChoiceStream, keepalive: float) -> AsyncIterator[bytes]:
        """response.created and .in_progress; each output item opened (the message at once
        without tools; with tools, an item when its content or call begins), its deltas,
        each closed; then response.completed (or .incomplete). A request that fails after it
        started ends with response.failed carrying the error."""
        yield self.event("response.created", response=self.response("in_progress", output=[]))
        yield self.event("response.in_progress", response=self.response("in_progress", output=[]))
        if self.output.parser is None:
            for frame in self.open_message():
                yield frame
        while True:
            item = await next_choice(stream, keepalive)
            if item is None:
                yield PING
                continue
            _, event = item
            if isinstance(event, TextDelta):
                for frame in self.on(self.output.feed(event.text)):
                    yield frame
            elif isinstance(event, Ended):
                error = ended_error(event)
                if error is not None:
                    self.seal_item("incomplete")
                    failed = self.response("failed", output=self.items, ended=event, error=error)
                    yield self.event("response.failed", response=failed)
                    return
                frames, final = self.finish(event)
                for frame in frames:
                    yield frame
                kind = "response.incomplete" if final["status"] == "incomplete" else None
                yield self.event(kind or "response.completed", response=final)
                return
