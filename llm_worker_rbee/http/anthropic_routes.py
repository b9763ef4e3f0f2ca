"""Anthropic's Messages API: POST /v1/messages (whole or streamed as Anthropic's events) and
POST /v1/messages/count_tokens, with every error on these routes in Anthropic's shape."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from llm_worker_rbee.actors.model import ModelHandle
from llm_worker_rbee.actors.session import ChoiceStream
from llm_worker_rbee.http.anthropic_schemas import (
    ContentBlock,
    CountTokensBody,
    InputMessage,
    MessagesBody,
    SystemBlock,
    Tool,
)
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
from llm_worker_rbee.http.schemas import JsonSchemaFormat, ResponseFormat
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sse import SSE_HEADERS, SessionBody, next_choice, sse_data
from llm_worker_rbee.messages.session import Ended, ErrorInfo, InferenceRequest, TextDelta
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

PATH = "/v1/messages"
# Messages API fields this worker does not implement: 400 naming the field.
REFUSED: dict[str, str] = {
    "thinking": "thinking is not supported: the served model does not reason",
    "mcp_servers": "MCP servers are not supported",
    "container": "containers (code execution) are not supported",
}
PARAMS = {
    "prompt": "messages",
    "messages": "messages",
    "stop": "stop_sequences",
    "response_format": "output_config.format",
}
# Anthropic's error type for each status; any other status below 500 is
# invalid_request_error, and from 500 api_error.
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


def register(app: QuartTrio, services: Services) -> None:
    @app.post(PATH)
    async def create_message() -> Response:
        body = await parse_body(MessagesBody)
        model, _ = services.serving()
        _check(services, body)
        messages = conversation(body.system, body.messages)
        plan = _plan(model, body.tools, body.tool_choice)
        if plan.family is not None and _response_format(body) is not None:
            raise bad_request(
                "output_config.format with tools is not supported: a reply is either JSON "
                'text or tool calls; send tool_choice {"type": "none"} for JSON text',
                param="output_config.format",
                code="unsupported_parameter",
            )
        prompt = render(model, messages, param="messages", tools=plan.tools)
        fields = sampling_fields(
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            seed=body.seed,
            stop=body.stop_sequences or (),
            response_format=_response_format(body),
        )
        job_id = job_id_for(services)
        log_prompt(services, prompt.text)
        inference = chat_request(
            model,
            prompt,
            fields,
            job_id=job_id,
            max_tokens=body.max_tokens,
            deadline=deadline_for(services, body.timeout),
            params=PARAMS,
            grammar=plan.grammar,
        )
        reply = MessageReply(services, body, inference, plan)
        stream = await open_session(services, inference)
        if body.stream:
            frames = reply.frames(stream, services.settings.sse_keepalive)
            response = Response(SessionBody(stream, frames), headers=SSE_HEADERS)
            response.timeout = None
        else:
            response = await reply.whole(stream)
        response.headers["X-Request-Id"] = job_id
        return response

    @app.post(f"{PATH}/count_tokens")
    async def count_tokens() -> Response:
        body = await parse_body(CountTokensBody)
        model, _ = services.serving()
        check_model(services, body.model)
        plan = _plan(model, body.tools, None)
        messages = conversation(body.system, body.messages)
        prompt = render(model, messages, param="messages", tools=plan.tools)
        tokens = model.tokenize(prompt.text, add_special=prompt.add_special)
        return _json({"input_tokens": len(tokens)})

    @app.after_request
    async def anthropic_errors(response: Response) -> Response:
        """Errors on these routes, whoever raised them (validation, auth, 404, 413, 503),
        leave in Anthropic's shape, so its SDK reads their message."""
        if not (request.path == PATH or request.path.startswith(f"{PATH}/")):
            return response
        if response.status_code < 400 or response.mimetype != "application/json":
            return response
        data = json.loads(await response.get_data())
        if isinstance(data, dict) and isinstance(data.get("error"), dict) and "type" not in data:
            response.set_data(json.dumps(anthropic_error(response.status_code, data["error"])))
        return response


