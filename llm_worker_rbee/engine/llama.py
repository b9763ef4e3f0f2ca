"""The llama.cpp engine on llama-cpp-python's low-level API: one llama_decode per step.

Each active sequence has its own llama.cpp sequence id (its slot) and its own sampler chain;
sampling runs in C over the full vocabulary, never in Python.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
from llama_cpp import _logger as llama_logger

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.base import EngineError, ModelInfo, SeqOutput
from llm_worker_rbee.messages.inference import SamplingParams

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """llama.cpp could not open the model or create a context."""


@dataclass
class _Seq:
    prompt: list[int]
    sampler: ctypes.c_void_p
    fed: int = 0  # prompt tokens already decoded
    last: int | None = None  # the token to feed next (sampled in the previous step)
    generated: int = 0
    order: int = 0

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.prompt)


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
    ) -> None:
        self._model = model
        self._ctx = ctx
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._n_batch = n_batch
        n_seq = llama_cpp.llama_n_seq_max(ctx)
        self._batch = _Batch(llama_cpp.llama_batch_init(n_batch, 0, 1), n_batch)
        self._seqs: dict[int, _Seq] = {}
        self._admitted = 0
        self._pieces: dict[int, bytes] = {}
        self._eog_tokens: list[int] | None = None
        n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        template = llama_cpp.llama_model_chat_template(model, None)
        self._info = ModelInfo(
            model_id=model_id,
            n_ctx=llama_cpp.llama_n_ctx(ctx),
            n_ctx_train=llama_cpp.llama_model_n_ctx_train(model),
            n_vocab=n_vocab,
            seq_capacity=llama_cpp.llama_n_ctx_seq(ctx),
            chat_template=template.decode("utf-8") if template else None,
            bos_text=self._special_text(llama_cpp.llama_vocab_bos(self._vocab)),
            eos_text=self._special_text(llama_cpp.llama_vocab_eos(self._vocab)),
        )
        self.n_seq_max = n_seq

    @classmethod
    def load(cls, path: Path, settings: Settings, model_id: str) -> LlamaEngine:
        """Opens the model and a context for `settings.slots` sequences.

        Raises:
            ModelLoadError: llama.cpp refused the file or the context.
        """
        llama_logger.set_verbose(settings.log_level == "debug")
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0 if settings.backend == "cpu" else -1
        model_params.main_gpu = settings.device
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not model:
            raise ModelLoadError(f"llama.cpp could not load {path}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = settings.ctx_size
        params.n_batch = settings.batch_size
        params.n_ubatch = min(settings.batch_size, 512)
        params.n_seq_max = settings.slots
        params.n_threads = settings.threads
        params.n_threads_batch = settings.threads
        params.kv_unified = False  # each slot gets ctx_size / slots cells of its own
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise ModelLoadError(f"llama.cpp could not create a context for {path}")
        return cls(model, ctx, model_id, settings.batch_size)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return bytes(llama_cpp.llama_vocab_get_text(self._vocab, token) or b"").decode(
            "utf-8", "replace"
        )

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            buffer = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buffer, size, add_special, False
            )
            if n >= 0:
                return list(buffer[:n])
            size = -n

    def token_piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buffer = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, 64, 0, False)
            if n < 0:
                buffer = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, -n, 0, False)
            piece = buffer.raw[:n]
            self._pieces[token] = piece
        return piece

    def _eog(self) -> list[int]:
        if self._eog_tokens is None:
            is_eog = llama_cpp.llama_vocab_is_eog
            self._eog_tokens = [t for t in range(self._info.n_vocab) if is_eog(self._vocab, t)]
        return self._eog_tokens

    def _sampler(self, sampling: SamplingParams, prompt: Sequence[int]) -> ctypes.c_void_p:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        bias = list(sampling.logit_bias)
        if sampling.ignore_eos:
            bias += [(t, float("-inf")) for t in self._eog()]
        if bias:
            array = (llama_cpp.llama_logit_bias * len(bias))()
            for i, (token, value) in enumerate(bias):
                array[i].token = token  # type: ignore[assignment]
                array[i].bias = value
            add(
                chain, llama_cpp.llama_sampler_init_logit_bias(self._info.n_vocab, len(bias), array)
            )
        penalised = (
            sampling.repeat_penalty != 1.0
            or sampling.presence_penalty != 0.0
            or sampling.frequency_penalty != 0.0
        )
        if penalised:
            add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    64,
                    sampling.repeat_penalty,
                    sampling.frequency_penalty,
                    sampling.presence_penalty,
                ),
            )
        if sampling.temperature <= 0.0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            if sampling.top_k > 0:
                add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
            add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
            add(chain, llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
            add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
            seed = (
                llama_cpp.LLAMA_DEFAULT_SEED
                if sampling.seed is None
                else sampling.seed & 0xFFFFFFFF
            )
            add(chain, llama_cpp.llama_sampler_init_dist(seed))
        if penalised:  # penalties look at the prompt too, as llama-server's do
            for token in prompt[-64:]:
                llama_cpp.llama_sampler_accept(chain, token)
        return chain  # type: ignore[no-any-return]

    def admit(self, seq_id: int, prompt: Sequence[int], sampling: SamplingParams) -> None:
        if seq_id in self._seqs:
            raise ValueError(f"sequence {seq_id} is already active")
        if not 0 <= seq_id < self.n_seq_max:
            raise ValueError(f"sequence {seq_id} is outside 0..{self.n_seq_max - 1}")
        if not prompt:
            raise ValueError("empty prompt")
        llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        self._admitted += 1
        self._seqs[seq_id] = _Seq(
            list(prompt), self._sampler(sampling, prompt), order=self._admitted
        )

    def cancel(self, seq_id: int) -> None:
        seq = self._seqs.pop(seq_id, None)
        if seq is not None:
            llama_cpp.llama_sampler_free(seq.sampler)
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)

    def has_work(self) -> bool:
        return bool(self._seqs)

    def step(self) -> list[SeqOutput]:
        batch = self._batch
        batch.clear()
        budget = self._n_batch
        # Running streams first, one token each, so a long prompt never stalls them.
        for seq_id, seq in self._seqs.items():
            if not seq.prefilling and seq.last is not None:
                batch.add(seq.last, len(seq.prompt) + seq.generated - 1, seq_id, True)
                budget -= 1
        for seq_id, seq in sorted(self._seqs.items(), key=lambda item: item[1].order):
            if budget <= 0:
                break
            if seq.prefilling:
                take = min(budget, len(seq.prompt) - seq.fed)
                for i in range(seq.fed, seq.fed + take):
                    batch.add(seq.prompt[i], i, seq_id, i == len(seq.prompt) - 1)
                seq.fed += take
                budget -= take
        if batch.raw.n_tokens == 0:
            return []
        status = llama_cpp.llama_decode(self._ctx, batch.raw)
        if status != 0:
            raise EngineError(f"llama_decode returned {status}")
        outputs: list[SeqOutput] = []
        for seq_id, index in batch.outputs:
            seq = self._seqs[seq_id]
            token = llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, index)
            seq.generated += 1
            seq.last = token
            eog = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
            outputs.append(SeqOutput(seq_id, token, b"" if eog else self.token_piece(token), eog))
        return outputs

    def close(self) -> None:
        for seq_id in list(self._seqs):
            self.cancel(seq_id)
        llama_cpp.llama_batch_free(self._batch.raw)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)
