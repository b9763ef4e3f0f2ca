"""Request bodies, validated by pydantic, following OpenAI's schema where it applies."""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from llm_worker_rbee.engine.ngram import MAX_DRAFT
from llm_worker_rbee.http.schema_bases import DropsUnknown, DropsUnknownByAlias, KeepsUnknown

# StrictFloat takes ints too (1 == 1.0) but never bools or numeric strings; unlike a union,
# it carries its range into the JSON schema that /openapi.json publishes.
Number = StrictFloat
JOB_ID_PATTERN = r"^[A-Za-z0-9._:@+=-]{1,128}$"
MAX_STOPS = 4
# OpenAI's names of content parts that are not text, as a refusal names them.
PART_KINDS = {
    "image_url": "image",
    "input_image": "image",
    "image": "image",
    "input_audio": "audio",
    "audio": "audio",
    "file": "file",
    "input_file": "file",
    "refusal": "refusal",
}


class StreamOptions(DropsUnknown):
    include_usage: StrictBool = False


class JsonSchemaFormat(DropsUnknownByAlias):
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: StrictStr | None = None
    # Absent: any JSON value. `schema` would shadow a BaseModel attribute, hence the alias.
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    # Accepted; the schema is always enforced.
    strict: StrictBool | None = None


class ResponseFormat(DropsUnknownByAlias):
    """OpenAI's response_format; json_object and json_schema are enforced by a grammar."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    # llama.cpp's extension: `{"type": "json_object", "schema": {...}}`.
    object_schema: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _schema_for_json_schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object")
        return self


class SamplingFields(KeepsUnknown):
    # Fields that are not OpenAI's are ignored; OpenAI fields we do not implement are refused
    # explicitly (see REFUSED) rather than silently dropped.

    model: StrictStr | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(gt=0, le=1)] | None = None
    top_k: Annotated[StrictInt, Field(ge=0)] | None = None
    min_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    repeat_penalty: Annotated[Number, Field(gt=0, le=10)] | None = None
    presence_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    seed: StrictInt | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=MAX_STOPS)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=128)] | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    logit_bias: (
        Annotated[
            dict[StrictStr, Annotated[Number, Field(ge=-100, le=100)]], Field(max_length=1024)
        ]
        | None
    ) = None
    ignore_eos: StrictBool | None = None
    # vLLM extension: no end-of-generation before this many tokens.
    min_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    response_format: ResponseFormat | None = None
    user: StrictStr | None = None
    # rbee extension: seconds this request may take, time in the queue included.
    timeout: Annotated[Number, Field(gt=0)] | None = None
    # llama-server's extensions: a GBNF grammar (root rule `root`), or a JSON schema the
    # output must match; either one, or response_format, constrains the output.
    grammar: StrictStr | None = None
    json_schema: dict[str, Any] | None = None
    # llama-server's: the longest n-gram draft verified per step for this request (0: none).
    speculative_n_max: Annotated[StrictInt, Field(ge=0, le=MAX_DRAFT)] | None = Field(
        default=None, alias="speculative.n_max"
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_count(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings are allowed, got {len(value)}")
        return value


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: StrictStr


class FunctionCall(DropsUnknown):
    name: StrictStr
    # A JSON text, as OpenAI sends it.
    arguments: StrictStr


class MessageToolCall(DropsUnknown):
    """A call an assistant message made earlier in the conversation."""

    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(DropsUnknown):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # null (or absent) only for an assistant message (one that made tool calls).
    content: StrictStr | list[TextPart] | None
    name: StrictStr | None = None
    tool_calls: Annotated[list[MessageToolCall], Field(max_length=128)] | None = None
    # Which call a `tool` message answers.
    tool_call_id: StrictStr | None = None
    # An assistant turn's thinking, as this worker answered it: given to the template
    # (Qwen3's renders it for the turns of a tool-calling loop).
    reasoning_content: StrictStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _assistant_content_may_be_absent(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("role") == "assistant" and "content" not in data:
            return {**data, "content": None}
        return data

    @model_validator(mode="after")
    def _fields_for_role(self) -> Message:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return self

    @field_validator("role", mode="before")
    @classmethod
    def _known_role(cls, value: Any) -> Any:
        roles = get_args(cls.model_fields["role"].annotation)
        if isinstance(value, str) and value not in roles:
            raise ValueError(
                f"the role {value!r} is not supported; a message's role is one of "
                + ", ".join(roles)
            )
        return value

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: Any) -> Any:
        for part in value if isinstance(value, list) else ():
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind != "text":
                name = PART_KINDS.get(kind, repr(kind))
                raise ValueError(
                    f"{name} content parts are not supported by this worker (text only)"
                )
        return value

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDef(DropsUnknown):
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    description: StrictStr | None = None
    # A JSON schema of the arguments object; absent: no arguments.
    parameters: dict[str, Any] | None = None
    # Accepted; a call forced by tool_choice always follows the schema.
    strict: StrictBool | None = None


class Tool(DropsUnknown):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(DropsUnknown):
    name: StrictStr


class NamedToolChoice(DropsUnknown):
    """`{"type": "function", "function": {"name": ...}}`: exactly one call of that function."""

    type: Literal["function"]
    function: NamedFunction


class ChatCompletionBody(SamplingFields):
    messages: Annotated[list[Message], Field(min_length=1, max_length=4096)]
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    logprobs: StrictBool | None = None
    # Alternatives per token; needs `logprobs: true`.
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    # Tool calls through the model's chat template (docs/API.md, "Tool calls").
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    # llama-server's and vLLM's extension: more variables for the chat template, e.g.
    # `{"enable_thinking": false}` for Qwen3 (docs/API.md, "Thinking").
    chat_template_kwargs: Annotated[dict[StrictStr, Any], Field(max_length=64)] | None = None
    # Given to the chat template as `reasoning_effort` (gpt-oss's templates read it; others
    # ignore it), unless chat_template_kwargs sets that variable itself.
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    # vLLM's extension: the most tokens a reply may think (inside its `<think>` block) before
    # the worker closes the block and the answer follows (docs/API.md, "Thinking").
    thinking_token_budget: Annotated[StrictInt, Field(ge=0)] | None = None
    # OpenAI fields that change nothing in the answer, accepted and ignored (clients send
    # them as settings): `store` and `metadata` (OpenAI keeps the completion for its
    # dashboard; this worker keeps none), `service_tier` (which of OpenAI's queues),
    # `prompt_cache_key` (OpenAI's cache routing; this worker's cache matches prefixes) and
    # `safety_identifier` (a user's id, like `user`).
    store: StrictBool | None = None
    metadata: Annotated[dict[StrictStr, StrictStr], Field(max_length=16)] | None = None
    service_tier: StrictStr | None = None
    prompt_cache_key: StrictStr | None = None
    safety_identifier: StrictStr | None = None


TokenIds = Annotated[list[StrictInt], Field(min_length=1)]


class CompletionBody(SamplingFields):
    # OpenAI's four forms: a string, strings, token ids, or lists of token ids. A list of
    # prompts gets one choice per prompt (times n); choices beyond the slots wait their turn.
    prompt: (
        StrictStr
        | Annotated[list[StrictStr], Field(min_length=1, max_length=128)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=128)]
    )
    echo: StrictBool | None = None
    # The sampled token's logprob and this many alternatives per token.
    logprobs: Annotated[StrictInt, Field(ge=0, le=5)] | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_form(cls, value: Any) -> Any:
        if prompt_form(value) is None:
            raise ValueError(
                "the prompt must be a string, a list of strings, a list of token ids or a "
                "list of lists of token ids"
            )
        return value

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids (OpenAI's token-array forms)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if prompt_form(self.prompt) == "tokens":
            return [cast(list[int], self.prompt)]
        return cast(list[str | list[int]], self.prompt)


def prompt_form(value: Any) -> Literal["text", "texts", "tokens", "token lists"] | None:
    """Which of OpenAI's four prompt forms `value` is (None: none of them). An empty list is
    given a form so that its length, not its shape, is what the error names."""
    if isinstance(value, str):
        return "text"
    if not isinstance(value, list):
        return None
    if all(isinstance(item, str) for item in value):
        return "texts"
    if all(_is_token(item) for item in value):
        return "tokens"
    if all(isinstance(item, list) and all(map(_is_token, item)) for item in value):
        return "token lists"
    return None


def _is_token(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


class InferenceBody(SamplingFields):
    """rbee's native request: a raw prompt, streamed back as rbee SSE events."""

    # A job id travels in headers and URL paths: a safe alphabet only.
    job_id: Annotated[StrictStr, Field(pattern=JOB_ID_PATTERN)] | None = None
    prompt: StrictStr


