"""/v1/completions and /v1/chat/completions in OpenAI's shapes."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from llm_worker_rbee import __version__
from llm_worker_rbee.actors.session import SessionStream
from llm_worker_rbee.http.app import job_id_for, parse_body, start_session
from llm_worker_rbee.http.errors import ApiError, bad_request
from llm_worker_rbee.http.schemas import (
    ChatCompletionBody,
    CompletionBody,
    SamplingFields,
    refused_param,
)
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sse import DONE, SSE_HEADERS, SessionBody, sse_data
from llm_worker_rbee.http.translate import build_request
from llm_worker_rbee.messages.session import (
    Accepted,
    Ended,
    ErrorInfo,
    InferenceRequest,
    Rejected,
    SessionEvent,
    Started,
    TextDelta,
)
from llm_worker_rbee.prompts import ChatMessage, TemplateError, render_chat

FINGERPRINT = f"llm-worker-rbee-{__version__}"
# OpenAI's legacy completions default to 16 new tokens; chat defaults to what fits.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16

_ABNORMAL = {
    "cancelled": ErrorInfo(503, "unavailable", "cancelled", "the request was cancelled"),
    "timeout": ErrorInfo(408, "timeout", "request_timeout", "the request ran past its deadline"),
}


def finish_reason(ended: Ended) -> str:
    return "length" if ended.stop_reason == "max_tokens" else "stop"


def ended_error(ended: Ended) -> ErrorInfo | None:
    if ended.error is not None:
        return ended.error
    return _ABNORMAL.get(ended.stop_reason)


def usage(ended: Ended) -> dict[str, int]:
    return {
        "prompt_tokens": ended.tokens_in,
        "completion_tokens": ended.tokens_out,
        "total_tokens": ended.tokens_in + ended.tokens_out,
    }


def register(app: QuartTrio, services: Services) -> None:
    def check_common(body: SamplingFields) -> None:
        refused = refused_param(body.model_extra)
        if refused is not None:
            raise bad_request(refused[1], param=refused[0], code="unsupported_parameter")
        if body.model is not None and body.model not in services.accepted_model_ids():
            raise ApiError(
                404,
                f"the model {body.model!r} is not served here; this worker serves "
                f"{services.model_id!r}",
                param="model",
                code="model_not_found",
            )

    @app.post("/v1/completions")
    async def completions() -> Response:
        body = await parse_body(CompletionBody)
        model, _ = services.serving()
        check_common(body)
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        job_id = job_id_for()
        inference = build_request(
            model,
            body,
            prompt,
            job_id=job_id,
            add_special=True,
            max_tokens=body.max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS,
        )
        stream = await open_session(services, inference)
        reply = _Reply("cmpl", "text_completion", services.model_id, job_id, chat=False)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return reply.streaming(stream, include_usage)
        return await reply.whole(stream)

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        body = await parse_body(ChatCompletionBody)
        model, _ = services.serving()
        check_common(body)
        info = model.info
        messages = [ChatMessage(m.role, m.text()) for m in body.messages]
        try:
            prompt = render_chat(messages, info.chat_template, bos=info.bos_text, eos=info.eos_text)
        except TemplateError as exc:
            raise bad_request(str(exc), param="messages", code="chat_template_error") from None
        job_id = job_id_for()
        inference = build_request(
            model,
            body,
            prompt.text,
            job_id=job_id,
            add_special=prompt.add_special,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            prompt_param="messages",
            extra_stops=prompt.extra_stops,
        )
        stream = await open_session(services, inference)
        reply = _Reply("chatcmpl", "chat.completion", services.model_id, job_id, chat=True)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return reply.streaming(stream, include_usage)
        return await reply.whole(stream)


async def open_session(services: Services, inference: InferenceRequest) -> SessionStream:
    """Starts the session and waits for its first answer: accepted, or a 503 for a full queue."""
    stream = start_session(services, inference)
    first = await stream.events.receive()
    if isinstance(first, Rejected):
        stream.close()
        raise ApiError.from_info(first.error, headers={"Retry-After": "1"})
    if isinstance(first, Accepted):
        stream.accepted = first
    return stream


class _Reply:
    """Renders one session's events as an OpenAI completion or chat completion."""

    def __init__(self, prefix: str, obj: str, model_id: str, job_id: str, *, chat: bool) -> None:
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.object = obj
        self.model_id = model_id
        self.job_id = job_id
        self.chat = chat
        self.created = int(time.time())

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model_id,
            "system_fingerprint": FINGERPRINT,
        }

    async def whole(self, stream: SessionStream) -> Response:
        parts: list[str] = []
        ended: Ended | None = None
        try:
            async for event in stream.events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                elif isinstance(event, Ended):
                    ended = event
                    break
        finally:
            stream.close()
        if ended is None:
            raise ApiError(500, "generation ended without a result", type="server_error")
        error = ended_error(ended)
        if error is not None:
            raise ApiError.from_info(error)
        text = "".join(parts)
        body = self._envelope(self.object)
        choice: dict[str, Any] = {
            "index": 0,
            "logprobs": None,
            "finish_reason": finish_reason(ended),
        }
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
        else:
            choice["text"] = text
        body["choices"] = [choice]
        body["usage"] = usage(ended)
        response = Response(_json(body), content_type="application/json")
        response.headers["X-Request-Id"] = self.job_id
        return response

    def streaming(self, stream: SessionStream, include_usage: bool) -> Response:
        response = Response(
            SessionBody(stream, self._frames(stream, include_usage)), headers=SSE_HEADERS
        )
        response.timeout = None
        response.headers["X-Request-Id"] = self.job_id
        return response

    def _chunk(self, delta: dict[str, Any] | str, finish: str | None) -> dict[str, Any]:
        chunk = self._envelope("chat.completion.chunk" if self.chat else "text_completion")
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
        if self.chat:
            choice["delta"] = delta
        else:
            choice["text"] = delta
        chunk["choices"] = [choice]
        return chunk

    async def _frames(self, stream: SessionStream, include_usage: bool) -> AsyncIterator[bytes]:
        if self.chat:
            yield sse_data(self._chunk({"role": "assistant", "content": ""}, None))
        event: SessionEvent
        async for event in stream.events:
            if isinstance(event, TextDelta):
                delta: dict[str, Any] | str = {"content": event.text} if self.chat else event.text
                yield sse_data(self._chunk(delta, None))
            elif isinstance(event, Ended):
                error = ended_error(event)
                if error is not None:
                    yield sse_data({"error": _error_fields(error)})
                else:
                    yield sse_data(self._chunk({} if self.chat else "", finish_reason(event)))
                    if include_usage:
                        chunk = self._envelope(
                            "chat.completion.chunk" if self.chat else "text_completion"
                        )
                        chunk["choices"] = []
                        chunk["usage"] = usage(event)
                        yield sse_data(chunk)
                break
            elif isinstance(event, Accepted | Started):
                continue
        yield DONE


def _error_fields(info: ErrorInfo) -> dict[str, Any]:
    return {"message": info.message, "type": info.type, "param": info.param, "code": info.code}


def _json(body: dict[str, Any]) -> str:
    import json

    return json.dumps(body, ensure_ascii=False)
