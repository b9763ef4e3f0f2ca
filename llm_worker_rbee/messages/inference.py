"""InferenceSession <-> ModelActor: admit and cancel sequences, each sequence's ready text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import trio

# eos: an end-of-generation token; length: a token limit; stop: a stop string.
FinishReason = Literal["eos", "length", "stop"]


@dataclass(frozen=True, slots=True)
class ThinkingRule:
    """What the engine does about a reply's `<think>` block (reasoning.py): its grammar
    starts after the block's end, and a budget closes a block that runs too long."""

    # The prompt opened the block (the reply starts inside it), or the model may open it.
    inside: bool
    # Tokens of thinking, after which the engine writes the end marker itself; None: any.
    budget: int | None = None
    # The grammar applies from `</think>` on (lazy): the thinking itself is free text.
    grammar_after: bool = False


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
    # The longest n-gram draft a step may verify for it (fast mode, --speculation ngram);
    # None: the worker's own; 0: no speculation.
    draft_max: int | None = None
    # A thinking reply's grammar start and budget; None: no thinking rule.
    thinking: ThinkingRule | None = None


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
class SequenceFinished:
    """The sequence ended in the engine: end-of-generation token, token limit or stop string."""

    seq_id: int
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    # The stop string that ended it (reason "stop").
    stop: str | None = None


@dataclass(frozen=True, slots=True)
class SequenceFailed:
    seq_id: int
    message: str
    # The step failed for memory (EngineOutOfMemory): 503 resource_exhausted, not a 500.
    out_of_memory: bool = False


SequenceEnd = SequenceFinished | SequenceFailed


@dataclass(frozen=True, slots=True)
class TextOutput:
    """What the decode loop's output step made of one sequence: text a client may see now
    (UTF-8 whole, stop strings held back or cut), the tokens it covers and their logprobs,
    and the sequence's end once it ended. Several merge into one while the session lags."""

    seq_id: int
    text: str
    tokens: int
    logprobs: tuple[TokenLogprobs, ...] = ()
    # Prompt tokens this sequence reused from its slot's KV cache.
    cached_tokens: int = 0
    end: SequenceEnd | None = None

    def merged(self, later: TextOutput) -> TextOutput:
        return TextOutput(
            self.seq_id,
            self.text + later.text,
            self.tokens + later.tokens,
            self.logprobs + later.logprobs,
            later.cached_tokens,
            later.end,
        )


class OutputMailbox:
    """One request's ready text: a single slot that merges what arrives while its reader
    lags (vLLM's RequestOutputCollector), so delivery never blocks and nothing is queued
    per token. Trio thread only.

    Two parties wait on it: the response that reads the text (woken by every `put`, through
    `doorbell`, which the choices of one request share) and the session, which waits only
    for the sequence's end (`ended`) to give its slot back.
    """

    def __init__(self, doorbell: trio.lowlevel.ParkingLot | None = None) -> None:
        self._pending: TextOutput | None = None
        self._closed = False  # the reader is gone
        self._sealed = False  # the session is done: no more text
        self._lot = trio.lowlevel.ParkingLot() if doorbell is None else doorbell
        self._end_lot = trio.lowlevel.ParkingLot()
        self.end: SequenceEnd | None = None
        self.tokens_put = 0  # every token whose text was taken in: what the reader gets
        self.cached_tokens = 0

    def put(self, output: TextOutput) -> bool:
        """Adds `output` (merged with what waits); False once the reader has closed it or
        the session has sealed it."""
        if self._closed or self._sealed:
            return False
        self._pending = output if self._pending is None else self._pending.merged(output)
        self.tokens_put += output.tokens
        self.cached_tokens = output.cached_tokens
        if output.end is not None:
            self.end = output.end
            self._end_lot.unpark_all()
        self._lot.unpark_all()
        return True

    def peek(self) -> TextOutput | None:
        return self._pending

    @property
    def closed(self) -> bool:
        return self._closed

    def wake(self) -> None:
        """Wakes the reader for something else it reads (its session's control events)."""
        self._lot.unpark_all()

    def take(self) -> TextOutput | None:
        """Everything that arrived since the last take, without waiting."""
        output, self._pending = self._pending, None
        return output

    async def get(self) -> TextOutput:
        """Everything that arrived since the last call; waits only when nothing has."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while self._pending is None:
            if self._closed:
                raise trio.ClosedResourceError("the mailbox is closed")
            await self._lot.park()
        output, self._pending = self._pending, None
        return output

    async def ended(self) -> SequenceEnd:
        """The sequence's end, once the engine has sent it (its text may still wait here).

        Raises:
            trio.ClosedResourceError: the reader is gone.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.end is None:
            if self._closed:
                raise trio.ClosedResourceError("the mailbox is closed")
            await self._end_lot.park()
        return self.end

    def seal(self) -> None:
        """The session is done: later `put`s answer False; what waits is still read."""
        self._sealed = True

    def close(self) -> None:
        """The reader is gone: later `put`s answer False (the sequence is then dropped)."""
        self._closed = True
        self._pending = None
        self._lot.unpark_all()
        self._end_lot.unpark_all()

    def __enter__(self) -> OutputMailbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# A reply's thinking, for stop strings, which apply to the answer only: "none" (no split,
# stops apply to all of it), "leading" (a `<think>` block where the reply starts), or
# "inside" (the prompt opened the block: the reply is thinking until `</think>`).
Thinking = Literal["none", "leading", "inside"]


@dataclass(frozen=True, slots=True)
class Admit:
    """Start generating for `seq_id` (a granted slot). Its text goes to `mailbox`; a stop
    string in `stop` ends the sequence in the step whose token completed it."""

    seq_id: int
    job_id: str
    prompt_tokens: tuple[int, ...]
    sampling: SamplingParams
    max_tokens: int
    mailbox: OutputMailbox = field(compare=False)
    stop: tuple[str, ...] = ()
    # Where stop strings are not looked for: a leading thinking block (reasoning.py).
    thinking: Thinking = "none"


@dataclass(frozen=True, slots=True)
class Cancel:
    """Drop `seq_id` from the next step and free its KV cells. Idempotent."""

    seq_id: int


@dataclass(frozen=True, slots=True)
class Abandon:
    """ModelActor -> its own decode loop: the session behind `admit` is gone (its mailbox
    refused the text); drop its sequence if it is still that one.

    Not a Cancel by slot: by the time this is applied (the engine thread may be steps ahead)
    the slot can hold the next request's sequence, which must live on.
    """

    admit: Admit


ModelCommand = Admit | Cancel
