"""Anthropic's Messages API: POST /v1/messages (whole or streamed as Anthropic's events) and
POST /v1/messages/count_tokens, with every error on these routes in Anthropic's shape."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from llm_worker_rbee.actors.session import ChoiceStream
from llm_worker_rbee.http.anthropic_schemas import (
    ContentBlock,
    CountTokensBody,
    InputMessage,
    MessagesBody,
    SystemBlock,
)
from llm_worker_rbee.http.app import deadline_for, job_id_for, log_prompt, open_session, parse_body
from llm_worker_rbee.http.chat_turns import chat_request, check_model, render, sampling_fields
from llm_worker_rbee.http.errors import ApiError, bad_request, ended_error
from llm_worker_rbee.http.schemas import JsonSchemaFormat, ResponseFormat
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sse import SSE_HEADERS, SessionBody, next_choice, sse_data
from llm_worker_rbee.messages.session import Ended, ErrorInfo, InferenceRequest, TextDelta
from llm_worker_rbee.prompts import ChatMessage

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
        prompt = render(model, messages, param="messages")
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
        )
        reply = MessageReply(services, body, inference)
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
        if body.tools:
            raise _no_tools()
        prompt = render(model, conversation(body.system, body.messages), param="messages")
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
    if body.tools:
        raise _no_tools()
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


def _no_tools() -> ApiError:
    return bad_request(
        "tools are not supported on /v1/messages yet", param="tools", code="unsupported_parameter"
    )


def conversation(
    system: str | list[SystemBlock] | None, messages: list[InputMessage]
) -> tuple[ChatMessage, ...]:
    """`system` and `messages` as chat messages (text blocks joined).

    Raises:
        ApiError: 400 naming the block (`messages.2.content.0`) for a type this worker does
            not read (images, documents, thinking) or a text block without its text.
    """
    turns: list[ChatMessage] = []
    if system is not None:
        text = system if isinstance(system, str) else "".join(b.text for b in system)
        turns.append(ChatMessage("system", text))
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, str):
            turns.append(ChatMessage(message.role, content))
        else:
            text = "".join(
                _text(block, f"messages.{i}.content.{j}") for j, block in enumerate(content)
            )
            turns.append(ChatMessage(message.role, text))
    return tuple(turns)


def _text(block: ContentBlock, where: str) -> str:
    if block.type in ("tool_use", "tool_result"):
        raise bad_request(
            f"{where}: {block.type} blocks need tools, which /v1/messages does not support yet",
            param=f"{where}.type",
            code="unsupported_input",
        )
    if block.type != "text":
        raise bad_request(
            f"{where}: content blocks of type {block.type!r} are not supported; the served "
            "model reads text only",
            param=f"{where}.type",
            code="unsupported_input",
        )
    if block.text is None:
        raise bad_request(
            f"'{where}.text' is required", param=f"{where}.text", code="missing_required_parameter"
        )
    return block.text


def _json(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), content_type="application/json")


class MessageReply:
    """One request's message, whole or as Anthropic's stream of events."""

    def __init__(self, services: Services, body: MessagesBody, inference: InferenceRequest) -> None:
        self.id = f"msg_{uuid.uuid4().hex}"
        self.model_id = services.model_id
        self.stops = frozenset(body.stop_sequences or ())
        self.input_tokens = len(inference.prompt_tokens)
        # Below the client's max_tokens when the slot's context had less room left.
        self.clamped = inference.max_tokens < body.max_tokens

    def stop_reason(self, ended: Ended) -> tuple[str, str | None]:
        """(stop_reason, stop_sequence): a stop string the client gave is `stop_sequence`;
        the chat template's own end of turn, like an end-of-generation token, `end_turn`;
        the end of the slot's context before max_tokens, `model_context_window_exceeded`."""
        if ended.stop_reason == "max_tokens":
            return ("model_context_window_exceeded" if self.clamped else "max_tokens"), None
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
                    return _json(self.message([{"type": "text", "text": "".join(texts)}], event))
        finally:
            stream.close()
        raise ApiError(500, "generation ended without a result", type="server_error")

    async def frames(self, stream: ChoiceStream, keepalive: float) -> AsyncIterator[bytes]:
        """message_start, the text block's start, a ping, a text_delta per text delta, the
        block's stop, message_delta (stop_reason and usage), message_stop; a request that
        fails after it started ends with an `error` event. Silence gets `ping` events."""
        yield sse_data(
            {"type": "message_start", "message": self.message([], None)}, "message_start"
        )
        yield sse_data(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        )
        yield _PING
        while True:
            item = await next_choice(stream, keepalive)
            if item is None:
                yield _PING
                continue
            _, event = item
            if isinstance(event, TextDelta):
                delta = {"type": "text_delta", "text": event.text}
                yield sse_data(
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    "content_block_delta",
                )
            elif isinstance(event, Ended):
                error = ended_error(event)
                if error is not None:
                    yield _error_event(error)
                    return
                yield sse_data({"type": "content_block_stop", "index": 0}, "content_block_stop")
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


_PING = sse_data({"type": "ping"}, "ping")


def _error_event(error: ErrorInfo) -> bytes:
    fields = {"message": error.message, "param": error.param, "code": error.code}
    return sse_data(anthropic_error(error.status, fields), "error")
