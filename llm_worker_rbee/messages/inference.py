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
    # GBNF (root rule `root`) the output must match; end-of-generation is only sampled once
    # the grammar is complete.
    grammar: str | None = None
    # End-of-generation tokens cannot be sampled before this many tokens were generated.
    min_tokens: int = 0
    # None: no logprobs; k: the sampled token's logprob and the k most likely alternatives.
    logprobs: int | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A token and its log-probability under the model's raw distribution (the logits
    before logit bias, penalties, temperature or truncation)."""

    token: int
    piece: bytes
    logprob: float


@dataclass(frozen=True, slots=True)
class TokenLogprobs:
    """For one generated token: its own logprob and the most likely alternatives."""

    chosen: TokenLogprob
    top: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenGenerated:
    seq_id: int
    token: int
    piece: bytes
    # Prompt tokens this sequence reused from its slot's KV cache (the same on every event
    # of a sequence, so a session that ends early on a stop string still knows it).
    cached_tokens: int = 0
    # Only when the request asked for logprobs.
    logprobs: TokenLogprobs | None = None


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
    # The step failed for memory (EngineOutOfMemory): 503 resource_exhausted, not a 500.
    out_of_memory: bool = False


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
