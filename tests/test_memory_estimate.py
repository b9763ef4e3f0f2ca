"""The memory estimate: its arithmetic, the layer split, and llama.cpp's own numbers."""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import pytest
from llama_cpp import _logger as llama_logger

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.ngram import DRAFT_ROWS
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.inspection.gguf_check import read_gguf
from llm_worker_rbee.inspection.memory import (
    CUDA_CONTEXT_BYTES,
    ContextShape,
    MemoryBudgetError,
    ModelShape,
    available_ram,
    check_ram,
    estimate,
    plan_offload,
)
from tests.gguf_factory import write_model

MiB = 1 << 20


@pytest.fixture(scope="module")
def gemma() -> ModelShape:
    return ModelShape.from_gguf(read_gguf(bundled_model_path()))


# -- what llama.cpp itself reports -----------------------------------------------------------


@dataclass(frozen=True)
class Reported:
    """llama.cpp's buffer sizes for one context, from its own log lines (bytes)."""

    model_size: int  # llama_model_size: every weight tensor
    model_buffers: int  # CPU_Mapped + CPU_REPACK
    kv: int
    compute: int
    output: int

    @property
    def total(self) -> int:
        return self.model_buffers + self.kv + self.compute + self.output


def _mib(pattern: str, log: str) -> int:
    return round(
        sum(float(v) for v in re.findall(pattern + r" buffer size =\s+([\d.]+) MiB", log)) * MiB
    )


@pytest.fixture(scope="module")
def llama_reports() -> Iterator[dict[tuple[int, int, int, bool], Reported]]:
    """Loads the bundled model through the engine for each context, capturing llama.cpp's log.

    The log is llama.cpp's own account of what it allocated: the model's buffers, each KV
    cache (the full-size SWA one and the other), the compute graph and the logits. Process
    RSS is no measure here: llama.cpp maps the weights and the compute buffer is not touched
    until the first decode.
    """
    from llm_worker_rbee.engine.llama import LlamaEngine

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    reports: dict[tuple[int, int, int, bool], Reported] = {}
    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        model = llama_cpp.llama_model_load_from_file(str(bundled_model_path()).encode(), params)
        model_size = int(llama_cpp.llama_model_size(model))
        llama_cpp.llama_model_free(model)
        for ctx_size, slots, batch, exact in CONTEXTS:
            lines.clear()
            settings = Settings(
                backend="cpu",
                ctx_size=ctx_size,
                slots=slots,
                batch_size=batch,
                threads=2,
                batch_invariant=exact,
            )
            engine = LlamaEngine.load(bundled_model_path(), settings, "gemma")
            try:
                log = "".join(lines)
                reports[(ctx_size, slots, batch, exact)] = Reported(
                    model_size=model_size,
                    model_buffers=_mib(r"CPU\w* model", log),
                    kv=_mib("KV", log),
                    compute=_mib("compute", log),
                    output=_mib("output", log),
                )
            finally:
                engine.close()
    finally:
        llama_cpp.llama_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))
    yield reports


# (ctx_size, slots, batch_size, --batch-invariant): the shared pool, and per-slot streams.
CONTEXTS = [
    (4096, 4, 512, False),
    (2048, 2, 256, False),
    (4000, 3, 512, False),
    (32768, 4, 512, False),
    (16384, 64, 512, False),
    (4096, 4, 512, True),
    (4000, 3, 512, True),
    (32768, 1, 128, True),
]


def within(estimated: int, reported: int, tolerance: float = 0.15) -> bool:
    return abs(estimated - reported) <= tolerance * reported


@pytest.mark.real_model
@pytest.mark.parametrize(("ctx_size", "slots", "batch", "exact"), CONTEXTS)
@pytest.mark.behavior("LOAD-011", "INF-047")
def test_estimate_matches_what_llama_cpp_allocates(
    gemma: ModelShape,
    llama_reports: dict[tuple[int, int, int, bool], Reported],
    ctx_size: int,
    slots: int,
    batch: int,
    exact: bool,
) -> None:
    reported = llama_reports[(ctx_size, slots, batch, exact)]
    # The default n-gram speculation (both modes) reserves DRAFT_ROWS more rows of logits.
    drafts = DRAFT_ROWS
    shape = ContextShape(ctx_size, slots, batch, kv_unified=not exact, draft_rows=drafts)
    need = estimate(gemma, shape, 0)
    print(
        f"\nctx {ctx_size} slots {slots} batch {batch} exact {exact}: estimate / llama.cpp (MiB) "
        f"weights {need.weights_cpu / MiB:.2f} / {reported.model_buffers / MiB:.2f}, "
        f"KV {need.kv_cpu / MiB:.2f} / {reported.kv / MiB:.2f}, "
        f"compute {need.compute_cpu / MiB:.2f} / {reported.compute / MiB:.2f}, "
        f"output {need.output_cpu / MiB:.2f} / {reported.output / MiB:.2f}, "
        f"total {need.cpu_total / MiB:.2f} / {reported.total / MiB:.2f}"
    )
    assert need.weights_cpu == reported.model_size  # the same tensors, to the byte
    # No CPU_REPACK buffer beside the mapped weights, in either mode (to the log's 0.01 MiB).
    assert abs(reported.model_buffers - reported.model_size) < MiB / 100
    assert within(need.kv_cpu, reported.kv, 0.01)
    assert within(need.compute_cpu, reported.compute)
    # llama.cpp reserves the output buffer at load for a row per sequence and grows it when
    # a step asks for more rows (the drafts'): the estimate counts that peak.
    grown = drafts * gemma.n_vocab * 4
    assert within(need.output_cpu, reported.output + grown, 0.01)
    assert within(need.cpu_total, reported.total + grown)


