"""The llama.cpp engine on llama-cpp-python's low-level API, in two modes.

Each active sequence has its own llama.cpp sequence id (its slot) and its own sampler chain;
sampling runs in C over the full vocabulary, never in a Python loop (grammars, min_tokens and
logprobs: `sampling.py`).

- **Fast (the default)**: one KV pool shared by every slot (`kv_unified`), so a request may
  use up to `--ctx-size` cells, and one `llama_decode` per step carries the running streams'
  tokens and new prompts' chunks together (within `--batch-size`). Cells are reserved by the
  scheduler (`engine/cells.py`); the engine only makes room for a step by dropping the
  prompt cache of idle slots, least recently used first.
- **Exact (`--batch-invariant`)**: a KV stream per slot and each prompt chunk in a decode of
  its own, so a sequence's tokens do not depend on who shares its steps; prompt chunks end
  only at multiples of `EXACT_CHUNK` positions and a cached prefix is reused only as far as
  such chunks decoded it, so they do not depend on what the slot held either.

Prompt cache: a slot keeps its KV cells after its sequence ends. The next sequence admitted
to that slot keeps the part of them that matches its prompt (the longest common prefix) and
only the rest of its prompt is decoded; the `SlotCaches` snapshot it publishes after each
change tells the scheduler which free slot holds the longest match (engine/prompt_cache.py).
The routes tokenize through its `LlamaVocab` (engine/vocab.py), never through the engine.

One piece (over 400 lines): `LlamaEngine` owns one llama.cpp context, and loading,
admission, the prompt cache and both step modes read and write the same per-slot state
(the sequences, the shared batch, the KV cells); split apart, each part would reach into
the others' private state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import llama_cpp
from llama_cpp import _logger as llama_logger

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.base import (
    EngineError,
    EngineOutOfMemory,
    ModelInfo,
    ModelLoadError,
    SeqOutput,
)
from llm_worker_rbee.engine.draft_plan import TOTALS, StepCosts, plan
from llm_worker_rbee.engine.kernels import describe as describe_build
from llm_worker_rbee.engine.loading import LoadProgress, LoadStage
from llm_worker_rbee.engine.ngram import (
    DRAFT_ROWS,
    MAX_DRAFT,
    MEMORY_ENTRIES,
    NgramDrafter,
    NgramMemory,
    Proposal,
)
from llm_worker_rbee.engine.prompt_cache import GrownPrefix, SlotCaches, common_prefix
from llm_worker_rbee.engine.sampling import SeqSampler, Wake, build_chains
from llm_worker_rbee.engine.vocab import LlamaVocab
from llm_worker_rbee.messages.inference import SamplingParams
from llm_worker_rbee.reasoning import FORCED_CLOSE, THINK_CLOSE, ThinkingBudget

log = logging.getLogger(__name__)

# llama_decode's answers that mean memory: 1, no KV cells free for the batch (the cache is
# left as it was); -2, an allocation failed (GGML_STATUS_ALLOC_FAILED, or the cache could not
# prepare the batch). -3 is a failed compute (GGML_STATUS_FAILED): an engine error.
DECODE_OUT_OF_MEMORY = {1: "no KV cells free for the batch", -2: "an allocation failed"}


# Exact mode: a prompt goes in as chunks that end at multiples of this many positions counted
# from 0 (and at its end), never where --batch-size, the company or the cache happen to cut
# it. llama.cpp's CPU kernels pick their path by a batch's shape (one row or many, and on
# AVX-512 how many), so a cell's numbers depend on the chunk that decoded it: with fixed
# boundaries a position is always decoded in the same chunk, cold or warm. 64 gives up at
# most 63 cached prompt tokens for about 7 % more prefill compute than 512-token chunks
# (docs/PERFORMANCE.md, "What the exact mode costs").
EXACT_CHUNK = 64
# ggml's switch for its tiled K-quant matrix multiply (ggml-cpu/tiled/tiled.cpp), which the
# exact mode turns off.
TILED_MATMUL = "GGML_CPU_TILED_MM"


@contextlib.contextmanager
def tiled_matmul_off(off: bool) -> Iterator[None]:
    """`GGML_CPU_TILED_MM=0` while an engine loads, if `off` (the exact mode). llama.cpp's CPU
    backend multiplies K-quant weights by a batch of 8 rows or more in tiles (ggml-cpu/tiled,
    "profitable at rows >= 8") and by fewer row by row, which sums in another order: a
    stream's logits would change as the 8th stream joins. ggml reads the switch once per
    process, at the first decode (the warm-up), so the worker's one engine keeps it; the
    variable is put back after, so that processes started later do not inherit it."""
    if not off:
        yield
        return
    saved = os.environ.get(TILED_MATMUL)
    os.environ[TILED_MATMUL] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[TILED_MATMUL]
        else:
            os.environ[TILED_MATMUL] = saved


def decode_error(status: int) -> EngineError:
    """The exception for a llama_decode that returned `status` (not 0)."""
    reason = DECODE_OUT_OF_MEMORY.get(status)
    if reason is not None:
        return EngineOutOfMemory(f"llama_decode returned {status}: {reason}")
    return EngineError(f"llama_decode returned {status}")


@dataclass
class _Seq:
    prompt: tuple[int, ...]
    sampler: SeqSampler
    # Tokens whose KV cells this sequence holds, position i = tokens[i]. Starts with the
    # reused prefix, grows by prompt chunks, then by each sampled token once it is decoded.
    tokens: list[int]
    cached: int
    order: int
    # Exact mode: the leading cells decoded by whole chunks on the fixed boundaries (a
    # multiple of the chunk), the only cells a later prompt may reuse (cells of a prompt's
    # last, partial chunk or of generated tokens were decoded in another shape than a cold
    # prompt would decode them in).
    aligned: int = 0
    last: int | None = None  # sampled in the previous step, decoded in the next
    broken: bool = False  # a decode failed with it in the batch: its cells are unknown
    # Fast mode with speculation: its prompt and output, and the drafts they propose.
    drafter: NgramDrafter | None = None

    @property
    def prefilling(self) -> bool:
        return len(self.tokens) < len(self.prompt)


@dataclass
class _Batch:
    """A reusable llama_batch and where each sequence's logits land in it."""

    raw: llama_cpp.llama_batch
    capacity: int
    outputs: list[tuple[int, int]] = field(default_factory=list)

    def clear(self) -> None:
        self.raw.n_tokens = 0
        self.outputs.clear()

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> None:
        i = self.raw.n_tokens
        self.raw.token[i] = token
        self.raw.pos[i] = pos  # type: ignore[call-overload]
        self.raw.n_seq_id[i] = 1
        self.raw.seq_id[i][0] = seq_id
        self.raw.logits[i] = logits
        if logits:
            self.outputs.append((seq_id, i))
        self.raw.n_tokens = i + 1


