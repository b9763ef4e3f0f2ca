"""The ceiling: a bare decode loop on llama.cpp's low-level API, in process, no HTTP.

N sequences, one llama_batch per step (all prompts together first, then one token each),
each sequence sampled in C with the same chain the servers get (top-k, top-p, min-p,
temperature, seeded dist, end-of-generation tokens banned). Nothing else: no actors, no
detokenization, no sockets. What this loop does per second is what any server on this
machine can at best hand out.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import llama_cpp
from llama_cpp import _logger as llama_logger

from bench.common import MAX_TOKENS, SAMPLING, Machine, prompt_for, slots_for


@dataclass(frozen=True)
class BareResult:
    sequences: int
    tokens: int
    wall_s: float
    prompt_s: float  # the first decode (every prompt) and the first sample
    decode_tps: float  # per sequence, after its first token

    @property
    def aggregate_tps(self) -> float:
        return self.tokens / self.wall_s


class _Model:
    def __init__(self, path: Path) -> None:
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        params.use_extra_bufts = False  # as the worker (batch-invariant kernels)
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)]
        self.n_vocab = n_vocab

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        buffer = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, len(buffer), True, False)
        return list(buffer[:n])

    def sampler(self, seed: int) -> ctypes.c_void_p:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        bias = (llama_cpp.llama_logit_bias * len(self.eog))()
        for i, token in enumerate(self.eog):
            bias[i].token = token  # type: ignore[assignment]
            bias[i].bias = float("-inf")
        add(chain, llama_cpp.llama_sampler_init_logit_bias(self.n_vocab, len(self.eog), bias))
        add(chain, llama_cpp.llama_sampler_init_top_k(int(SAMPLING["top_k"])))
        add(chain, llama_cpp.llama_sampler_init_top_p(SAMPLING["top_p"], 1))
        add(chain, llama_cpp.llama_sampler_init_min_p(SAMPLING["min_p"], 1))
        add(chain, llama_cpp.llama_sampler_init_temp(SAMPLING["temperature"]))
        add(chain, llama_cpp.llama_sampler_init_dist(seed))
        return chain  # type: ignore[no-any-return]

    def close(self) -> None:
        llama_cpp.llama_model_free(self.model)


def _context(model: _Model, machine: Machine, n_seq: int) -> llama_cpp.llama_context_p:
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = machine.ctx_size
    params.n_batch = 512
    params.n_ubatch = 512
    params.n_seq_max = n_seq
    params.n_outputs_max = n_seq  # as the worker: one row of logits per sequence and step
    params.n_outputs_max_per_seq = 1
    params.n_threads = machine.threads
    params.n_threads_batch = machine.threads
    params.kv_unified = not machine.batch_invariant  # as the worker in the same mode
    params.swa_full = True
    params.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model.model, params)
    if not ctx:
        raise RuntimeError("llama.cpp could not create a context")
    return ctx  # type: ignore[no-any-return]


def _run(model: _Model, machine: Machine, sequences: int) -> BareResult:
    ctx = _context(model, machine, slots_for(sequences))
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    prompts = [model.tokenize(prompt_for(i)) for i in range(sequences)]
    samplers = [model.sampler(1000 + i) for i in range(sequences)]

    def add(token: int, pos: int, seq: int, logits: bool) -> None:
        i = batch.n_tokens
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits
        batch.n_tokens = i + 1

    try:
        started = time.perf_counter()
        batch.n_tokens = 0
        outputs: list[int] = []
        for seq, tokens in enumerate(prompts):
            for pos, token in enumerate(tokens):
                add(token, pos, seq, pos == len(tokens) - 1)
            outputs.append(batch.n_tokens - 1)
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        last = [
            llama_cpp.llama_sampler_sample(samplers[s], ctx, outputs[s]) for s in range(sequences)
        ]
        first_token_at = time.perf_counter()
        for step in range(1, MAX_TOKENS):
            batch.n_tokens = 0
            for seq in range(sequences):
                add(last[seq], len(prompts[seq]) + step - 1, seq, True)
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            last = [llama_cpp.llama_sampler_sample(samplers[s], ctx, s) for s in range(sequences)]
        ended = time.perf_counter()
    finally:
        for sampler in samplers:
            llama_cpp.llama_sampler_free(sampler)
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
    return BareResult(
        sequences=sequences,
        tokens=sequences * MAX_TOKENS,
        wall_s=ended - started,
        prompt_s=first_token_at - started,
        decode_tps=(MAX_TOKENS - 1) / (ended - first_token_at),
    )


@contextmanager
def bare_loop(path: Path, machine: Machine) -> Iterator[Callable[[int], BareResult]]:
    """The model loaded once (and warmed up: weights paged in, kernels' caches built); yields
    a function that runs the bare loop over that many sequences."""
    llama_logger.set_verbose(False)
    model = _Model(path)
    try:
        _run(model, machine, 1)
        yield partial(_run, model, machine)
    finally:
        model.close()


@dataclass(frozen=True)
class ModelFacts:
    eog: list[int]  # end-of-generation tokens, banned so every stream runs MAX_TOKENS
    kv_bytes_per_token: int  # f16 K and V over every layer (full-size sliding windows)


def model_facts(path: Path) -> ModelFacts:
    llama_logger.set_verbose(False)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise RuntimeError(f"llama.cpp could not read {path}")
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]

        def meta(key: str) -> int:
            buffer = ctypes.create_string_buffer(64)
            arch = ctypes.create_string_buffer(64)
            llama_cpp.llama_model_meta_val_str(model, b"general.architecture", arch, 64)
            name = f"{arch.value.decode()}.{key}".encode()
            if llama_cpp.llama_model_meta_val_str(model, name, buffer, 64) < 0:
                raise RuntimeError(f"the model has no {name.decode()}")
            return int(buffer.value)

        per_layer = meta("attention.head_count_kv") * (
            meta("attention.key_length") + meta("attention.value_length")
        )
        return ModelFacts(eog=eog, kv_bytes_per_token=2 * per_layer * meta("block_count"))
    finally:
        llama_cpp.llama_model_free(model)
