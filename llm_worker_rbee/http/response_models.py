"""Response bodies, as pydantic models: the schema /openapi.json publishes and tests check."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


class CompletionLogprobs(BaseModel):
    """Per generated token: its text, its logprob, the likeliest tokens (and it), and where
    it starts in the choice's text (characters)."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(title="FunctionCall")  # the API's name

    name: str
    # A JSON text.
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: ToolCallFunction


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    # null when the message only makes tool calls.
    content: str | None
    refusal: str | None = None
    # A thinking model's `<think>` block (docs/API.md, "Thinking"); absent without one.
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    """Per generated token: the model's raw log-probability, and `top_logprobs`
    alternatives."""

    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """A call's first delta has its `id`, `type` and `function.name` (arguments ""); the
    next ones only `index` and fragments of `function.arguments`."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    # The thinking, streamed before the answer's `content` (docs/API.md, "Thinking").
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChatLogprobs | None
    finish_reason: Literal["stop", "length", "tool_calls"] | None


class ChatCompletionChunk(BaseModel):
    """One `data:` line of a chat stream (text/event-stream), ended by `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChunk(Completion):
    """One `data:` line of a completions stream, ended by `data: [DONE]` (OpenAI gives
    chunks the same shape and `object` as a whole completion)."""


class StreamError(BaseModel):
    """An error sent inside a stream, in the one error shape."""

    error: ErrorDetail
    type: Literal["error"] | None = None


class Model(BaseModel):
    """One entry in OpenAI's fields and Anthropic's, so both clients read it."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    type: Literal["model"]
    display_name: str
    # RFC 3339, UTC: the time `created` says.
    created_at: str
    lifecycle: Literal["active"]
    meta: dict[str, Any] | None = None


class ModelList(BaseModel):
    """OpenAI's list, and Anthropic's page (`has_more`, `first_id`, `last_id`)."""

    object: Literal["list"]
    data: list[Model]
    has_more: bool
    first_id: str | None
    last_id: str | None


class Health(BaseModel):
    status: str
    state: str


class Slot(BaseModel):
    id: int
    busy: bool
    job_id: str | None


class Slots(BaseModel):
    slots: list[Slot]
    queue: list[str]


class Tokens(BaseModel):
    tokens: list[int]
    count: int
    pieces: list[str] | None = None


class Text(BaseModel):
    content: str


class InferenceEvent(BaseModel):
    """One rbee SSE event (`event:` started | token | error | end), ended by `data: [DONE]`."""

    type: Literal["started", "token", "error", "end"]
    job_id: str | None = None
    queue_position: int | None = None
    t: str | None = None
    i: int | None = None
    error: ErrorDetail | None = None
    stop_reason: (
        Literal["max_tokens", "eos", "stop_sequence", "cancelled", "timeout", "error"] | None
    ) = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    decode_ms: int | None = None


class JobPosted(BaseModel):
    """A job admitted for rbee's two-call API: read it once at `sse_url`."""

    job_id: str
    sse_url: str


class JobEvent(BaseModel):
    """One `data:` frame of a job's stream (rbee's InferenceEvent), ended by `[DONE]`,
    `[CANCELLED]` or `[ERROR] <message>`; there are no `event:` lines."""

    type: Literal["started", "token", "error", "end"]
    job_id: str | None = None
    model: str | None = None
    started_at: str | None = None  # Unix seconds, as a string
    t: str | None = None
    i: int | None = None
    code: str | None = None
    message: str | None = None
    tokens_out: int | None = None
    decode_time_ms: int | None = None
    stop_reason: Literal["MAX_TOKENS", "EOS", "STOP_SEQUENCE", "CANCELLED", "ERROR"] | None = None


class Heartbeat(BaseModel):
    worker_id: str
    state: str
    slots_total: int
    slots_busy: int
    queue_depth: int
    model_config = {"extra": "allow"}


class WorkerInfo(BaseModel):
    """rbee's worker-contract `WorkerInfo` (GET /info; the queen heartbeat's `worker`)."""

    id: str
    model_id: str
    device: str
    port: int = Field(ge=0, le=65535)
    status: Literal["starting", "ready", "busy", "stopping", "stopped"]
    implementation: str
    version: str