class LlamaEngine:
    def __init__(
        self,
        model: llama_cpp.llama_model_p,
        ctx: llama_cpp.llama_context_p,
        model_id: str,
        n_batch: int,
        *,
        batch_invariant: bool = False,
        speculation: bool = False,
        draft_memory: bool = False,
    ) -> None:
        self._model = model
        self._ctx = ctx
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._vocabulary = LlamaVocab(self._vocab)
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._n_batch = n_batch
        self._exact = batch_invariant
        # N-gram drafts in the step (the exact mode's only for a stream alone, _step_apart).
        self._speculation = speculation
        # What the model wrote after each context, for every sequence's drafts (ngram.py).
        self._ngram_memory = NgramMemory(MEMORY_ENTRIES if draft_memory else 0)
        self._step_costs = StepCosts()  # what a decode costs by its rows (draft_plan.py)
        self.drafted = 0  # draft tokens decoded, and those the model's own sampling kept
        self.accepted = 0
        self._chunk = min(EXACT_CHUNK, n_batch)
        n_seq = llama_cpp.llama_n_seq_max(ctx)
        self._batch = _Batch(llama_cpp.llama_batch_init(n_batch, 0, 1), n_batch)
        self._seqs: dict[int, _Seq] = {}
        self._admitted = 0
        # Free slots: the tokens their KV cells still hold (exact mode: those a prompt may
        # reuse, see _Seq.aligned), and when they were last used.
        self._held: dict[int, tuple[int, ...]] = {}
        self._last_used: dict[int, int] = {}
        self._caches = SlotCaches()
        self._eog_tokens: list[int] | None = None
        n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        template = llama_cpp.llama_model_chat_template(model, None)
        n_ctx = llama_cpp.llama_n_ctx(ctx)
        self._info = ModelInfo(
            model_id=model_id,
            n_ctx=n_ctx,
            n_ctx_train=llama_cpp.llama_model_n_ctx_train(model),
            n_vocab=n_vocab,
            seq_capacity=llama_cpp.llama_n_ctx_seq(ctx),
            chat_template=template.decode("utf-8") if template else None,
            bos_text=self._vocabulary.special_text(llama_cpp.llama_vocab_bos(self._vocab)),
            eos_text=self._vocabulary.special_text(llama_cpp.llama_vocab_eos(self._vocab)),
            kv_pool=None if batch_invariant else n_ctx,
            n_slots=n_seq,
        )
        self.n_seq_max = n_seq
        self._closed = False

    @classmethod
    def load(
        cls,
        path: Path,
        settings: Settings,
        model_id: str,
        progress: LoadProgress | None = None,
        *,
        chat_template: str | None = None,
    ) -> LlamaEngine:
        """Opens the model, a context for `settings.slots` sequences, and warms it up.

        `progress` hears each stage and how much of the weights are in; when it says stop
        (past --load-timeout, or the worker is stopping) llama.cpp aborts the load.
        `chat_template` (--chat-template-file's) replaces the one the file carries, if any.

        Raises:
            ModelLoadError: llama.cpp refused the file or the context, or the warm-up failed.
            LoadTimeout, LoadCancelled: the load was aborted.
        """
        progress = progress or LoadProgress()
        llama_logger.set_verbose(settings.log_level == "debug")
        with tiled_matmul_off(settings.batch_invariant):
            return cls._open(path, settings, model_id, progress, chat_template)

    @classmethod
    def _open(
        cls,
        path: Path,
        settings: Settings,
        model_id: str,
        progress: LoadProgress,
        chat_template: str | None,
    ) -> LlamaEngine:
        """load's work: the model, the context, the warm-up."""
        llama_cpp.llama_backend_init()
        log.info("llama.cpp build: %s", describe_build())  # which kernels made the texts
        progress.enter(LoadStage.LOADING_WEIGHTS)
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = settings.n_gpu_layers
        model_params.main_gpu = settings.device
        # No repacked CPU weights, in either mode. Their kernels take one path for a lone
        # row and another for blocks of rows (a sequence's logits would depend on who shares
        # its step), and on some Intel VMs they die with an illegal instruction (SIGILL,
        # which kills the process: llama-server and llama-cpp-python's server crash there);
        # a probe could only vouch for the shapes it tried. Without them decodes measured
        # the same here (docs/PERFORMANCE.md, "Repacked weights").
        model_params.use_extra_bufts = False
        # Referenced until the load returns: llama.cpp calls it from inside; False aborts.
        callback = llama_cpp.llama_progress_callback(lambda done, _: progress.weights(done))
        model_params.progress_callback = callback
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not model:
            progress.check()  # an abort says why
            raise ModelLoadError(f"llama.cpp could not load {path}")
        try:
            progress.enter(LoadStage.CREATING_CONTEXT)
            engine = cls._with_context(model, path, settings, model_id)
        except BaseException:
            llama_cpp.llama_model_free(model)
            raise
        if chat_template is not None:
            engine._info = dataclasses.replace(engine._info, chat_template=chat_template)
        try:
            progress.enter(LoadStage.WARMING_UP)
            step_s = engine.warm_up()
            engine._info = dataclasses.replace(engine._info, step_s=step_s)
            progress.check()
        except BaseException:
            engine.close()
            raise
        return engine

    @classmethod
    def _with_context(
        cls, model: llama_cpp.llama_model_p, path: Path, settings: Settings, model_id: str
    ) -> LlamaEngine:
        """The engine on a new context for `model`; the caller frees `model` if this raises."""
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = settings.ctx_tokens
        params.n_batch = settings.batch_size
        params.n_ubatch = min(settings.batch_size, 512)
        params.n_seq_max = settings.slots
        # A step asks for one row of logits per sequence at most; reserving n_batch rows of
        # a 262k vocabulary would set aside 512 MiB of compute buffer for nothing.
        # With n-gram speculation a sequence's drafts each need a row too (DRAFT_ROWS in all).
        params.n_outputs_max = settings.slots + (DRAFT_ROWS if settings.drafting else 0)
        params.n_outputs_max_per_seq = 1 + (MAX_DRAFT if settings.drafting else 0)
        params.n_threads = settings.threads
        params.n_threads_batch = settings.threads
        # Fast: one pool of ctx_size cells for every slot. Exact: each slot owns
        # ctx_size / slots cells, in the order it decoded them (a unified buffer interleaves
        # the slots' cells, and the order of a sum is its rounding).
        params.kv_unified = not settings.batch_invariant
        # Full-size sliding-window cells: the prompt cache trims a slot back to a shared
        # prefix, which needs the window's cells of that prefix to still be there.
        params.swa_full = True
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            raise ModelLoadError(f"llama.cpp could not create a context for {path}")
        try:
            return cls(
                model,
                ctx,
                model_id,
                settings.batch_size,
                batch_invariant=settings.batch_invariant,
                speculation=settings.drafting,
                draft_memory=settings.speculation == "ngram",
            )
        except BaseException:
            llama_cpp.llama_free(ctx)
            raise

    def warm_up(self) -> float:
        """One decode of a BOS token in slot 0, so the first request does not pay for
        llama.cpp's first decode (graph and buffer set-up); then a step of one token in every
        slot, twice, the second timed: what a step costs with every slot busy, which the
        scheduler turns queued work into a wait with before any request has run; with drafts,
        what each row count costs (_time_rows). The cells are dropped after.

        Returns:
            The timed step's seconds.

        Raises:
            ModelLoadError: a decode failed; a worker that cannot decode one token is not
                ready.
        """
        bos = llama_cpp.llama_vocab_bos(self._vocab)
        token = bos if bos >= 0 else 0
        every_slot = [(seq, 0) for seq in range(self._info.n_slots)]
        self._warm_decode(token, [(0, 0)])
        self._warm_decode(token, every_slot)
        step_s = self._warm_decode(token, every_slot)
        if self._speculation:
            self._time_rows(token)
        return step_s

    def _time_rows(self, token: int) -> None:
        """Times a decode of each row count a step with drafts may total (draft_plan.TOTALS,
        every row's logits asked for, a stream's token and its longest draft to a slot), the
        faster of two: the first prices what the plan has not tried yet, and a VM's noise
        only ever adds time."""
        most = min(self._info.n_slots + DRAFT_ROWS, self._n_batch, self._info.n_ctx)
        per_seq = 1 + MAX_DRAFT  # the rows a sequence may have (n_outputs_max_per_seq)
        for rows in (t for t in TOTALS if t <= most):
            cells = [divmod(row, per_seq) for row in range(rows)]
            timings = (self._warm_decode(token, cells) for _ in range(2))
            self._step_costs.observe(rows, min(timings))

    def _warm_decode(self, token: int, cells: list[tuple[int, int]]) -> float:
        """Decodes `token` at each (sequence, position) of `cells`, logits for every row, and
        drops the cells; returns the decode's seconds."""
        batch = self._batch
        batch.clear()
        for seq, pos in cells:
            batch.add(token, pos, seq, True)
        try:
            started = time.perf_counter()
            status = llama_cpp.llama_decode(self._ctx, batch.raw)
            seconds = time.perf_counter() - started
            llama_cpp.llama_memory_seq_rm(self._memory, -1, -1, -1)
        finally:
            batch.clear()
        if status != 0:
            raise ModelLoadError(f"the warm-up decode failed: {decode_error(status)}")
        return seconds

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def vocab(self) -> LlamaVocab:
        return self._vocabulary

    # The engine's own shortcuts to its vocabulary (its sampling and the engine tests use
    # them); the routes get `vocab` from the ModelHandle.
    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return self._vocabulary.tokenize(text, add_special=add_special)

    def token_piece(self, token: int) -> bytes:
        return self._vocabulary.token_piece(token)

    def _eog(self) -> list[int]:
        if self._eog_tokens is None:
            is_eog = llama_cpp.llama_vocab_is_eog
            self._eog_tokens = [t for t in range(self._info.n_vocab) if is_eog(self._vocab, t)]
        return self._eog_tokens

    def _sampler(self, sampling: SamplingParams, prompt: Sequence[int]) -> SeqSampler:
        n_vocab = self._info.n_vocab
        # Only what needs them pays for the end-of-generation list (a pass over the vocabulary).
        eog = self._eog() if sampling.ignore_eos or sampling.min_tokens > 0 else []
        rule = sampling.thinking
        grammar = wake = None
        if sampling.grammar is not None:
            after = THINK_CLOSE if rule is not None and rule.grammar_after else None
            grammar = self._grammar(sampling.grammar, after=after)
            if not grammar:
                raise ValueError("llama.cpp could not parse the grammar")
            wake = None if after is None else Wake(after, self._logprob_piece)
        budget = None
        if rule is not None and rule.budget is not None:
            close = self._vocabulary.tokenize(FORCED_CLOSE, add_special=False)
            budget = ThinkingBudget(
                inside=rule.inside, budget=rule.budget, close=close, piece=self.token_piece
            )
        return SeqSampler(
            build_chains(sampling, prompt, n_vocab, eog),
            sampling,
            n_vocab=n_vocab,
            eog=eog,
            eos=llama_cpp.llama_vocab_eos(self._vocab),
            grammar=grammar,
            describe=self._logprob_piece,
            budget=budget,
            wake=wake,
        )

    def _grammar(self, grammar: str, *, after: str | None = None) -> Any:
        """llama.cpp's grammar sampler for `grammar` (root rule `root`; lazy, starting at
        `after`, when given); NULL if it fails."""
        return self._vocabulary.grammar_sampler(grammar, after=after)

    def check_grammar(self, grammar: str) -> None:
        self._vocabulary.check_grammar(grammar)

    def _logprob_piece(self, token: int) -> bytes:
        """A token as logprobs show it: its text, or for a control token its name."""
        return self.token_piece(token) or self._vocabulary.special_text(token).encode()

    def prompt_cache(self) -> SlotCaches:
        """What the slots' cells held after the engine's last admission, cancel or step."""
        return self._caches

    def _publish(self) -> None:
        """A new snapshot for the scheduler (read on the trio thread while a step runs): a
        reference swap, and no token list copied at every step (see GrownPrefix)."""
        held: dict[int, Sequence[int]] = dict(self._held)
        for slot, seq in self._seqs.items():
            held[slot] = GrownPrefix(seq.tokens, seq.aligned if self._exact else None)
        self._caches = SlotCaches(MappingProxyType(held), MappingProxyType(dict(self._last_used)))

    def admit(self, seq_id: int, prompt: Sequence[int], sampling: SamplingParams) -> int:
        """Starts a sequence in slot `seq_id`; returns how many prompt tokens its cells reuse."""
        if seq_id in self._seqs:
            raise ValueError(f"sequence {seq_id} is already active")
        if not 0 <= seq_id < self.n_seq_max:
            raise ValueError(f"sequence {seq_id} is outside 0..{self.n_seq_max - 1}")
        if not prompt:
            raise ValueError("empty prompt")
        held = self._held.pop(seq_id, ())
        # Keep at least the last prompt token to decode: its logits give the first token.
        reuse = min(common_prefix(held, prompt), len(prompt) - 1)
        if self._exact:  # back to a boundary (held ends on one: see EXACT_CHUNK)
            reuse = reuse // self._chunk * self._chunk
        if not self._trim(seq_id, reuse):
            reuse = 0
        self._admitted += 1
        drafts = MAX_DRAFT if sampling.draft_max is None else min(sampling.draft_max, MAX_DRAFT)
        self._seqs[seq_id] = _Seq(
            prompt=tuple(prompt),
            sampler=self._sampler(sampling, prompt),
            tokens=list(prompt[:reuse]),
            cached=reuse,
            order=self._admitted,
            aligned=reuse,
            drafter=(
                NgramDrafter(prompt, self._ngram_memory, drafts)
                if self._speculation and drafts > 0
                else None
            ),
        )
        self._publish()
        return reuse

    def _trim(self, seq_id: int, keep: int) -> bool:
        """Drops the cells of `seq_id` from position `keep` on; False if it had to drop all."""
        memory = self._memory
        if keep > 0 and llama_cpp.llama_memory_seq_rm(memory, seq_id, keep, -1):
            first = llama_cpp.llama_memory_seq_pos_min(memory, seq_id)
            last = llama_cpp.llama_memory_seq_pos_max(memory, seq_id)
            if first == 0 and last == keep - 1:
                return True
            log.warning("slot %d holds positions %d..%d, not 0..%d", seq_id, first, last, keep - 1)
        llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
        return False

    def cancel(self, seq_id: int) -> None:
        """Ends a sequence; its slot keeps the cells it decoded for the next prompt."""
        seq = self._seqs.pop(seq_id, None)
        if seq is None:
            return
        seq.sampler.close()
        self._last_used[seq_id] = seq.order
        if seq.broken:
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        else:
            self._held[seq_id] = tuple(seq.tokens[: seq.aligned] if self._exact else seq.tokens)
        self._publish()

    def has_work(self) -> bool:
        return bool(self._seqs)

    def step(self) -> list[SeqOutput]:
        """One token for every running stream, then prompt chunks within the batch size."""
        try:
            return self._step_apart() if self._exact else self._step_together()
        finally:
            self._publish()  # room made, stand-ins dropped: caches may be gone

    def _step_together(self) -> list[SeqOutput]:
        """Fast mode: the streams' tokens and the prompts' chunks in one llama_decode.

        Streams first, one token each; then prompts in chunks that fill the rest of
        `--batch-size` (as llama-server does), so a long prompt goes in over several steps
        while the streams keep one token a step. The prompts closest to their end go first
        (ties: the oldest), so a short prompt does not wait behind a long one's chunks; the
        long one takes what is left of each step. With one KV pool llama.cpp splits the
        batch only by `n_ubatch`, never by sequence, so order and gaps cost nothing.
        """
        batch = self._batch
        batch.clear()
        fed: list[tuple[_Seq, Sequence[int]]] = []
        streams = [
            (i, s) for i, s in sorted(self._seqs.items()) if s.last is not None and not s.prefilling
        ]
        drafts = self._drafts(streams)
        for seq_id, seq in streams:
            fed.append(self._feed_stream(seq_id, seq, drafts.get(seq_id, Proposal())))
        budget = self._n_batch - batch.raw.n_tokens
        prefilling = [(i, s) for i, s in self._seqs.items() if s.prefilling]
        prefilling.sort(key=lambda item: (len(item[1].prompt) - len(item[1].tokens), item[1].order))
        for seq_id, seq in prefilling:
            if budget <= 0:
                break
            start = len(seq.tokens)
            chunk = seq.prompt[start : start + budget]
            for pos, token in enumerate(chunk, start):
                batch.add(token, pos, seq_id, pos == len(seq.prompt) - 1)
            fed.append((seq, chunk))
            budget -= len(chunk)
        self._make_room(batch.raw.n_tokens)
        return self._decode(fed, drafts)

    def _feed_stream(self, seq_id: int, seq: _Seq, draft: Proposal) -> tuple[_Seq, Sequence[int]]:
        """Adds a stream's token to the batch, its draft's tokens after it, each with logits;
        returns what `_decode` records as fed (the token; kept drafts it adds itself)."""
        assert seq.last is not None
        pos = len(seq.tokens)
        for offset, token in enumerate((seq.last, *draft.tokens)):
            self._batch.add(token, pos + offset, seq_id, True)
        return seq, (seq.last,)

    def _drafts(self, streams: list[tuple[int, _Seq]]) -> dict[int, Proposal]:
        """Each stream's n-gram draft for this step: the proposals' first tokens that give
        the step the most expected tokens per second (draft_plan.py), none where no draft
        pays, within what the step can afford.

        None while a prompt is waiting for its chunks: a step with a chunk is already
        compute-bound, and a draft row would take a prompt token's place. Otherwise the
        streams share DRAFT_ROWS rows, and drafts only use cells that neither a sequence nor
        a slot's prompt cache holds (speculation never evicts a cache).
        """
        if not self._speculation or not streams or any(s.prefilling for s in self._seqs.values()):
            return {}
        room = min(self.cells_free() - len(streams), self._n_batch - len(streams), DRAFT_ROWS)
        if room <= 0:
            return {}
        proposals: list[Proposal] = []
        for _, seq in streams:
            limit = min(room, self._info.seq_capacity - len(seq.tokens) - 2)
            proposals.append(seq.drafter.propose(limit) if seq.drafter is not None else Proposal())
        lengths = plan(
            self._step_costs,
            [
                seq.drafter.chances(proposal) if seq.drafter is not None else []
                for (_, seq), proposal in zip(streams, proposals, strict=True)
            ],
            room,
        )
        drafts: dict[int, Proposal] = {}
        for (seq_id, seq), proposal, length in zip(streams, proposals, lengths, strict=True):
            if seq.drafter is not None:
                seq.drafter.planned(proposal, length)
            if length:
                drafts[seq_id] = proposal.head(length)
        return drafts

    def cells_free(self) -> int:
        """Cells of the shared pool that neither a running sequence nor a slot's prompt cache
        holds (fast mode)."""
        used = sum(len(seq.tokens) for seq in self._seqs.values())
        return self._info.n_ctx - used - sum(len(held) for held in self._held.values())

    def _make_room(self, needed: int) -> None:
        """Drops the prompt cache of idle slots, least recently used first, until `needed`
        cells are free. The scheduler's reservations (engine/cells.py) guarantee that the
        running sequences' own cells always fit once every idle slot's cache is gone."""
        free = self.cells_free()
        for slot in sorted(self._held, key=lambda s: (self._last_used.get(s, 0), s)):
            if free >= needed:
                return
            free += len(self._held.pop(slot))
            llama_cpp.llama_memory_seq_rm(self._memory, slot, -1, -1)
            log.debug("slot %d: prompt cache dropped to make room (%d cells free)", slot, free)

    def _step_apart(self) -> list[SeqOutput]:
        """Exact mode: the streams in one decode, each prompt chunk in a decode of its own.

        llama.cpp's CPU kernels pick their path by the shape of a batch (one row or many,
        prompts of equal length or not), so a batch mixing streams and prompts would make a
        sequence's tokens depend on who shares its step. Apart, a stream's token is decoded
        as it would be in any company (a lone stream with a stand-in beside it), and a
        prompt chunk, whose boundaries depend only on positions (EXACT_CHUNK), as it would
        be cold (see docs/PERFORMANCE.md).
        """
        batch = self._batch
        batch.clear()
        fed: list[tuple[_Seq, Sequence[int]]] = []
        # Running streams first, one token each, so a long prompt never stalls them. In slot
        # order, gaps filled: with a KV stream per slot, llama.cpp splits a batch into one
        # ubatch per run of consecutive sequence ids, each a pass over all the weights.
        running = {i: s for i, s in self._seqs.items() if s.last is not None and not s.prefilling}
        # Drafts only for a stream alone: llama.cpp cuts a batch of several KV streams into
        # ubatches of as many rows from each, so streams with drafts of other lengths would
        # leave rows in ubatches of their own, where a lone one takes another attention path.
        # Alone, its rows are one ubatch, and a row's numbers are the same among any number
        # of the sequence's rows (the tiled matmul being off): the tokens are the same.
        drafts = self._drafts(list(running.items())) if len(running) == 1 else {}
        fillers: list[tuple[int, int]] = []
        for seq_id in range(min(running, default=0), max(running, default=-1) + 1):
            if seq_id in running:
                seq = running[seq_id]
                fed.append(self._feed_stream(seq_id, seq, drafts.get(seq_id, Proposal())))
            elif (filler := self._filler(seq_id)) is not None:
                batch.add(0, filler, seq_id, False)
                fillers.append((seq_id, filler))
        if batch.raw.n_tokens == 1:
            ((seq_id, seq),) = running.items()
            if (pos := self._beside_lone(seq)) is not None:
                batch.add(0, pos, seq_id, False)
                fillers.append((seq_id, pos))
        try:
            outputs = self._decode(fed, drafts)
        finally:
            for seq_id, pos in fillers:
                self._unfill(seq_id, pos)
        budget = self._n_batch - len(fed)
        chunks = 0
        for seq_id, seq in sorted(self._seqs.items(), key=lambda item: item[1].order):
            while seq.prefilling:
                start = len(seq.tokens)
                end = min(len(seq.prompt), (start // self._chunk + 1) * self._chunk)
                # A chunk is never cut to fit: past the budget it waits for the next step,
                # except the step's first, so prompts go on beside any number of streams.
                if chunks and end - start > budget:
                    return outputs
                chunks += 1
                batch.clear()
                for pos in range(start, end):
                    batch.add(seq.prompt[pos], pos, seq_id, pos == len(seq.prompt) - 1)
                outputs += self._decode([(seq, seq.prompt[start:end])])
                if end % self._chunk == 0 and seq.aligned == start:
                    seq.aligned = end
                budget -= end - start
        return outputs

    def _filler(self, seq_id: int) -> int | None:
        """Where a free slot between two streams can take a stand-in token (no logits, so it
        costs one row of the layers, not the vocabulary's), or None: the slot is prefilling
        (its chunk comes later in this step) or has no cell left."""
        if seq_id in self._seqs:
            return None
        pos = int(llama_cpp.llama_memory_seq_pos_max(self._memory, seq_id)) + 1
        return pos if pos < self._info.seq_capacity else None

    def _beside_lone(self, seq: _Seq) -> int | None:
        """Where a stream decoded alone takes a stand-in: its own next position (causally
        masked from its row, dropped after), or None if its stream has no cell there (never:
        a sequence does not decode its last token, so that cell is always free).

        Never a lone row: over 512 cells of cache and with more than one thread, llama.cpp's
        flash attention splits a lone row's cache into one part per thread and sums the
        parts (its split-KV path), where rows in company are summed whole; the stand-in keeps
        the row on their path, for a second row's cost (docs/PERFORMANCE.md)."""
        pos = len(seq.tokens) + 1
        return pos if pos < self._info.seq_capacity else None

    def _unfill(self, seq_id: int, pos: int) -> None:
        """Drops a stand-in's cell; the slot's cached prompt (or its stream) before it stays."""
        if not llama_cpp.llama_memory_seq_rm(self._memory, seq_id, pos, -1):
            log.warning("slot %d: could not drop a stand-in token; its cache is cleared", seq_id)
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            self._held.pop(seq_id, None)

    def _decode(
        self, fed: list[tuple[_Seq, Sequence[int]]], drafts: dict[int, Proposal] | None = None
    ) -> list[SeqOutput]:
        """Decodes the batch as filled for `fed` (and each stream's `drafts` after its
        token), then samples where logits were asked for.

        A draft is verified by the sequence's own sampler chain (grammar, penalties, bias,
        min_tokens, its seed): the token sampled after the stream's token is compared with
        the first draft token; while they agree the next row, decoded with that token
        before it, is sampled too. So every token is sampled exactly as without drafts, from
        the logits of the text before it; only how many come from one decode changes. The
        cells of the drafts not kept are dropped.
        """
        batch = self._batch
        if batch.raw.n_tokens == 0:
            return []
        started = time.perf_counter()
        status = llama_cpp.llama_decode(self._ctx, batch.raw)
        if status == 0 and len(batch.outputs) == batch.raw.n_tokens:  # no prompt chunk in it
            self._step_costs.observe(batch.raw.n_tokens, time.perf_counter() - started)
        if status != 0:
            for seq, _ in fed:
                seq.broken = True
            raise decode_error(status)
        for seq, tokens in fed:
            seq.tokens.extend(tokens)
        rows: dict[int, list[int]] = {}
        for seq_id, index in batch.outputs:
            rows.setdefault(seq_id, []).append(index)
        outputs: list[SeqOutput] = []
        for seq_id, indices in rows.items():
            outputs += self._sample_run(seq_id, indices, (drafts or {}).get(seq_id, Proposal()))
        return outputs

    def _sample_run(self, seq_id: int, indices: list[int], draft: Proposal) -> list[SeqOutput]:
        """Samples a sequence's rows in order while they follow its draft (see _decode)."""
        seq = self._seqs[seq_id]
        outputs: list[SeqOutput] = []
        for row, index in enumerate(indices):
            token, logprobs = seq.sampler.sample(self._ctx, index)
            eog = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
            piece = b"" if eog else self.token_piece(token)
            outputs.append(SeqOutput(seq_id, token, piece, eog, logprobs))
            seq.last = token
            if seq.drafter is not None:
                seq.drafter.sampled(token)
            if eog or row >= len(draft) or token != draft.tokens[row]:
                break
            seq.tokens.append(token)  # the draft's row decoded it: its cell is kept
        if draft:
            kept = len(outputs) - 1  # the last token sampled is never a draft's: it comes next
            self.drafted += len(draft)
            self.accepted += kept
            assert seq.drafter is not None
            seq.drafter.verified(draft, kept)
            if kept < len(draft):  # the rest of the draft's cells hold tokens not kept
                llama_cpp.llama_memory_seq_rm(self._memory, seq_id, len(seq.tokens), -1)
        return outputs

    def close(self) -> None:
        """Frees the sampler chains, the batch, the context, then the model (each needs the
        next). A second call does nothing."""
        if self._closed:
            return
        self._closed = True
        for seq_id in list(self._seqs):
            self.cancel(seq_id)
        llama_cpp.llama_batch_free(self._batch.raw)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)
