"""InferenceSession -> HTTP handler: what happened to one request, in order.

The first event is Accepted or Rejected; an accepted request always ends with Ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llm_worker_rbee.messages.inference import SamplingParams, Thinking, TokenLogprobs

StopReason = Literal["max_tokens", "eos", "stop_sequence", "cancelled", "timeout", "error"]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error in the one shape clients see: {"error": {message, type, param, code}}."""

    status: int
    type: str
    code: str
    message: str
    param: str | None = None
    # Seconds for a Retry-After header when the error ends a request before its response.
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    job_id: str
    prompt_tokens: tuple[int, ...]
    sampling: SamplingParams
    max_tokens: int
    stop: tuple[str, ...] = ()
    # Where the stops are not looked for (Admit.thinking).
    thinking: Thinking = "none"
    # Absolute, in trio's clock (queue time counts); None: no deadline.
    deadline: float | None = None
    # False: the client set no limit and `max_tokens` is what fits the context.
    limit_asked: bool = True


@dataclass(frozen=True, slots=True)
class Accepted:
    job_id: str
    queue_position: int | None


@dataclass(frozen=True, slots=True)
class Rejected:
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class Started:
    """The request holds a slot and its prompt is being processed."""

    job_id: str
    slot: int
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    tokens: int
    # One entry per token this delta covers, when the request asked for logprobs.
    logprobs: tuple[TokenLogprobs, ...] = ()


@dataclass(frozen=True, slots=True)
class Ended:
    stop_reason: StopReason
    tokens_in: int
    tokens_out: int
    decode_ms: int
    error: ErrorInfo | None = None
    # Of tokens_in, how many came from the slot's prompt cache (not decoded again).
    cached_tokens: int = 0
    # The stop string that ended it (stop_reason stop_sequence): Anthropic's `stop_sequence`
    # names it, and a chat template's own turn marker is told apart from the client's stops.
    stop: str | None = None


SessionEvent = Accepted | Rejected | Started | TextDelta | Ended