class OperationBody(KeepsUnknown):
    """rbee's `Operation` (`POST /v1/jobs`), tagged by `operation`; a worker runs only
    `infer`, whose fields (those of InferenceBody; `hive_id`, `device`, `worker_id` and any
    other are ignored) are validated once the tag is known."""

    operation: StrictStr


# OpenAI parameters this worker does not implement: refused with 400 naming the parameter.
REFUSED: dict[str, str] = {
    "tools": "tool calling is not supported",
    "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "parallel_tool_calls": "tool calling is not supported",
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "suffix": "suffix (insertion) is not supported",
    "best_of": "best_of is not supported",
    "web_search_options": "web search is not supported",
    # A model that writes longer or shorter on request would answer otherwise.
    "verbosity": "verbosity is not supported: the model's answers are as long as it writes them",
}
# Values of a refused parameter that ask for what the worker does anyway: accepted.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "best_of": (1,),
    "verbosity": ("medium",),  # OpenAI's default
}


def refused_param(extra: dict[str, Any] | None) -> tuple[str, str] | None:
    """The first refused OpenAI parameter present with a non-default value, if any."""
    for name, value in (extra or {}).items():
        if name in REFUSED and value not in (None, False, [], {}):
            if value in NEUTRAL.get(name, ()):
                continue
            return name, REFUSED[name]
    return None