# -- the arithmetic --------------------------------------------------------------------------


@pytest.mark.behavior("LOAD-010")
def test_gemma_shape_from_its_gguf(gemma: ModelShape) -> None:
    assert (gemma.architecture, gemma.n_layer, gemma.n_embd, gemma.n_vocab) == (
        "gemma3",
        18,
        640,
        262_144,
    )
    assert (gemma.n_head, gemma.n_head_kv[0], gemma.head_k, gemma.head_v) == (4, 1, 256, 256)
    # llama.cpp logs "is_swa = 0" for layers 5, 11 and 17 only (pattern 6).
    assert [i for i, swa in enumerate(gemma.swa_layers) if not swa] == [5, 11, 17]
    assert gemma.output_tied and gemma.output_moved == 640 * 4  # only output_norm leaves
    assert gemma.total_bytes == 246_587_904 and gemma.all_layers == 19


@pytest.mark.parametrize(
    ("ctx_size", "slots", "per_slot"),
    [(4096, 4, 1024), (4000, 3, 1536), (100, 4, 256), (1000, 1, 1024), (300, 1, 512)],
)
@pytest.mark.behavior("LOAD-010")
def test_cells_round_up_to_256_per_slot(ctx_size: int, slots: int, per_slot: int) -> None:
    # As llama.cpp: n_ctx 4000 with 3 sequences becomes 4608 cells, 1536 each.
    assert ContextShape(ctx_size, slots).cells_per_slot == per_slot
    # One pool (fast mode): the whole context, rounded up once.
    pool = ContextShape(ctx_size, slots, kv_unified=True)
    assert pool.cells_per_slot == pool.cells(False, 0) == -(-ctx_size // 256) * 256


@pytest.mark.behavior("LOAD-010")
def test_kv_cache_sizes(gemma: ModelShape) -> None:
    # 18 layers x 4096 cells x 1 KV head x (256 + 256) x 2 bytes (f16) = 72 MiB
    assert estimate(gemma, ContextShape(4096, 4)).kv_total == 72 * MiB
    assert estimate(gemma, ContextShape(4096, 4, cache_type="q8_0")).kv_total == 72 * MiB * 34 // 64
    # Without the full-size SWA cache, llama.cpp gives sliding layers n_swa + n_ubatch cells
    # per slot (rounded to 256): at 8192/4 it logs 24 MiB for 3 full layers, 60 for 15 SWA.
    small = ContextShape(8192, 4, swa_full=False)
    assert estimate(gemma, small).kv_total == (24 + 60) * MiB


@pytest.mark.behavior("LOAD-010")
def test_compute_follows_the_micro_batch(gemma: ModelShape) -> None:
    def compute(ctx: int, batch: int) -> int:
        return estimate(gemma, ContextShape(ctx, 1, batch)).compute_cpu

    # The FFN's peak (f32) plus two f16 masks (SWA and full) over a slot's cells.
    assert compute(4096, 512) == 512 * 4 * (2 * 640 + 4 * 2048) + 512 * 4096 * 2 * 2
    assert compute(4096, 2048) == compute(4096, 512)  # n_ubatch is at most 512
    assert compute(300, 512) == 300 * 4 * (2 * 640 + 4 * 2048) + 300 * 512 * 2 * 2
    # Many slots: one row of logits each outgrows the FFN.
    many = estimate(gemma, ContextShape(16384, 64), 0)
    assert many.compute_cpu == 64 * 4 * (262_144 + 2 * 640)  # the masks are gone by then
    assert many.output_cpu == 64 * 4 * 262_144


@pytest.mark.behavior("LOAD-010")
def test_layers_split_between_gpu_and_cpu(gemma: ModelShape) -> None:
    context = ContextShape(4096, 4)
    cpu = estimate(gemma, context, 0)
    assert (cpu.weights_gpu, cpu.kv_gpu, cpu.compute_gpu, cpu.cuda_context) == (0, 0, 0, 0)
    half = estimate(gemma, context, 10)
    assert half.weights_gpu == sum(gemma.layer_bytes[8:])  # the last 10 layers
    assert half.weights_gpu + half.weights_cpu == gemma.total_bytes
    assert (half.kv_gpu, half.kv_cpu) == (40 * MiB, 32 * MiB)
    assert half.compute_cpu == cpu.compute_cpu  # the logits stay on the CPU
    assert half.compute_gpu > gemma.largest_matrix  # room to stage a CPU weight
    full = estimate(gemma, context, 19)
    assert full.weights_gpu == sum(gemma.layer_bytes) + gemma.output_bytes
    assert full.weights_cpu == gemma.total_bytes - sum(gemma.layer_bytes) - 640 * 4
    assert full.kv_cpu == 0 and full.cuda_context == CUDA_CONTEXT_BYTES
    assert estimate(gemma, context, 999) == full and estimate(gemma, context, -1) == cpu


@pytest.mark.behavior("LOAD-010")
def test_untied_output_moves_to_the_gpu(tmp_path: Path) -> None:
    shape = ModelShape.from_gguf(read_gguf(write_model(tmp_path / "m.gguf")))
    tied = ModelShape.from_gguf(read_gguf(write_model(tmp_path / "t.gguf", tied=True)))
    context = ContextShape(256, 1)
    assert not shape.output_tied and shape.output_moved == shape.output_bytes
    assert estimate(shape, context, 3).weights_cpu == 96 * 64 * 4  # token_embd only
    assert tied.output_tied and tied.output_bytes == 64 * 4 + 96 * 64 * 4
    assert estimate(tied, context, 3).weights_cpu == 96 * 64 * 4


@pytest.mark.behavior("LOAD-010")
def test_per_layer_kv_heads(tmp_path: Path) -> None:
    shape = ModelShape.from_gguf(read_gguf(write_model(tmp_path / "m.gguf", n_head_kv=[1, 3])))
    assert shape.n_head_kv == (1, 3) and shape.head_k == 16
    need = estimate(shape, ContextShape(256, 1), 0)
    assert need.kv_total == 256 * (1 + 3) * (16 + 16) * 2


@pytest.mark.behavior("LOAD-010")
def test_auto_offloads_the_most_layers_that_fit(gemma: ModelShape) -> None:
    context = ContextShape(4096, 4)
    seven = estimate(gemma, context, 7).gpu_total
    assert plan_offload(gemma, context, "auto", seven).n_gpu_layers == 7
    assert plan_offload(gemma, context, "auto", seven - 1).n_gpu_layers == 6
    everything = plan_offload(gemma, context, "auto", 80 << 30)
    assert everything.n_gpu_layers == 19 and everything.reason.startswith(
        "--gpu-layers auto: every layer fit (0.82 GiB (weights 0.23 GiB"
    )
    nothing = plan_offload(gemma, context, "auto", 100 * MiB)
    assert nothing.n_gpu_layers == 0 and nothing.estimate == estimate(gemma, context, 0)
    assert nothing.reason == "not one layer fits: one needs 0.69 GiB, 0.10 GiB free"


@pytest.mark.behavior("LOAD-010")
def test_all_or_a_count_that_does_not_fit_is_refused(gemma: ModelShape) -> None:
    context = ContextShape(32768, 1)
    with pytest.raises(MemoryBudgetError) as caught:
        plan_offload(gemma, context, "all", 1 << 30)
    assert str(caught.value) == (
        "--gpu-layers all: 19 of 19 layers at --ctx-size 32768 need 1.37 GiB (weights 0.23 GiB, "
        "KV cache 0.56 GiB, compute 0.08 GiB, CUDA 0.50 GiB) but the GPU has 1.00 GiB free; "
        "try --gpu-layers auto or a smaller --ctx-size"
    )
    with pytest.raises(MemoryBudgetError, match=r"^--gpu-layers 12: 12 of 19 layers"):
        plan_offload(gemma, context, 12, 1 << 30)
    assert plan_offload(gemma, context, 40, 80 << 30).n_gpu_layers == 19


@pytest.mark.behavior("LOAD-010")
def test_ram_check(gemma: ModelShape) -> None:
    context = ContextShape(4096, 4)
    need = estimate(gemma, context, 0)
    check_ram(need, need.cpu_total, context)
    with pytest.raises(MemoryBudgetError, match=r"needs 0\.32 GiB .* of RAM but 0\.25 GiB is"):
        check_ram(need, 256 * MiB, context)


@pytest.mark.behavior("LOAD-010")
def test_available_ram_reads_meminfo_and_the_cgroup_limit(tmp_path: Path) -> None:
    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    proc.mkdir()
    cgroup.mkdir()
    (proc / "meminfo").write_text("MemTotal: 32000000 kB\nMemAvailable: 16000000 kB\n")
    assert available_ram(proc, cgroup) == 16_000_000 * 1024  # no cgroup files
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text("1000\n")
    assert available_ram(proc, cgroup) == 16_000_000 * 1024
    (cgroup / "memory.max").write_text(f"{4 << 30}\n")
    (cgroup / "memory.current").write_text(f"{1 << 30}\n")
    assert available_ram(proc, cgroup) == 3 << 30
    assert available_ram(tmp_path / "none", tmp_path / "none") > 0  # sysconf fallback
