"""How much memory a model needs where, estimated from its GGUF before anything is spent.

The figures follow what llama.cpp allocates (checked against its own buffer sizes for the
bundled model in tests/test_memory_estimate.py):

- **weights**: the tensor sizes per layer. `n_gpu_layers` counts from the last layer, as
  llama.cpp does; `n_layer + 1` also puts the output layer on the GPU. A model without an
  `output.weight` (tied embeddings, like Gemma) gets a GPU copy of `token_embd` then. The
  input embeddings always stay on the CPU.
- **KV cache**: per layer, cells x KV heads x (key + value head size) x cache type size.
  Fast mode (`kv_unified=true`): one pool of `ctx_size` cells, rounded up to 256. With
  `--batch-invariant` (`kv_unified=false`) each of the `slots` streams has
  `ctx_size / slots` cells, rounded up to 256. Sliding-window layers (Gemma 3: five in six)
  would need fewer cells, but llama.cpp's default `swa_full=true` ("using full-size SWA
  cache") gives them full size, so they are counted in full.
- **compute**: llama.cpp reserves its graph for a full micro-batch (`n_ubatch` tokens). The
  engine asks for one row of logits per slot (`n_outputs_max = slots`, plus `DRAFT_ROWS` for
  n-gram drafts in the fast mode), so the graph peaks
  at the larger of the FFN's activations (`n_ubatch x (4 n_ff + 2 n_embd)` f32) with the
  f16 attention masks beside them (`n_ubatch` x the cells of a stream: the whole pool in
  fast mode; one per cache, two for sliding-window models) and the logits (`slots x
  n_vocab` f32), which come after the masks are freed.
  Flash attention (llama.cpp's `auto`) is assumed, so no `n_ubatch x cells` attention
  scores are counted.
- **CUDA context**: a fixed allowance for the CUDA runtime and cuBLAS in our process, which
  NVML's free memory does not yet show.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import gguf

from llm_worker_rbee.inspection.gguf_check import ArrayValue, GgufSummary, TensorInfo
from llm_worker_rbee.inspection.gpu import gib

CUDA_CONTEXT_BYTES = 512 << 20
"""The CUDA runtime, cuBLAS handles and kernels of one process (300-500 MiB measured on
recent drivers); bench/gpu_memory.py measures it on a real device."""

CACHE_TYPES: dict[str, gguf.GGMLQuantizationType] = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
}
# Which layers use sliding-window attention, for models whose GGUF does not say:
# layer i is SWA unless (i + 1) % pattern == 0 (llama.cpp's `set_swa_pattern`).
_SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "cohere2": 4}
_LAYER = re.compile(r"blk\.(\d+)\.")
_OUTPUT_LAYER = ("output.weight", "output.bias", "output_norm.weight", "output_norm.bias")
_MAX_UBATCH = 512  # the engine's n_ubatch = min(batch_size, 512)


class MemoryBudgetError(Exception):
    """The model does not fit where it was asked to go; the message gives the numbers."""


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs from a GGUF file."""

    architecture: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: tuple[int, ...]  # per layer
    head_k: int
    head_v: int
    n_vocab: int
    n_ctx_train: int
    n_swa: int
    swa_layers: tuple[bool, ...]  # per layer
    layer_bytes: tuple[int, ...]  # weights per repeating layer
    output_bytes: int  # what the output layer puts on the GPU (a copy of token_embd if tied)
    output_moved: int  # what it takes off the CPU (a tied token_embd stays there too)
    output_tied: bool
    total_bytes: int  # every tensor in the file
    largest_matrix: int  # the largest single tensor: what op offload may stage on the GPU

    @classmethod
    def from_gguf(cls, summary: GgufSummary) -> ModelShape:
        arch = summary.arch_key
        n_layer = int(arch("block_count"))
        n_embd = int(arch("embedding_length"))
        n_head_layers = _per_layer(arch("attention.head_count", 0), n_layer)
        n_head = max(n_head_layers) if n_head_layers else 0
        kv_default = arch("attention.head_count_kv", arch("attention.head_count", 0))
        n_head_kv = _per_layer(kv_default, n_layer)
        head_k = int(arch("attention.key_length", n_embd // n_head if n_head else 0))
        head_v = int(arch("attention.value_length", head_k))
        n_swa = int(arch("attention.sliding_window", 0))
        by_name = {t.name: t for t in summary.tensors}
        layers = [0] * n_layer
        for tensor in summary.tensors:
            match = _LAYER.match(tensor.name)
            if match and int(match.group(1)) < n_layer:
                layers[int(match.group(1))] += tensor.n_bytes
        tied = "output.weight" not in by_name
        moved = sum(by_name[n].n_bytes for n in _OUTPUT_LAYER if n in by_name)
        embd = by_name.get("token_embd.weight")
        copied = embd.n_bytes if tied and embd is not None else 0
        return cls(
            architecture=summary.architecture,
            n_layer=n_layer,
            n_embd=n_embd,
            n_ff=max(_per_layer(arch("feed_forward_length", 0), n_layer), default=0),
            n_head=n_head,
            n_head_kv=tuple(n_head_kv),
            head_k=head_k,
            head_v=head_v,
            n_vocab=_n_vocab(summary, by_name),
            n_ctx_train=int(arch("context_length", 0)),
            n_swa=n_swa,
            swa_layers=_swa_layers(summary, n_layer, n_swa),
            layer_bytes=tuple(layers),
            output_bytes=moved + copied,
            output_moved=moved,
            output_tied=tied,
            total_bytes=sum(t.n_bytes for t in summary.tensors),
            largest_matrix=max(t.n_bytes for t in summary.tensors),
        )

    @property
    def all_layers(self) -> int:
        """llama.cpp's `n_gpu_layers` that offloads everything: the layers and the output."""
        return self.n_layer + 1


def _per_layer(value: Any, n_layer: int) -> list[int]:
    if isinstance(value, ArrayValue):
        values = [int(v) for v in value.values or ()]
        return values[:n_layer] + [values[-1] if values else 0] * (n_layer - len(values))
    return [int(value)] * n_layer


def _n_vocab(summary: GgufSummary, by_name: Mapping[str, TensorInfo]) -> int:
    size = summary.arch_key("vocab_size")
    if isinstance(size, int):
        return size
    tokens = summary.get("tokenizer.ggml.tokens")
    if isinstance(tokens, ArrayValue):
        return tokens.count
    embd = by_name.get("token_embd.weight")
    return embd.shape[-1] if embd is not None else 0


def _swa_layers(summary: GgufSummary, n_layer: int, n_swa: int) -> tuple[bool, ...]:
    if n_swa <= 0:
        return (False,) * n_layer
    pattern = summary.arch_key("attention.sliding_window_pattern")
    if isinstance(pattern, ArrayValue) and pattern.values:
        return tuple(bool(v) for v in _per_layer(pattern, n_layer))
    every = pattern if isinstance(pattern, int) else _SWA_PATTERNS.get(summary.architecture)
    if not every:  # unknown: count every layer as full attention (never under-estimates)
        return (False,) * n_layer
    return tuple((i + 1) % every != 0 for i in range(n_layer))


@dataclass(frozen=True)
class ContextShape:
    """The context the engine creates: `LlamaEngine.load`'s parameters."""

    ctx_size: int
    slots: int
    batch_size: int = 512
    cache_type: str = "f16"
    swa_full: bool = True  # llama.cpp's default, which the engine keeps
    outputs_per_slot: int = 1  # the engine asks for one row of logits per sequence
    kv_unified: bool = False  # one pool for every slot (fast mode) or a stream per slot
    draft_rows: int = 0  # more rows of logits for n-gram drafts (engine/ngram.py)

    @property
    def outputs(self) -> int:
        """Rows of logits the graph is reserved for (the engine's `n_outputs_max`)."""
        return min(self.slots * self.outputs_per_slot + self.draft_rows, self.ubatch_tokens)

    @property
    def streams(self) -> int:
        """KV streams: one shared pool, or one per slot."""
        return 1 if self.kv_unified else self.slots

    @property
    def cells_per_slot(self) -> int:
        """Cells of one stream (the whole pool when unified); llama.cpp rounds each up to a
        multiple of 256."""
        return -(-(self.ctx_size // self.streams) // 256) * 256

    @property
    def ubatch_tokens(self) -> int:
        """Tokens the compute graph is reserved for (llama.cpp caps n_batch at n_ctx)."""
        return min(self.batch_size, _MAX_UBATCH, self.ctx_size)

    def cells(self, swa: bool, n_swa: int) -> int:
        per_stream = self.cells_per_slot
        if swa and not self.swa_full:
            window = n_swa * (self.slots if self.kv_unified else 1) + self.ubatch_tokens
            per_stream = min(per_stream, -(-window // 256) * 256)
        return per_stream * self.streams

    def cache_bytes(self, elements: int) -> int:
        block, size = gguf.GGML_QUANT_SIZES[CACHE_TYPES[self.cache_type]]
        return -(-elements // block) * size


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed on the GPU and in RAM for one `n_gpu_layers` choice."""

    n_gpu_layers: int
    weights_gpu: int
    weights_cpu: int
    kv_gpu: int
    kv_cpu: int
    compute_gpu: int
    compute_cpu: int
    output_cpu: int  # the logits llama.cpp hands back (host memory)
    cuda_context: int

    @property
    def gpu_total(self) -> int:
        return self.weights_gpu + self.kv_gpu + self.compute_gpu + self.cuda_context

    @property
    def cpu_total(self) -> int:
        return self.weights_cpu + self.kv_cpu + self.compute_cpu + self.output_cpu

    @property
    def kv_total(self) -> int:
        return self.kv_gpu + self.kv_cpu

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "gpu_total": self.gpu_total, "cpu_total": self.cpu_total}

    def describe_gpu(self) -> str:
        return (
            f"{gib(self.gpu_total)} (weights {gib(self.weights_gpu)}, KV cache "
            f"{gib(self.kv_gpu)}, compute {gib(self.compute_gpu)}, CUDA {gib(self.cuda_context)})"
        )

    def describe_cpu(self) -> str:
        return (
            f"{gib(self.cpu_total)} (weights {gib(self.weights_cpu)}, KV cache "
            f"{gib(self.kv_cpu)}, compute {gib(self.compute_cpu + self.output_cpu)})"
        )


def estimate(
    shape: ModelShape,
    context: ContextShape,
    n_gpu_layers: int = 0,
    *,
    cuda_context: int = CUDA_CONTEXT_BYTES,
) -> MemoryEstimate:
    """The memory one context of `context` needs with `n_gpu_layers` on the GPU.

    Args:
        n_gpu_layers: llama.cpp's count, from the last layer; `shape.all_layers` (or more)
            is everything including the output layer; 0 is the CPU only.
    """
    n = max(0, min(n_gpu_layers, shape.all_layers))
    first_gpu_layer = shape.n_layer - min(n, shape.n_layer)
    output_on_gpu = n > shape.n_layer
    kv_layers = [
        context.cells(shape.swa_layers[i], shape.n_swa)
        * context.cache_bytes(shape.n_head_kv[i] * (shape.head_k + shape.head_v))
        for i in range(shape.n_layer)
    ]
    layers_gpu = sum(shape.layer_bytes[first_gpu_layer:])
    weights_gpu = layers_gpu + (shape.output_bytes if output_on_gpu else 0)
    moved = layers_gpu + (shape.output_moved if output_on_gpu else 0)
    tokens = context.ubatch_tokens
    hidden = tokens * 4 * (2 * shape.n_embd + 4 * shape.n_ff)  # the FFN's peak, f32
    logits = context.outputs * 4 * (shape.n_vocab + 2 * shape.n_embd)  # the output's peak
    # One f16 attention mask per cache (sliding-window models have two) over a slot's cells.
    masks = tokens * context.cells_per_slot * 2 * (2 if any(shape.swa_layers) else 1)
    # The masks are freed before the output layer runs: they add to the layers' peak only.
    graph = max(hidden + masks, logits)
    if n == 0:
        compute_gpu, compute_cpu = 0, graph
    elif output_on_gpu:
        compute_gpu, compute_cpu = graph, tokens * 4 * shape.n_embd
    else:  # split: the CPU computes the logits; big batches stage CPU weights on the GPU
        compute_gpu, compute_cpu = hidden + masks + shape.largest_matrix, graph
    return MemoryEstimate(
        n_gpu_layers=n,
        weights_gpu=weights_gpu,
        weights_cpu=shape.total_bytes - moved,
        kv_gpu=sum(kv_layers[first_gpu_layer:]),
        kv_cpu=sum(kv_layers[:first_gpu_layer]),
        compute_gpu=compute_gpu,
        compute_cpu=compute_cpu,
        output_cpu=shape.n_vocab * 4 * context.outputs,
        cuda_context=cuda_context if n > 0 else 0,
    )


GpuLayers = int | Literal["auto", "all"]


@dataclass(frozen=True)
class OffloadPlan:
    n_gpu_layers: int  # 0 when not one layer fits (auto only)
    estimate: MemoryEstimate
    reason: str


def plan_offload(
    shape: ModelShape,
    context: ContextShape,
    request: GpuLayers,
    free_bytes: int,
    *,
    cuda_context: int = CUDA_CONTEXT_BYTES,
) -> OffloadPlan:
    """How many layers go to a GPU with `free_bytes` free.

    `auto` takes the most that fit (possibly 0); `all` or a number that does not fit is
    refused with the numbers.

    Raises:
        MemoryBudgetError: `all` or `N` needs more than `free_bytes`.
    """
    if request == "auto":
        for n in range(shape.all_layers, 0, -1):
            need = estimate(shape, context, n, cuda_context=cuda_context)
            if need.gpu_total <= free_bytes:
                what = "every layer" if n == shape.all_layers else f"{n} of {shape.all_layers}"
                return OffloadPlan(
                    n, need, f"--gpu-layers auto: {what} fit ({need.describe_gpu()})"
                )
        need = estimate(shape, context, 1, cuda_context=cuda_context)
        return OffloadPlan(
            0,
            estimate(shape, context, 0),
            f"not one layer fits: one needs {gib(need.gpu_total)}, {gib(free_bytes)} free",
        )
    n = shape.all_layers if request == "all" else min(request, shape.all_layers)
    need = estimate(shape, context, n, cuda_context=cuda_context)
    if need.gpu_total > free_bytes:
        raise MemoryBudgetError(
            f"--gpu-layers {request}: {n} of {shape.all_layers} layers at --ctx-size "
            f"{context.ctx_size} need {need.describe_gpu()} but the GPU has "
            f"{gib(free_bytes)} free; try --gpu-layers auto or a smaller --ctx-size"
        )
    return OffloadPlan(n, need, f"--gpu-layers {request}: {need.describe_gpu()}")


def check_ram(need: MemoryEstimate, available: int, context: ContextShape) -> None:
    """Raises MemoryBudgetError when the CPU side does not fit in the available RAM."""
    if need.cpu_total > available:
        raise MemoryBudgetError(
            f"the model at --ctx-size {context.ctx_size} needs {need.describe_cpu()} of RAM "
            f"but {gib(available)} is available; try a smaller --ctx-size or another model"
        )


def available_ram(proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Bytes this process may still use: MemAvailable, capped by a cgroup v2 limit."""
    available = _meminfo_available(proc / "meminfo")
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        used = int((cgroup / "memory.current").read_text())
    except (OSError, ValueError):
        return available
    return available if limit == "max" else min(available, max(0, int(limit) - used))


def _meminfo_available(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
