"""Sampling one token of one sequence on llama.cpp's sampler chains.

A plain sequence samples with `llama_sampler_sample`: C over the whole vocabulary. Three
features need more; they work on numpy views of the logits, never with a Python loop over
the vocabulary:

- A grammar (`response_format`). llama.cpp's grammar sampler walks every candidate through
  the grammar, up to a second per token over a 262k vocabulary inside a JSON string. As
  llama-server does, the token is sampled without the grammar and only that token is
  checked; when the grammar rejects it, the token is sampled again with the grammar applied,
  first to the best candidates only (exact whenever enough of them pass, see `_constrained`),
  to the whole vocabulary otherwise.
- `min_tokens`: end-of-generation tokens are masked in the candidates (never in the logits)
  until that many tokens were generated.
- logprobs: a log-softmax of the raw logits row, the top k found with argpartition.

A thinking budget (reasoning.ThinkingBudget) forces the end marker's tokens once it ran out:
they are taken as sampled, through the chains and the grammar, whatever the logits say. A
lazy grammar (one that starts after the thinking) is guarded where it wakes (`Wake`).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

from llm_worker_rbee.engine.vocab import AFTER_SPACE
from llm_worker_rbee.messages.inference import SamplingParams, TokenLogprob, TokenLogprobs
from llm_worker_rbee.reasoning import ThinkingBudget

# How many recent tokens the repetition/presence/frequency penalties look at.
PENALTY_LAST_N = 64
# Candidates the grammar sees first once it rejected the unconstrained token.
GRAMMAR_SHORTLIST = 1024
# Tokens refused in a row at a lazy grammar's wake before the sequence just ends (Wake).
WAKE_RETRIES = 16
# JSON has no -inf; OpenAI reports -9999 for a token that could not be sampled.
MIN_LOGPROB = -9999.0

TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)

Sampler = Any  # a llama_sampler pointer (llama-cpp-python has no type hints)
FloatRow = npt.NDArray[np.float32]


@lru_cache(maxsize=4)
def _token_ids(n_vocab: int) -> npt.NDArray[np.int32]:
    ids = np.arange(n_vocab, dtype=np.int32)
    ids.flags.writeable = False
    return ids


def logits_row(ctx: Any, index: int, n_vocab: int) -> FloatRow:
    """The logits llama_decode left for batch row `index`, as a view (no copy)."""
    pointer = llama_cpp.llama_get_logits_ith(ctx, index)
    return np.ctypeslib.as_array(pointer, shape=(n_vocab,))


def _apply(sampler: Sampler, cur: npt.NDArray[np.void]) -> int:
    """Runs `sampler` over the candidates in place; the selected token, or -1."""
    array = llama_cpp.llama_token_data_array(
        cur.ctypes.data_as(llama_cpp.llama_token_data_p), len(cur), -1, False
    )
    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
    if array.selected < 0:
        return -1
    return int(array.data[array.selected].id)


def token_logprobs(
    row: FloatRow, token: int, k: int, piece: Callable[[int], bytes]
) -> TokenLogprobs:
    """The sampled token's logprob and the `k` likeliest tokens under the raw logits."""
    peak = float(row.max())
    log_total = peak + math.log(float(np.exp(row - peak).sum(dtype=np.float64)))

    def entry(t: int) -> TokenLogprob:
        return TokenLogprob(t, piece(t), max(float(row[t]) - log_total, MIN_LOGPROB))

    top: tuple[TokenLogprob, ...] = ()
    if k > 0:
        best = np.argpartition(row, -k)[-k:]
        best = best[np.argsort(-row[best], kind="stable")]
        top = tuple(entry(int(t)) for t in best)
    return TokenLogprobs(entry(token), top)


class Wake:
    """Where a lazy grammar wakes: llama.cpp feeds it the text from its marker (`</think>`)
    on, the rest of the token that completed the marker included, and a rest the grammar
    refuses makes llama.cpp throw through its C API, which aborts the process. So a token
    whose rest is more than the white space the grammar takes first is not let through."""

    def __init__(self, marker: str, piece: Callable[[int], bytes]) -> None:
        self._marker = marker
        self._piece = piece
        self._tail = ""  # the end of the text so far that may begin the marker
        self.awake = False

    def safe(self, token: int) -> bool:
        if self.awake:
            return True
        text = self._tail + self._piece(token).decode("utf-8", "replace")
        at = text.find(self._marker)
        if at < 0:
            return True
        rest = text[at + len(self._marker) :]
        return len(rest) <= AFTER_SPACE and not rest.strip(" \t\n")

    def accept(self, token: int) -> None:
        if self.awake:
            return
        text = self._tail + self._piece(token).decode("utf-8", "replace")
        self.awake = self._marker in text
        self._tail = text[-(len(self._marker) - 1) :]


