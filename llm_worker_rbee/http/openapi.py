"""GET /openapi.json: every route, request and response, from the pydantic models."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from quart_trio import QuartTrio

from llm_worker_rbee import __version__
from llm_worker_rbee.http import response_models as r
from llm_worker_rbee.http.anthropic import schemas as anthropic
from llm_worker_rbee.http.responses import schemas as resp
from llm_worker_rbee.http.schemas import (
    ChatCompletionBody,
    CompletionBody,
    InferenceBody,
    OperationBody,
)
from llm_worker_rbee.http.system.admin import ShutdownAccepted, ShutdownBody
from llm_worker_rbee.http.system.loading import LoadingEvent, Ready
from llm_worker_rbee.http.system.page_status import WorkerStatus
from llm_worker_rbee.http.system.tokens import DetokenizeBody, TokenizeBody


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    response: type[BaseModel] | None
    body: type[BaseModel] | None = None
    stream: type[BaseModel] | None = None  # the event a text/event-stream carries
    errors: tuple[int, ...] = ()
    success: int = 200
    error: type[BaseModel] = r.ErrorResponse  # the body of every error status
    media: tuple[str, ...] = ()  # a success that is not JSON: its media types (a string)
    query: tuple[tuple[str, dict[str, Any]], ...] = ()  # query parameters and their schemas


_BODY_ERRORS = (400, 404, 408, 409, 413, 503)
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get", "/health", "200 when ready, 503 while loading or draining", r.Health, errors=(503,)
    ),
    Operation("get", "/", "readiness where rbee's hive polls: as /health", r.Health, errors=(503,)),
    Operation(
        "get",
        "/v1/ready",
        "200 when ready, 503 (same body) while loading or after",
        Ready,
        errors=(503,),
    ),
    Operation(
        "get",
        "/v1/loading/progress",
        "the model's load: progress events, then ready or failed",
        None,
        stream=LoadingEvent,
    ),
    Operation("get", "/heartbeat", "the heartbeat payload sent to the hive", r.Heartbeat),
    Operation("get", "/info", "rbee's WorkerInfo, as the queen heartbeat carries it", r.WorkerInfo),
    Operation("get", "/v1/models", "the served model", r.ModelList),
    Operation(
        "get",
        "/v1/models/{model_id}",
        "the served model under its id or an alias",
        r.Model,
        errors=(404,),
    ),
    Operation("get", "/v1/slots", "slots and queue", r.Slots),
    Operation(
        "get",
        "/v1/status",
        "what the status page shows: state, model, slots, queue, KV, history, errors",
        WorkerStatus,
        errors=(400,),
        query=(("since", {"type": "string", "pattern": "^[0-9]{1,18}$"}),),
    ),
    Operation("get", "/ui", "the status page and playground (HTML)", None, media=("text/html",)),
    Operation(
        "get",
        "/ui/{name}",
        "a file of the status page (script, style, icon)",
        None,
        errors=(404,),
        media=("text/css", "text/javascript", "image/svg+xml"),
    ),
    Operation(
        "post",
        "/v1/completions",
        "OpenAI completions",
        r.Completion,
        CompletionBody,
        stream=r.CompletionChunk,
        errors=_BODY_ERRORS,
    ),
    Operation(
        "post",
        "/v1/chat/completions",
        "OpenAI chat completions",
        r.ChatCompletion,
        ChatCompletionBody,
        stream=r.ChatCompletionChunk,
        errors=_BODY_ERRORS,
    ),
    Operation(
        "post",
        "/v1/inference",
        "rbee's native SSE stream (stream or Accept: text/event-stream), else a job to read",
        r.JobPosted,
        InferenceBody,
        stream=r.InferenceEvent,
        errors=_BODY_ERRORS,
    ),
    Operation(
        "post",
        "/v1/jobs",
        "rbee's Operation (infer only): a job to read at sse_url",
        r.JobPosted,
        OperationBody,
        errors=_BODY_ERRORS,
    ),
    Operation(
        "get",
        "/v1/jobs/{job_id}/stream",
        "a job's one stream: data frames only",
        None,
        stream=r.JobEvent,
        errors=(404, 409, 410),
    ),
    Operation(
        "get",
        "/v1/inference/{job_id}/stream",
        "a job's one stream (rbee's queen): data frames only",
        None,
        stream=r.JobEvent,
        errors=(404, 409, 410),
    ),
    Operation(
        "delete",
        "/v1/jobs/{job_id}",
        "cancel a posted or running job",
        None,
        errors=(404,),
        success=204,
    ),
    Operation(
        "delete",
        "/v1/inference/{job_id}",
        "cancel a running or queued job",
        None,
        errors=(404,),
        success=204,
    ),
    Operation(
        "post", "/v1/tokenize", "text -> token ids", r.Tokens, TokenizeBody, errors=(400, 503)
    ),
    Operation(
        "post", "/v1/detokenize", "token ids -> text", r.Text, DetokenizeBody, errors=(400, 503)
    ),
    Operation(
        "post",
        "/v1/admin/shutdown",
        "drain or stop the worker (needs the API key)",
        ShutdownAccepted,
        ShutdownBody,
        errors=(400, 401, 403),
        success=202,
    ),
    Operation(
        "post",
        "/v1/responses",
        "OpenAI Responses API",
        resp.ResponseObject,
        resp.ResponsesBody,
        stream=resp.ResponseStreamEvent,
        errors=_BODY_ERRORS,
    ),
    Operation(
        "get",
        "/v1/responses/{response_id}",
        "a stored response (the last 1,000 made with store)",
        resp.ResponseObject,
        errors=(404,),
    ),
    Operation(
        "delete",
        "/v1/responses/{response_id}",
        "forget a stored response",
        resp.ResponseDeleted,
        errors=(404,),
    ),
    Operation(
        "post",
        "/v1/messages",
        "Anthropic Messages API (errors in Anthropic's shape)",
        anthropic.MessageObject,
        anthropic.MessagesBody,
        stream=anthropic.MessageStreamEvent,
        errors=_BODY_ERRORS,
        error=anthropic.AnthropicError,
    ),
    Operation(
        "post",
        "/v1/messages/count_tokens",
        "the prompt tokens a Messages request would take",
        anthropic.TokenCount,
        anthropic.CountTokensBody,
        errors=(400, 404, 413, 503),
        error=anthropic.AnthropicError,
    ),
    Operation("get", "/metrics", "Prometheus text format", None),
    Operation("get", "/openapi.json", "this document", None),
)


def document(operations: tuple[Operation, ...] = OPERATIONS) -> dict[str, Any]:
    models: set[type[BaseModel]] = {r.ErrorResponse, r.StreamError}
    for op in operations:
        models.update(m for m in (op.response, op.body, op.stream, op.error) if m is not None)
    refs, schema = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return refs[(model, "validation")]

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        content: dict[str, Any] = {}
        if op.response is not None:
            content["application/json"] = {"schema": ref(op.response)}
        if op.stream is not None:
            # One SSE event: `data` is JSON (a chunk/event, or an error), or `[DONE]`.
            data = {"oneOf": [ref(op.stream), ref(r.StreamError)]}
            event = {
                "type": "object",
                "properties": {
                    "event": {"type": "string"},
                    # JSON per `x-data-schema`, except the final `[DONE]` sentinel, which
                    # is why no contentMediaType is declared here.
                    "data": {"type": "string", "x-data-schema": data},
                },
            }
            content["text/event-stream"] = {"schema": event}
        if op.path == "/openapi.json":
            content["application/json"] = {"schema": {"type": "object"}}
        if op.path == "/metrics":
            content["text/plain"] = {"schema": {"type": "string"}}
        for media in op.media:
            content[media] = {"schema": {"type": "string"}}
        success: dict[str, Any] = {"description": op.summary}
        if content:
            success["content"] = content
        responses: dict[str, Any] = {str(op.success): success}
        for status in op.errors:
            responses[str(status)] = {
                "description": "error",
                "content": {"application/json": {"schema": ref(op.error)}},
            }
        operation: dict[str, Any] = {"summary": op.summary, "responses": responses}
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(op.body)}},
            }
        names = re.findall(r"\{(\w+)\}", op.path)
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in names
        ]
        parameters += [
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in op.query
        ]
        if parameters:
            operation["parameters"] = parameters
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "llm-worker-rbee", "version": __version__},
        "paths": paths,
        "components": {"schemas": schema.get("$defs", {})},
    }


def register(app: QuartTrio) -> None:
    doc = document()

    @app.get("/openapi.json")
    async def openapi() -> dict[str, Any]:
        return doc