def anthropic_error(status: int, fields: dict[str, Any]) -> dict[str, Any]:
    """The worker's error fields in Anthropic's shape, keeping `param` and `code`."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {
        "type": "error",
        "error": {
            "type": kind,
            "message": fields.get("message", ""),
            "param": fields.get("param"),
            "code": fields.get("code"),
        },
    }


def _check(services: Services, body: MessagesBody) -> None:
    """Refused fields, the model's name and tools.

    Raises:
        ApiError: 400 `unsupported_parameter` naming a field this worker does not implement;
            404 `model_not_found`.
    """
    for name, value in (body.model_extra or {}).items():
        if name not in REFUSED or value in (None, False, {}, []):
            continue
        if name == "thinking" and isinstance(value, dict) and value.get("type") == "disabled":
            continue
        raise bad_request(REFUSED[name], param=name, code="unsupported_parameter")
    check_model(services, body.model)
    if body.output_config is not None and body.output_config.effort is not None:
        raise bad_request(
            "effort is not supported: the served model does not reason",
            param="output_config.effort",
            code="unsupported_parameter",
        )


def _response_format(body: MessagesBody) -> ResponseFormat | None:
    """`output_config.format` as chat's response_format, enforced by the same grammar."""
    if body.output_config is None or body.output_config.format is None:
        return None
    schema = JsonSchemaFormat(name="output", schema=body.output_config.format.json_schema)
    return ResponseFormat(type="json_schema", json_schema=schema)


def _plan(model: ModelHandle, tools: list[Tool] | None, choice: dict[str, Any] | None) -> ToolPlan:
    """The tool plan for Anthropic's `tools` and `tool_choice`.

    Raises:
        ApiError: 400 naming `tools.N.type` for a server tool, `tool_choice` for a choice
            that is not auto, any, tool or none.
    """
    defs: list[ToolDef] = []
    for i, tool in enumerate(tools or []):
        if tool.type not in (None, "custom"):
            raise bad_request(
                f"tools.{i}: {tool.type!r} tools are not supported; only client tools "
                "(name, description, input_schema) are",
                param=f"tools.{i}.type",
                code="unsupported_parameter",
            )
        defs.append(ToolDef(tool.name, tool.description, tool.input_schema))
    parallel = not (choice or {}).get("disable_parallel_tool_use", False)
    return tool_plan(model, defs, _tool_choice(choice), parallel=parallel)


def _tool_choice(choice: dict[str, Any] | None) -> ToolChoice | None:
    if choice is None:
        return None
    kind = choice.get("type")
    modes = {"auto": "auto", "any": "required", "none": "none"}
    if isinstance(kind, str) and kind in modes:
        return ToolChoice(modes[kind])  # type: ignore[arg-type]
    if kind == "tool" and isinstance(choice.get("name"), str):
        return ToolChoice("named", choice["name"])
    raise bad_request(
        'tool_choice must be {"type": "auto" | "any" | "none"} or {"type": "tool", "name"}',
        param="tool_choice",
        code="unsupported_parameter",
    )


def conversation(
    system: str | list[SystemBlock] | None, messages: list[InputMessage]
) -> tuple[ChatMessage, ...]:
    """`system` and `messages` as chat messages: text blocks joined, an assistant's
    `tool_use` blocks as its calls, a user's `tool_result` blocks as `tool` messages.

    Raises:
        ApiError: 400 naming the block (`messages.2.content.0`) for a type this worker does
            not read (images, documents, thinking) or a block without its fields.
    """
    turns: list[ChatMessage] = []
    if system is not None:
        text = system if isinstance(system, str) else "".join(b.text for b in system)
        turns.append(ChatMessage("system", text))
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, str):
            turns.append(ChatMessage(message.role, content))
            continue
        texts: list[str] = []
        calls: list[ToolCall] = []
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            if block.type == "tool_result" and message.role == "user":
                if texts:  # text before a result is its own user turn
                    turns.append(ChatMessage("user", "".join(texts)))
                    texts = []
                call_id = _field(block.tool_use_id, f"{where}.tool_use_id")
                turns.append(ChatMessage("tool", _result_text(block, where), tool_call_id=call_id))
            elif block.type == "tool_use" and message.role == "assistant":
                arguments = json.dumps(block.input or {}, ensure_ascii=False)
                calls.append(
                    ToolCall(
                        _field(block.id, f"{where}.id"),
                        _field(block.name, f"{where}.name"),
                        arguments,
                    )
                )
            else:
                texts.append(_text(block, where))
        if texts or calls:
            turns.append(ChatMessage(message.role, "".join(texts), tool_calls=tuple(calls)))
    return tuple(turns)