@dataclass
class Chains:
    """`whole` = `pre` then `post`; it owns both (freeing it frees them)."""

    whole: Sampler
    pre: Sampler  # logit bias, penalties: what the grammar comes after
    post: Sampler  # truncation, temperature, then dist or greedy
    # How many grammar-valid candidates decide `post` exactly: 1 for greedy, top_k after a
    # top-k cut; 0 when only the whole vocabulary does (no top-k cut).
    decisive: int


def build_chains(
    sampling: SamplingParams, prompt: Sequence[int], n_vocab: int, eog: Sequence[int]
) -> Chains:
    """The chains for `sampling`: logit bias (with `ignore_eos`, the end-of-generation
    tokens banned), penalties, then top-k, top-p, min-p, temperature and a seeded dist, or
    greedy at temperature 0."""
    chain_params = llama_cpp.llama_sampler_chain_default_params()
    pre = llama_cpp.llama_sampler_chain_init(chain_params)
    post = llama_cpp.llama_sampler_chain_init(chain_params)
    add = llama_cpp.llama_sampler_chain_add
    bias = list(sampling.logit_bias)
    if sampling.ignore_eos:
        bias += [(t, float("-inf")) for t in eog]
    if bias:
        array = (llama_cpp.llama_logit_bias * len(bias))()
        for i, (token, value) in enumerate(bias):
            array[i].token = token  # type: ignore[assignment]
            array[i].bias = value
        add(pre, llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(bias), array))
    penalised = (
        sampling.repeat_penalty != 1.0
        or sampling.presence_penalty != 0.0
        or sampling.frequency_penalty != 0.0
    )
    if penalised:
        penalties = llama_cpp.llama_sampler_init_penalties(
            n_vocab,
            PENALTY_LAST_N,
            sampling.repeat_penalty,
            sampling.frequency_penalty,
            sampling.presence_penalty,
        )
        add(pre, penalties)
    decisive = 1
    if sampling.temperature <= 0.0:
        add(post, llama_cpp.llama_sampler_init_greedy())
    else:
        decisive = sampling.top_k
        if sampling.top_k > 0:
            add(post, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
        add(post, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
        add(post, llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
        add(post, llama_cpp.llama_sampler_init_temp(sampling.temperature))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed
        add(post, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    whole = llama_cpp.llama_sampler_chain_init(chain_params)
    add(whole, pre)
    add(whole, post)
    if penalised:  # penalties look at the prompt too, as llama-server's do
        for token in prompt[-PENALTY_LAST_N:]:
            llama_cpp.llama_sampler_accept(whole, token)
    return Chains(whole, pre, post, decisive)


class SeqSampler:
    """One sequence's sampling state: its chains, its grammar, how far min_tokens holds."""

    def __init__(
        self,
        chains: Chains,
        sampling: SamplingParams,
        *,
        n_vocab: int,
        eog: Sequence[int],
        eos: int,
        grammar: Sampler | None = None,
        describe: Callable[[int], bytes] = lambda _: b"",
        budget: ThinkingBudget | None = None,
        wake: Wake | None = None,
    ) -> None:
        self._chains = chains
        self._grammar = grammar
        self._budget = budget
        self._wake = wake
        self._n_vocab = n_vocab
        self._eog = np.asarray(eog, dtype=np.int64)
        self._eog_set = frozenset(eog)
        self._eos = eos
        self._min_tokens = sampling.min_tokens
        self._logprobs = sampling.logprobs
        self._describe = describe
        self._cur: npt.NDArray[np.void] | None = None
        self.generated = 0

    def close(self) -> None:
        llama_cpp.llama_sampler_free(self._chains.whole)
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)

    def sample(self, ctx: Any, index: int) -> tuple[int, TokenLogprobs | None]:
        """Samples from batch row `index`; an end-of-generation token ends the sequence."""
        holding = self.generated < self._min_tokens
        forced = self._forced()
        if forced is not None:
            token = forced
            row = None
            llama_cpp.llama_sampler_accept(self._chains.whole, token)
            if self._grammar is not None:
                llama_cpp.llama_sampler_accept(self._grammar, token)
        elif self._grammar is None and not holding:
            token = int(llama_cpp.llama_sampler_sample(self._chains.whole, ctx, index))
            row = None
        else:
            row = logits_row(ctx, index, self._n_vocab)
            token = self._sample_candidates(row, holding)
            llama_cpp.llama_sampler_accept(self._chains.whole, token)
        self.generated += 1
        if self._budget is not None:
            self._budget.accept(token)
        if self._wake is not None:
            self._wake.accept(token)
        if self._logprobs is None:
            return token, None
        if row is None:
            row = logits_row(ctx, index, self._n_vocab)
        return token, token_logprobs(row, token, self._logprobs, self._describe)

    def _forced(self) -> int | None:
        """The budget's forced token, where the grammar (if awake) takes it."""
        forced = None if self._budget is None else self._budget.forced()
        if forced is None or (self._wake is not None and not self._wake.safe(forced)):
            return None
        if self._grammar is not None and not self._allows(forced):
            return None
        return forced

    def _candidates(self, row: FloatRow, holding: bool) -> npt.NDArray[np.void]:
        """Every token with its logit, in a buffer reused across steps."""
        if self._cur is None:
            self._cur = np.empty(self._n_vocab, dtype=TOKEN_DATA)
        cur = self._cur
        cur["id"] = _token_ids(self._n_vocab)
        cur["logit"] = row
        if holding and len(self._eog):
            cur["logit"][self._eog] = -np.inf
        return cur

    def _sample_candidates(self, row: FloatRow, holding: bool) -> int:
        token = _apply(self._chains.whole, self._candidates(row, holding))
        if self._wake is not None and not self._wake.safe(token):
            token = self._safe_at_wake(row, holding, token)
        grammar = self._grammar
        if grammar is None:
            return token if token >= 0 else self._eos  # nothing left to sample: the end
        if not self._allows(token):
            cur = self._candidates(row, holding)
            _apply(self._chains.pre, cur)
            token = self._constrained(cur)
        if token < 0 or not self._allows(token):
            # Nothing the grammar allows can follow (its end is banned by min_tokens or
            # ignore_eos): end here. Accepting a token it rejects would abort llama.cpp.
            return self._eos
        if token not in self._eog_set:  # the sequence ends there; nothing to advance
            llama_cpp.llama_sampler_accept(grammar, token)
        return token

    def _safe_at_wake(self, row: FloatRow, holding: bool, token: int) -> int:
        """Samples again without the tokens Wake refused (while the grammar sleeps, every
        other token is the grammar's to take); the end if too many are refused."""
        assert self._wake is not None
        banned = [token]
        for _ in range(WAKE_RETRIES):
            cur = self._candidates(row, holding)
            cur["logit"][banned] = -np.inf
            token = _apply(self._chains.whole, cur)
            if token < 0 or self._wake.safe(token):
                return token
            banned.append(token)
        return self._eos

    def _constrained(self, cur: npt.NDArray[np.void]) -> int:
        """Samples `post` over the candidates the grammar allows.

        The best GRAMMAR_SHORTLIST candidates (after bias and penalties) go through the
        grammar first. When at least `decisive` of them pass, `post` keeps only candidates
        from among them anyway (greedy takes the best, top-k the k best), so the answer is
        the same as over the whole vocabulary, for a fraction of the grammar's work.
        """
        grammar = self._grammar
        decisive = self._chains.decisive
        if 0 < decisive <= GRAMMAR_SHORTLIST < len(cur):
            best = np.argpartition(cur["logit"], -GRAMMAR_SHORTLIST)[-GRAMMAR_SHORTLIST:]
            shortlist = cur[best]
            _apply(grammar, shortlist)
            if np.count_nonzero(np.isfinite(shortlist["logit"])) >= decisive:
                return _apply(self._chains.post, shortlist)
        _apply(grammar, cur)
        if not np.isfinite(cur["logit"]).any():
            return -1
        return _apply(self._chains.post, cur)

    def _allows(self, token: int) -> bool:
        """Whether the grammar accepts `token` next (a one-candidate run of its sampler)."""
        if token < 0:
            return False
        one = np.zeros(1, dtype=TOKEN_DATA)
        one["id"] = token
        _apply(self._grammar, one)
        return bool(np.isfinite(one["logit"][0]))
