"""InferenceSession <-> ModelActor: admit and cancel sequences, per-sequence events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import trio

FinishReason = Literal["eos", "length"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Sampling settings for one sequence; the engine builds a sampler chain from them."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class TokenGenerated:
    seq_id: int
    token: int
    piece: bytes
    # Prompt tokens this sequence reused from its slot's KV cache (the same on every event
    # of a sequence, so a session that ends early on a stop string still knows it).
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class SequenceFinished:
    """The engine stopped the sequence: end-of-generation token or a token limit."""

    seq_id: int
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class SequenceFailed:
    seq_id: int
    message: str


SequenceEvent = TokenGenerated | SequenceFinished | SequenceFailed


@dataclass(frozen=True, slots=True)
class Admit:
    """Start generating for `seq_id` (a granted slot). Events go to `events`.

    `events` must be buffered for max_tokens + 2 items so the ModelActor never blocks on
    one slow reader.
    """

    seq_id: int
    job_id: str
    prompt_tokens: tuple[int, ...]
    sampling: SamplingParams
    max_tokens: int
    events: trio.MemorySendChannel[SequenceEvent] = field(compare=False)


@dataclass(frozen=True, slots=True)
class Cancel:
    """Drop `seq_id` from the next step and free its KV cells. Idempotent."""

    seq_id: int


ModelCommand = Admit | Cancel