def _field(value: str | None, where: str) -> str:
    if value is None:
        raise bad_request(f"'{where}' is required", param=where, code="missing_required_parameter")
    return value


def _result_text(block: ContentBlock, where: str) -> str:
    content = block.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(_text(inner, f"{where}.content.{k}") for k, inner in enumerate(content))


def _text(block: ContentBlock, where: str) -> str:
    if block.type != "text":
        raise bad_request(
            f"{where}: content blocks of type {block.type!r} are not supported here; the "
            "served model reads text, and tool_use (assistant) and tool_result (user) blocks",
            param=f"{where}.type",
            code="unsupported_input",
        )
    return _field(block.text, f"{where}.text")


def _json(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), content_type="application/json")


class MessageReply:
    """One request's message, whole or as Anthropic's stream of events."""

    def __init__(
        self, services: Services, body: MessagesBody, inference: InferenceRequest, plan: ToolPlan
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
        index = len(self.blocks)
        self.blocks.append({"type": "text", "text": ""})
        self._texts[index] = []
        self._open = index
        return [_block_start(index, {"type": "text", "text": ""})]

    def close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        index, self._open = self._open, None
        block = self.blocks[index]
        if block["type"] == "text":
            block["text"] = "".join(self._texts[index])
        else:
            block["input"] = _arguments_object("".join(self._arguments[index]))
        return [sse_data({"type": "content_block_stop", "index": index}, "content_block_stop")]

    def finish(self) -> list[bytes]:
        frames = self.on(self.output.finish())
        if not self.blocks:  # an empty answer is still a text block
            frames += self.open_text()
        return frames + self.close_block()

    async def whole(self, stream: ChoiceStream) -> Response:
        try:
            async for _, event in stream.events:
                if isinstance(event, TextDelta):
                    self.on(self.output.feed(event.text))
                elif isinstance(event, Ended):
                    error = ended_error(event)
                    if error is not None:
                        raise ApiError.from_info(error)
                    self.finish()
                    return _json(self.message(self.blocks, event))
        finally:
            stream.close()
        raise ApiError(500, "generation ended without a result", type="server_error")

    async def frames(self, stream: ChoiceStream, keepalive: float) -> AsyncIterator[bytes]:
        """message_start, a ping, each content block's start, deltas (`text_delta`,
        `input_json_delta`) and stop (the text block at once without tools; with tools, a
        block when its text or call begins), message_delta (stop_reason and usage),
        message_stop; a request that fails after it started ends with an `error` event.
        Silence gets `ping` events."""
        start = {"type": "message_start", "message": self.message([], None)}
        yield sse_data(start, "message_start")
        if self.output.parser is None:
            for frame in self.open_text():
                yield frame
        yield _PING
        while True:
            item = await next_choice(stream, keepalive)
            if item is None:
                yield _PING
                continue
            _, event = item
            if isinstance(event, TextDelta):
                for frame in self.on(self.output.feed(event.text)):
                    yield frame
            elif isinstance(event, Ended):
                error = ended_error(event)
                if error is not None:
                    yield _error_event(error)
                    return
                for frame in self.finish():
                    yield frame
                reason, sequence = self.stop_reason(event)
                yield sse_data(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": reason, "stop_sequence": sequence},
                        "usage": self.usage(event),
                    },
                    "message_delta",
                )
                yield sse_data({"type": "message_stop"}, "message_stop")
                return


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
