"""Everything `serve` decides before llama.cpp loads: which file, which device, how many layers.

`plan_start` runs the checks in order (path, file, GPU, memory, llama.cpp's GPU offload)
and either returns a `StartPlan` or raises one `StartError` line; `serve` exits 3 with it
before anything is loaded. Every outside fact comes in as an argument (the GPU probe, the
environment, the RAM, llama.cpp's offload support), so tests drive it with fakes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llm_worker_rbee.config import DEFAULT_CTX_SIZE, Settings
from llm_worker_rbee.engine.ngram import DRAFT_ROWS
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.inspection.gguf_check import GgufError, GgufSummary, validate_gguf
from llm_worker_rbee.inspection.gpu import (
    GpuChoice,
    GpuError,
    GpuProbe,
    find_gpu,
    gib,
    pinned_environment,
)
from llm_worker_rbee.inspection.memory import (
    ContextShape,
    MemoryBudgetError,
    MemoryEstimate,
    ModelShape,
    check_ram,
    estimate,
    plan_offload,
)
from llm_worker_rbee.inspection.model_path import ModelPathError, ResolvedModel, resolve_model

_CUDA_BUILD_HINT = "reinstall llama-cpp-python with CMAKE_ARGS=-DGGML_CUDA=on"
# An automatic --ctx-size takes at most this share of the available RAM (the rest is the
# machine's: other workers, the page cache); an explicit one may take it all.
AUTO_CTX_RAM_SHARE = 0.5


class StartError(Exception):
    """The worker cannot start with these settings; one line, exit code 3."""


@dataclass(frozen=True)
class StartPlan:
    model: ResolvedModel
    summary: GgufSummary
    backend: Literal["cpu", "cuda"]
    gpu: GpuChoice | None
    n_gpu_layers: int
    estimate: MemoryEstimate
    environ: dict[str, str]  # set before llama.cpp starts CUDA
    notes: tuple[str, ...]  # what was chosen and why, for the log
    ctx_size: int = DEFAULT_CTX_SIZE  # --ctx-size, or what auto resolved to

    def apply(self, settings: Settings) -> Settings:
        """The settings the engine loads with: backend, device, layer count and context
        size resolved.

        The device becomes 0: `environ` shows llama.cpp the chosen GPU only.
        """
        return settings.model_copy(
            update={
                "backend": self.backend,
                "device": 0,
                "gpu_layers": self.n_gpu_layers,
                "ctx_size": self.ctx_size,
            }
        )


def context_of(settings: Settings) -> ContextShape:
    return ContextShape(
        settings.ctx_tokens,
        settings.slots,
        settings.batch_size,
        kv_unified=not settings.batch_invariant,
        draft_rows=DRAFT_ROWS if settings.drafting else 0,
    )


def auto_ctx_size(
    shape: ModelShape,
    settings: Settings,
    *,
    ram: int,
    gpu_free: int | None,
) -> tuple[int, str]:
    """`--ctx-size` when not given: the model's trained context, halved until it fits the
    memory budget, never under DEFAULT_CTX_SIZE; and why, for the log.

    The budget: AUTO_CTX_RAM_SHARE of the available RAM for the CPU part and, when a GPU
    was found, its free memory with every layer offloaded (`--gpu-layers auto|all`) or the
    given count. What then does not fit at DEFAULT_CTX_SIZE is the usual checks' to refuse.
    """
    trained = shape.n_ctx_train if shape.n_ctx_train > 0 else DEFAULT_CTX_SIZE
    ctx = min(trained, 1 << 20)
    layers = 0
    if gpu_free is not None:
        count = settings.gpu_layers
        layers = count if isinstance(count, int) else shape.all_layers

    def fits(size: int) -> bool:
        context = context_of(settings.model_copy(update={"ctx_size": size}))
        need = estimate(shape, context, layers)
        on_gpu = gpu_free is None or need.gpu_total <= gpu_free
        return on_gpu and need.cpu_total <= ram * AUTO_CTX_RAM_SHARE

    while ctx > DEFAULT_CTX_SIZE and not fits(ctx):
        ctx = max(ctx // 2, DEFAULT_CTX_SIZE)
    if ctx == trained:
        return ctx, f"--ctx-size auto: {ctx}, the model's trained context"
    if ctx > trained:  # a model trained on less than the floor
        return ctx, f"--ctx-size auto: {ctx} (the model was trained on {trained})"
    return ctx, f"--ctx-size auto: {ctx} of the trained {trained}, for the memory budget"


def plan_start(
    settings: Settings,
    *,
    probe: GpuProbe,
    environ: Mapping[str, str],
    offload_supported: Callable[[Mapping[str, str]], bool],
    ram_available: Callable[[], int],
    architectures: Collection[str] | None = None,
    bundled: Callable[[], Path] = bundled_model_path,
) -> StartPlan:
    """Resolves, validates and places the model, or says in one line why it cannot.

    Args:
        probe: the GPU probe (NVML; a fake in tests).
        environ: the process environment (CUDA_VISIBLE_DEVICES).
        offload_supported: given the environment that pins the chosen GPU, whether
            llama.cpp can offload to it; called only when a GPU was found and fits.
        ram_available: bytes of RAM the process may use.
        architectures: what llama.cpp supports (None: read from the library).

    Raises:
        StartError: a bad model path or file, an unusable `--backend cuda`, or a model
            that does not fit the GPU (`--gpu-layers all|N`) or the RAM.
    """
    try:
        model = resolve_model(
            settings.model, settings.model_ref, settings.models_dir, bundled=bundled
        )
        summary = validate_gguf(model.path, architectures)
        finding = find_gpu(settings.backend, settings.device, probe, environ)
    except (ModelPathError, GgufError, GpuError) as exc:
        raise StartError(str(exc)) from None
    shape = ModelShape.from_gguf(summary)
    notes = [f"model: {model.path} ({model.source}), {summary.architecture}"]
    gpu, reason = finding.gpu, finding.reason
    if settings.ctx_size is None:
        gpu_free = gpu.device.free_bytes if gpu is not None else None
        ctx_size, why = auto_ctx_size(shape, settings, ram=ram_available(), gpu_free=gpu_free)
        settings = settings.model_copy(update={"ctx_size": ctx_size})
        notes.append(why)
    context = context_of(settings)
    need = estimate(shape, context, 0)
    n_layers = 0
    if gpu is not None:
        try:
            plan = plan_offload(shape, context, settings.gpu_layers, gpu.device.free_bytes)
        except MemoryBudgetError as exc:
            raise StartError(f"{gpu.device.describe()}: {exc}") from None
        if plan.n_gpu_layers == 0:
            reason = f"{gpu.device.describe()}: {plan.reason}"
            gpu = None
        elif not offload_supported(pinned_environment(gpu)):
            reason = "the installed llama.cpp was built without GPU offload"
            if settings.backend == "cuda":
                raise StartError(f"--backend cuda: {reason} ({_CUDA_BUILD_HINT})")
            gpu = None
        else:
            n_layers, need, reason = plan.n_gpu_layers, plan.estimate, plan.reason
            notes.append(f"GPU: {gpu.device.describe()}")
    if gpu is None and settings.backend == "cuda":
        raise StartError(f"--backend cuda: {reason}")
    backend: Literal["cpu", "cuda"] = "cuda" if gpu is not None else "cpu"
    notes.append(f"backend: {backend} ({reason})")
    try:
        check_ram(need, ram_available(), context)
    except MemoryBudgetError as exc:
        raise StartError(str(exc)) from None
    on_gpu = f"GPU {gib(need.gpu_total)} ({n_layers} of {shape.all_layers} layers), " if gpu else ""
    notes.append(
        f"memory: {on_gpu}RAM {gib(need.cpu_total)} "
        f"for {settings.ctx_tokens} context tokens in {settings.slots} slots"
    )
    return StartPlan(
        model,
        summary,
        backend,
        gpu,
        n_layers,
        need,
        pinned_environment(gpu),
        tuple(notes),
        settings.ctx_tokens,
    )


# Asked only once a GPU was found (tests pass a fake): it runs on GPU machines only.
def llama_offload_supported(pin: Mapping[str, str]) -> bool:  # pragma: no cover
    """Pins CUDA to the chosen GPU in this process, then asks llama.cpp if it can offload.

    The environment must be set first: llama.cpp starts CUDA on this first question, and
    CUDA reads CUDA_VISIBLE_DEVICES once.
    """
    os.environ.update(pin)
    import llama_cpp  # only after the pin: CUDA reads the environment when it starts

    return bool(llama_cpp.llama_supports_gpu_offload())
