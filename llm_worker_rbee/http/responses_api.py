"""OpenAI's Responses API: POST /v1/responses (whole or streamed as typed events), and the
bounded store behind `previous_response_id`, GET and DELETE /v1/responses/{id}."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from llm_worker_rbee.actors.session import ChoiceStream
from llm_worker_rbee.http.app import deadline_for, job_id_for, log_prompt, open_session, parse_body
from llm_worker_rbee.http.chat_turns import (
    chat_request,
    check_model,
    render,
    sampling_fields,
)
from llm_worker_rbee.http.errors import ApiError, bad_request, ended_error
from llm_worker_rbee.http.response_store import ResponseStore, StoredResponse
from llm_worker_rbee.http.responses_api_schemas import InputItem, ResponsesBody, TextFormat
from llm_worker_rbee.http.schemas import JsonSchemaFormat, ResponseFormat
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sse import PING, SSE_HEADERS, SessionBody, next_choice, sse_data
from llm_worker_rbee.http.translate import DEFAULTS
from llm_worker_rbee.messages.session import Ended, ErrorInfo, TextDelta
from llm_worker_rbee.prompts import ChatMessage

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
        prompt = render(model, system + turns, param="input")
        fields = sampling_fields(
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            min_p=body.min_p,
            seed=body.seed,
            response_format=_response_format(body.text.format if body.text else None),
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
        )
        reply = ResponseReply(services, body, turns, store)
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
    if body.tools:
        raise bad_request(
            "tools are not supported on /v1/responses yet",
            param="tools",
            code="unsupported_parameter",
        )
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
    """`input` as chat messages: a string is one user message.

    Raises:
        ApiError: 400 naming the item (`input.3.content.1`) for a type this worker does not
            read (images, files, audio, built-in tool calls) or a message without its fields.
    """
    if isinstance(value, str):
        return (ChatMessage("user", value),)
    return tuple(_message(item, f"input.{i}") for i, item in enumerate(value))


def _message(item: InputItem, where: str) -> ChatMessage:
    kind = item.type or "message"
    if kind in ("function_call", "function_call_output"):
        raise bad_request(
            f"{where}: {kind} items need tools, which /v1/responses does not support yet",
            param=where,
            code="unsupported_input",
        )
    if kind != "message":
        raise bad_request(
            f"{where}: input items of type {kind!r} are not supported; this worker reads "
            "messages only",
            param=f"{where}.type",
            code="unsupported_input",
        )
    if item.role is None:
        raise bad_request(
            f"'{where}.role' is required", param=f"{where}.role", code="missing_required_parameter"
        )
    if item.content is None:
        raise bad_request(
            f"'{where}.content' is required",
            param=f"{where}.content",
            code="missing_required_parameter",
        )
    if isinstance(item.content, str):
        return ChatMessage(item.role, item.content)
    texts: list[str] = []
    for j, part in enumerate(item.content):
        here = f"{where}.content.{j}"
        if part.type not in TEXT_PARTS:
            raise bad_request(
                f"{here}: content of type {part.type!r} is not supported; the served model "
                "reads text only (input_text, output_text)",
                param=f"{here}.type",
                code="unsupported_input",
            )
        if part.text is None:
            raise bad_request(
                f"'{here}.text' is required",
                param=f"{here}.text",
                code="missing_required_parameter",
            )
        texts.append(part.text)
    return ChatMessage(item.role, "".join(texts))


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
    ) -> None:
        self.id = f"resp_{uuid.uuid4().hex}"
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self.created_at = int(services.wall_clock())
        self.model_id = services.model_id
        self.body = body
        self.turns = turns
        self.store = store
        self._sequence = 0

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
            "tools": [],
            "truncation": "disabled",
            "usage": None if ended is None else usage(ended),
            "metadata": body.metadata or {},
            "user": body.user,
        }

    def message(self, text: str, status: str) -> dict[str, Any]:
        content = [] if status == "in_progress" else [self.output_text(text)]
        return {
            "type": "message",
            "id": self.message_id,
            "status": status,
            "role": "assistant",
            "content": content,
        }

    @staticmethod
    def output_text(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def finish(self, text: str, ended: Ended) -> dict[str, Any]:
        """The final response object; kept in the store unless `store` is false."""
        status = "incomplete" if ended.stop_reason == "max_tokens" else "completed"
        final = self.response(status, output=[self.message(text, status)], ended=ended)
        if self.body.store is not False:
            history = (*self.turns, ChatMessage("assistant", text))
            self.store.put(self.id, StoredResponse(final, history))
        return final

    async def whole(self, stream: ChoiceStream) -> Response:
        texts: list[str] = []
        try:
            async for _, event in stream.events:
                if isinstance(event, TextDelta):
                    texts.append(event.text)
                elif isinstance(event, Ended):
                    error = ended_error(event)
                    if error is not None:
                        raise ApiError.from_info(error)
                    return _json(self.finish("".join(texts), event))
        finally:
            stream.close()
        raise ApiError(500, "generation ended without a result", type="server_error")

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse_data(payload, kind)

    async def frames(self, stream: ChoiceStream, keepalive: float) -> AsyncIterator[bytes]:
        """response.created, .in_progress, the message item and its text part opened, a delta
        per text delta, then each closed, then response.completed (or .incomplete); a request
        that fails after it started ends with response.failed carrying the error."""
        yield self.event("response.created", response=self.response("in_progress", output=[]))
        yield self.event("response.in_progress", response=self.response("in_progress", output=[]))
        at = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        yield self.event(
            "response.output_item.added", output_index=0, item=self.message("", "in_progress")
        )
        yield self.event("response.content_part.added", **at, part=self.output_text(""))
        texts: list[str] = []
        while True:
            item = await next_choice(stream, keepalive)
            if item is None:
                yield PING
                continue
            _, event = item
            if isinstance(event, TextDelta):
                texts.append(event.text)
                yield self.event("response.output_text.delta", **at, delta=event.text, logprobs=[])
            elif isinstance(event, Ended):
                text = "".join(texts)
                error = ended_error(event)
                if error is not None:
                    output = [self.message(text, "incomplete")]
                    failed = self.response("failed", output=output, ended=event, error=error)
                    yield self.event("response.failed", response=failed)
                    return
                final = self.finish(text, event)
                yield self.event("response.output_text.done", **at, text=text, logprobs=[])
                yield self.event("response.content_part.done", **at, part=self.output_text(text))
                yield self.event(
                    "response.output_item.done", output_index=0, item=final["output"][0]
                )
                kind = "response.incomplete" if final["status"] == "incomplete" else None
                yield self.event(kind or "response.completed", response=final)
                return
