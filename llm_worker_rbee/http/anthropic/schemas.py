"""Anthropic's Messages API (POST /v1/messages): the request body, the message it answers,
its stream events and its error shape, as pydantic models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from llm_worker_rbee.http.schema_bases import (
    DropsUnknown,
    DropsUnknownByAlias,
    KeepsUnknown,
    StrOrList,
)
from llm_worker_rbee.http.schemas import Number

# --- The request -------------------------------------------------------------------------


class ContentBlock(KeepsUnknown):
    """A content block: `text` is read; with tools, `tool_use` (an earlier answer's call)
    and `tool_result` (its result); an assistant's `thinking` (an earlier answer's, given
    to the template as its reasoning; `signature` not checked) and `redacted_thinking`
    (dropped: its text is not there). The route refuses any other type by name."""

    type: StrictStr
    text: StrictStr | None = None
    # thinking
    thinking: StrictStr | None = None
    signature: StrictStr | None = None
    # tool_use
    id: StrictStr | None = None
    name: StrictStr | None = None
    input: dict[str, Any] | None = None
    # tool_result
    tool_use_id: StrictStr | None = None
    content: StrOrList[ContentBlock] | None = None
    is_error: StrictBool | None = None


class InputMessage(DropsUnknown):
    role: Literal["user", "assistant"]
    content: StrOrList[ContentBlock]


class SystemBlock(DropsUnknown):
    # cache_control and citations are accepted and ignored.
    type: Literal["text"]
    text: StrictStr


class AnthropicTool(DropsUnknown):
    """A client tool: `name`, `description`, `input_schema`; server tools are refused."""

    model_config = ConfigDict(title="Tool")  # the API's name; the class's tells it apart

    name: StrictStr
    description: StrictStr | None = None
    input_schema: dict[str, Any] | None = None
    type: StrictStr | None = None


class JsonOutputFormat(DropsUnknownByAlias):
    type: Literal["json_schema"]
    # `schema` would shadow a BaseModel attribute, hence the alias.
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfig(DropsUnknown):
    """`format`: JSON valid against a schema, enforced by a grammar; `effort` is given to
    the chat template as `reasoning_effort` (templates that read it, e.g. gpt-oss's)."""

    format: JsonOutputFormat | None = None
    effort: StrictStr | None = None


class ThinkingConfig(DropsUnknown):
    """`thinking`: `enabled` with `budget_tokens` (the most tokens the thinking may take;
    Anthropic's minimum of 1024 is not kept, its `< max_tokens` is), `adaptive` (no
    budget) or `disabled`; `display: "omitted"` sends the blocks without their text."""

    type: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    display: Literal["summarized", "omitted"] | None = None


# The fields MessagesBody and CountTokensBody share.
MessageList = Annotated[list[InputMessage], Field(min_length=1, max_length=4096)]
ToolList = Annotated[list[AnthropicTool], Field(max_length=128)]


class MessagesBody(KeepsUnknown):
    # Fields that are not Anthropic's are ignored; its fields this worker does not implement
    # are refused by name (anthropic_routes.REFUSED).
    model: StrictStr
    max_tokens: Annotated[StrictInt, Field(ge=1)]
    messages: MessageList
    system: StrOrList[SystemBlock] | None = None
    stop_sequences: Annotated[list[StrictStr], Field(max_length=16)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=1)] | None = None
    top_p: Annotated[Number, Field(gt=0, le=1)] | None = None
    top_k: Annotated[StrictInt, Field(ge=0)] | None = None
    stream: StrictBool | None = None
    # `user_id`; ignored.
    metadata: dict[str, Any] | None = None
    tools: ToolList | None = None
    tool_choice: dict[str, Any] | None = None
    output_config: OutputConfig | None = None
    thinking: ThinkingConfig | None = None
    # rbee extensions, as on the other routes.
    seed: StrictInt | None = None
    timeout: Annotated[Number, Field(gt=0)] | None = None


class CountTokensBody(KeepsUnknown):
    model: StrictStr
    messages: MessageList
    system: StrOrList[SystemBlock] | None = None
    tools: ToolList | None = None
    thinking: ThinkingConfig | None = None


# --- The response ------------------------------------------------------------------------


class TextBlock(BaseModel):
    type: Literal["text"]
    text: str


class ThinkingBlock(BaseModel):
    """The reply's thinking (its `<think>` block), before its text; `signature` is the
    SHA-256 of `thinking`, in hex (Anthropic's is opaque; this one only lets a client check
    that the block came whole)."""

    type: Literal["thinking"]
    thinking: str
    signature: str


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


StopReason = Literal[
    "end_turn", "max_tokens", "stop_sequence", "tool_use", "model_context_window_exceeded"
]


class MessageUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class MessageObject(BaseModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[ThinkingBlock | TextBlock | ToolUseBlock]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: MessageUsage


class TokenCount(BaseModel):
    input_tokens: int


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str
    # The worker's own `param` and `code` (docs/API.md), beside Anthropic's two fields.
    param: str | None = None
    code: str | None = None
    # Anthropic's machine-readable cause (`error_code`), where the error has one.
    details: dict[str, Any] | None = None


class AnthropicError(BaseModel):
    """Every error on /v1/messages: Anthropic's shape, as a body or an `event: error`."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class MessageDeltaBody(BaseModel):
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None


class BlockDelta(BaseModel):
    type: Literal["text_delta", "input_json_delta", "thinking_delta", "signature_delta"]
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    signature: str | None = None


StreamEventType = Literal[
    "message_start",
    "content_block_start",
    "ping",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "error",
]


class MessageStreamEvent(BaseModel):
    """One event of a Messages stream: `event: <type>` and `data:` with the same `type`."""

    type: StreamEventType
    message: MessageObject | None = None
    index: int | None = None
    content_block: ThinkingBlock | TextBlock | ToolUseBlock | None = None
    delta: BlockDelta | MessageDeltaBody | None = None
    usage: MessageUsage | None = None
    error: AnthropicErrorDetail | None = None
