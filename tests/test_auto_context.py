"""`--ctx-size` left out: the model's trained context, bounded by the memory budget."""

from __future__ import annotations

import pytest

from llm_worker_rbee.config import Settings
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.inspection.gguf_check import read_gguf
from llm_worker_rbee.inspection.memory import ModelShape, estimate
from llm_worker_rbee.inspection.preflight import StartPlan, auto_ctx_size, context_of, plan_start
from tests.test_gpu_probe import TWO, Offload

MiB = 1 << 20


@pytest.fixture(scope="module")
def gemma() -> ModelShape:
    return ModelShape.from_gguf(read_gguf(bundled_model_path()))


def ram_for(shape: ModelShape, ctx_size: int) -> int:
    """The least RAM with which the automatic context may be `ctx_size` on the CPU."""
    need = estimate(shape, context_of(Settings(ctx_size=ctx_size)), 0).cpu_total
    return 2 * need  # auto takes half the available RAM at most


@pytest.mark.behavior("CFG-035")
def test_the_trained_context_when_it_fits(gemma: ModelShape) -> None:
    assert gemma.n_ctx_train == 32768
    ctx, why = auto_ctx_size(gemma, Settings(), ram=ram_for(gemma, 32768), gpu_free=None)
    assert (ctx, why) == (32768, "--ctx-size auto: 32768, the model's trained context")


@pytest.mark.behavior("CFG-035")
def test_halved_until_it_fits_and_never_under_4096(gemma: ModelShape) -> None:
    ram = ram_for(gemma, 16384)
    assert auto_ctx_size(gemma, Settings(), ram=ram, gpu_free=None) == (
        16384,
        "--ctx-size auto: 16384 of the trained 32768, for the memory budget",
    )
    assert auto_ctx_size(gemma, Settings(), ram=ram - 1, gpu_free=None)[0] == 8192
    assert auto_ctx_size(gemma, Settings(), ram=MiB, gpu_free=None)[0] == 4096
    # On a GPU the layers' memory counts there, with every layer offloaded.
    on_gpu = estimate(gemma, context_of(Settings(ctx_size=8192)), gemma.all_layers).gpu_total
    assert auto_ctx_size(gemma, Settings(), ram=64 << 30, gpu_free=on_gpu)[0] == 8192


def plan(settings: Settings) -> StartPlan:
    return plan_start(
        settings,
        probe=TWO,
        environ={},
        offload_supported=Offload(),
        ram_available=lambda: 64 << 30,
        bundled=bundled_model_path,
    )


@pytest.mark.behavior("CFG-035")
def test_serve_resolves_auto_before_the_load_and_keeps_a_given_size() -> None:
    auto = plan(Settings(backend="cpu"))
    assert auto.ctx_size == 32768 and "--ctx-size auto: 32768" in " ".join(auto.notes)
    assert auto.apply(Settings(backend="cpu")).ctx_size == 32768
    given = plan(Settings(backend="cpu", ctx_size=2048))
    assert given.ctx_size == 2048 and "auto" not in " ".join(given.notes)
