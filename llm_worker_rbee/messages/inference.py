"""InferenceSession <-> ModelActor: admit and cancel sequences, each sequence's ready text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

# A stop entry meaning "a new line that starts a speaker's turn" (`\nStudent:`, `\nAI:`):
# the plain transcript a base model gets (prompts.py) ends the reply at any of them, since
# the model invents speakers (pipeline/text.py). The NUL keeps it apart from any stop a
# client would send.
TURN_HEADER = "\x00turn header"

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


class TextSink(Protocol):
    """Where a sequence's text goes (a request's OutputMailbox, actors/mailbox.py): `put`
    never blocks, and answers False once nobody reads it (the sequence is then dropped)."""

    def put(self, output: TextOutput) -> bool: ...


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
    mailbox: TextSink = field(compare=False)
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
