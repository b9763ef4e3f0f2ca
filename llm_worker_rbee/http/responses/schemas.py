"""OpenAI's Responses API (POST /v1/responses): the request body, the response object and
its stream events, as pydantic models (the body validates; the rest is what /openapi.json
publishes and the tests check)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    model_validator,
)

from llm_worker_rbee.http.schema_bases import (
    DropsUnknown,
    DropsUnknownByAlias,
    KeepsUnknown,
    StrOrList,
    str_or_list,
)
from llm_worker_rbee.http.schemas import Number

# --- The request -------------------------------------------------------------------------


class InputPart(KeepsUnknown):
    """A content part of an input message. `input_text` and `output_text` (an earlier
    answer's text) are read; the route refuses any other type by name (images, files)."""

    type: StrictStr
    text: StrictStr | None = None


class InputItem(KeepsUnknown):
    """One item of `input`: a message (`type` `message` or absent: `role` and `content`),
    an earlier answer's `reasoning` (its `content` of `reasoning_text` parts), a
    `function_call` an earlier answer made, or a `function_call_output` answering one. The
    route refuses any other type by name."""

    type: StrictStr | None = None
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: StrOrList[InputPart] | None = None
    # function_call
    call_id: StrictStr | None = None
    name: StrictStr | None = None
    arguments: StrictStr | None = None
    # function_call_output
    output: StrOrList[InputPart] | None = None


class TextFormat(DropsUnknownByAlias):
    """`text.format`: plain text, any JSON object, or JSON valid against `schema` (enforced
    by a grammar, as chat's response_format)."""

    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    description: StrictStr | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    # Accepted; the schema is always enforced.
    strict: StrictBool | None = None

    @model_validator(mode="after")
    def _json_schema_is_named(self) -> TextFormat:
        if self.type == "json_schema" and self.name is None:
            raise ValueError("type json_schema needs a name")
        return self


class TextConfig(DropsUnknown):
    format: TextFormat | None = None
    # Only OpenAI's default, `medium`: the route refuses the others, as chat's `verbosity`.
    verbosity: StrictStr | None = None


class FunctionTool(DropsUnknown):
    """A function the model may call (`type` `function`); built-in tools are refused."""

    type: StrictStr
    name: StrictStr | None = None
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class ReasoningOptions(DropsUnknown):
    """`reasoning`: its `effort` is given to the chat template as `reasoning_effort`
    (templates that read it, e.g. gpt-oss's); no summary is written (`summary` is
    accepted: the reasoning items carry the whole thinking instead)."""

    effort: StrictStr | None = None
    summary: StrictStr | None = None


class ResponsesBody(KeepsUnknown):
    # Fields that are not the Responses API's are ignored; its fields this worker does not
    # implement are refused by name (responses_api.REFUSED).
    model: StrictStr | None = None
    input: Annotated[
        Annotated[StrictStr, Tag("str")]
        | Annotated[list[InputItem], Field(min_length=1, max_length=4096), Tag("list")],
        Discriminator(str_or_list),
    ]
    instructions: StrictStr | None = None
    max_output_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(gt=0, le=1)] | None = None
    stream: StrictBool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningOptions | None = None
    # As on the chat route (vLLM's extension): the most tokens the thinking may take.
    thinking_token_budget: Annotated[StrictInt, Field(ge=0)] | None = None
    # Kept in the worker's bounded store unless false (responses_api.STORE_LIMIT).
    store: StrictBool | None = None
    previous_response_id: StrictStr | None = None
    metadata: Annotated[dict[StrictStr, StrictStr], Field(max_length=16)] | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=128)] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    truncation: Literal["disabled", "auto"] | None = None
    user: StrictStr | None = None
    # Extensions, as on the chat route: llama.cpp's top_k and min_p, a seed, rbee's timeout.
    top_k: Annotated[StrictInt, Field(ge=0)] | None = None
    min_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    seed: StrictInt | None = None
    timeout: Annotated[Number, Field(gt=0)] | None = None


# --- The response ------------------------------------------------------------------------


class OutputText(BaseModel):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]
    logprobs: list[Any] | None = None


class OutputMessage(BaseModel):
    type: Literal["message"]
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"]
    content: list[OutputText]


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"]
    text: str


class Reasoning(BaseModel):
    """A thinking model's thinking (its `<think>` block; --reasoning-format), before the
    message it led to; `summary` is always empty (nothing summarises it)."""

    type: Literal["reasoning"]
    id: str
    summary: list[Any]
    content: list[ReasoningText]
    status: Literal["in_progress", "completed", "incomplete"]


class FunctionCallItem(BaseModel):
    model_config = ConfigDict(title="FunctionCall")  # the API's name

    type: Literal["function_call"]
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]


class InputTokensDetails(BaseModel):
    cached_tokens: int
    cache_write_tokens: int


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    code: str
    message: str


class ResponseObject(BaseModel):
    """A response: `output` holds the assistant's message (and any function calls); `status`
    is `incomplete` with `incomplete_details` when it stopped at max_output_tokens."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: ResponseError | None
    incomplete_details: IncompleteDetails | None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[Reasoning | OutputMessage | FunctionCallItem]
    parallel_tool_calls: bool
    previous_response_id: str | None
    store: bool
    temperature: float
    top_p: float
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    truncation: Literal["disabled"]
    usage: ResponseUsage | None
    metadata: dict[str, str]
    user: str | None = None


StreamEventType = Literal[
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.reasoning_text.delta",
    "response.reasoning_text.done",
    "response.content_part.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
]


class ResponseStreamEvent(BaseModel):
    """One event of a Responses stream: `event: <type>`, then `data:` with the same `type`,
    a `sequence_number` counting from 0, and the fields of that type."""

    type: StreamEventType
    sequence_number: int
    response: ResponseObject | None = None
    output_index: int | None = None
    item: Reasoning | OutputMessage | FunctionCallItem | None = None
    item_id: str | None = None
    content_index: int | None = None
    part: OutputText | None = None
    delta: str | None = None
    text: str | None = None
    arguments: str | None = None
    logprobs: list[Any] | None = None


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response.deleted"]
    deleted: bool
