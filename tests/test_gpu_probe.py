"""GPU choice with the fake probe: two GPUs, index and UUID, CUDA_VISIBLE_DEVICES, no driver,
not enough VRAM, no GPU offload in llama.cpp; and `--backend auto` saying what it chose."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from llm_worker_rbee.config import Settings, settings_from
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.inspection.gpu import (
    CUDA_VISIBLE,
    FakeGpuProbe,
    GpuDevice,
    GpuError,
    NoGpuDriver,
    NvmlProbe,
    find_gpu,
    pinned_environment,
    select_device,
    visible_devices,
)
from llm_worker_rbee.inspection.preflight import StartError, StartPlan, plan_start

GiB = 1 << 30
H100 = GpuDevice(0, "GPU-aaaa1111-0000-0000-0000-000000000000", "NVIDIA H100", 80 * GiB, 79 * GiB)
L4 = GpuDevice(1, "GPU-bbbb2222-0000-0000-0000-000000000000", "NVIDIA L4", 24 * GiB, 3 * GiB // 4)
TWO = FakeGpuProbe((H100, L4))
NO_DRIVER = FakeGpuProbe(driver_error="Driver Not Loaded")
BUNDLED = bundled_model_path()  # once: each call checks the file's sha256


def env(visible: str | None = None) -> dict[str, str]:
    return {} if visible is None else {CUDA_VISIBLE: visible}


# -- CUDA_VISIBLE_DEVICES --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("visible", "shown"),
    [
        (None, [H100, L4]),
        ("1", [L4]),
        ("1,0", [L4, H100]),
        (" 0 , 1 ", [H100, L4]),
        ("GPU-bbbb2222-0000-0000-0000-000000000000", [L4]),
        ("gpu-BBBB2222", [L4]),  # a unique UUID prefix, any case
        ("bbbb2222,0", [L4, H100]),  # UUID without the GPU- prefix
        ("GPU-", []),  # ambiguous: the list ends there
        ("0,7,1", [H100]),  # an invalid entry ends the list
        ("0,0,1", [H100]),  # so does a repeated one
        ("-1", []),
        ("", []),
    ],
)
@pytest.mark.behavior("LOAD-008")
def test_visible_devices(visible: str | None, shown: list[GpuDevice]) -> None:
    assert visible_devices((H100, L4), env(visible)) == shown


# -- --device --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "visible", "device", "index"),
    [
        (0, None, H100, 0),
        (1, None, L4, 1),
        ("GPU-bbbb2222-0000-0000-0000-000000000000", None, L4, 1),
        ("GPU-aaaa1111", None, H100, 0),
        (0, "1", L4, 0),  # index 0 among the visible ones
        ("GPU-aaaa1111", "1,0", H100, 1),
    ],
)
@pytest.mark.behavior("LOAD-008")
def test_select_by_index_and_uuid(
    spec: int | str, visible: str | None, device: GpuDevice, index: int
) -> None:
    choice = select_device(spec, (H100, L4), env(visible))
    assert (choice.device, choice.visible_index) == (device, index)


@pytest.mark.parametrize(
    ("spec", "visible", "message"),
    [
        (
            2,
            None,
            "--device 2: only 2 GPU(s) visible: 0=GPU-aaaa1111-0000-0000-0000-000000000000, "
            "1=GPU-bbbb2222-0000-0000-0000-000000000000",
        ),
        (
            1,
            "1",
            "--device 1: only 1 GPU(s) visible under CUDA_VISIBLE_DEVICES='1': "
            "0=GPU-bbbb2222-0000-0000-0000-000000000000",
        ),
        (
            "GPU-cccc",
            None,
            "--device GPU-cccc: no GPU has this UUID; visible: "
            "0=GPU-aaaa1111-0000-0000-0000-000000000000, "
            "1=GPU-bbbb2222-0000-0000-0000-000000000000",
        ),
        (
            "GPU-aaaa1111",
            "1",
            "--device GPU-aaaa1111: this GPU is hidden under CUDA_VISIBLE_DEVICES='1'; "
            "visible: 0=GPU-bbbb2222-0000-0000-0000-000000000000",
        ),
        (0, "", "--device 0: 2 GPU(s) exist but none is visible under CUDA_VISIBLE_DEVICES=''"),
    ],
)
@pytest.mark.behavior("LOAD-008")
def test_select_errors_list_what_is_visible(
    spec: int | str, visible: str | None, message: str
) -> None:
    with pytest.raises(GpuError) as caught:
        select_device(spec, (H100, L4), env(visible))
    assert str(caught.value) == message


@pytest.mark.behavior("LOAD-007")
def test_find_gpu_with_cuda_refuses_what_auto_explains() -> None:
    with pytest.raises(GpuError) as caught:
        find_gpu("cuda", 0, NO_DRIVER, {})
    assert str(caught.value) == "--backend cuda: no NVIDIA driver (NVML: Driver Not Loaded)"
    finding = find_gpu("auto", 0, NO_DRIVER, {})
    assert finding.gpu is None and finding.reason == "no NVIDIA driver (NVML: Driver Not Loaded)"
    with pytest.raises(GpuError, match="no GPU found, none is visible"):
        find_gpu("cuda", 0, FakeGpuProbe(()), {})


@pytest.mark.behavior("LOAD-007")
def test_cpu_does_not_ask_nvml() -> None:
    class Refusing:
        def devices(self) -> Sequence[GpuDevice]:
            raise AssertionError("NVML asked for --backend cpu")

    assert find_gpu("cpu", 0, Refusing(), {}).reason == "--backend cpu"


@pytest.mark.behavior("LOAD-009")
def test_pinned_environment_shows_only_the_chosen_gpu() -> None:
    assert pinned_environment(select_device(1, (H100, L4), {})) == {CUDA_VISIBLE: L4.uuid}
    assert pinned_environment(None) == {CUDA_VISIBLE: ""}


@pytest.mark.behavior("LOAD-007")
def test_the_real_probe_lists_devices_or_names_the_missing_driver() -> None:
    try:
        devices = NvmlProbe().devices()
    except NoGpuDriver as exc:  # this machine: no NVIDIA library
        assert str(exc).startswith("no NVIDIA driver (NVML: ")
    else:  # a GPU machine
        assert all(d.uuid.startswith(("GPU-", "MIG-")) and d.total_bytes > 0 for d in devices)


# -- start-up decisions with the bundled model -----------------------------------------------


class Offload:
    """llama.cpp's GPU offload answer; records the environment it was asked under."""

    def __init__(self, supported: bool = True) -> None:
        self.supported = supported
        self.asked: list[dict[str, str]] = []

    def __call__(self, pin: Mapping[str, str]) -> bool:
        self.asked.append(dict(pin))
        return self.supported


def plan(
    probe: FakeGpuProbe = TWO,
    *,
    visible: str | None = None,
    offload: Offload | None = None,
    ram: int = 64 * GiB,
    **flags: str,
) -> StartPlan:
    # A fixed context in per-slot streams without drafts keeps these figures apart from the
    # automatic context, the shared pool and the draft rows (tests/test_auto_context.py,
    # tests/test_memory_estimate.py).
    fixed = {"ctx_size": "4096", "batch_invariant": "true", "speculation": "off"}
    settings = settings_from({**fixed, **flags}, environ={})
    return plan_start(
        settings,
        probe=probe,
        environ=env(visible),
        offload_supported=offload or Offload(),
        ram_available=lambda: ram,
        bundled=lambda: BUNDLED,
    )


def refused(probe: FakeGpuProbe = TWO, **kwargs: object) -> str:
    with pytest.raises(StartError) as caught:
        plan(probe, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.behavior("LOAD-007")
def test_auto_takes_the_gpu_and_says_why() -> None:
    offload = Offload()
    started = plan(offload=offload)
    assert (started.backend, started.gpu and started.gpu.device, started.n_gpu_layers) == (
        "cuda",
        H100,
        19,
    )
    assert offload.asked == [{CUDA_VISIBLE: H100.uuid}]
    assert started.environ == {CUDA_VISIBLE: H100.uuid}
    assert started.notes[1] == f"GPU: GPU 0 NVIDIA H100 ({H100.uuid}, 79.00 GiB free)"
    assert started.notes[2].startswith("backend: cuda (--gpu-layers auto: every layer fit (")
    assert started.notes[3] == (
        "memory: GPU 0.82 GiB (19 of 19 layers), RAM 0.17 GiB for 4096 context tokens in 4 slots"
    )
    resolved = started.apply(Settings())
    assert (resolved.backend, resolved.device, resolved.n_gpu_layers) == ("cuda", 0, 19)


@pytest.mark.behavior("LOAD-008")
def test_second_gpu_by_uuid_with_little_vram_gets_fewer_layers() -> None:
    started = plan(device=L4.uuid)
    assert started.gpu is not None and started.gpu.device == L4
    assert started.n_gpu_layers == 8
    assert started.notes[2] == (
        "backend: cuda (--gpu-layers auto: 8 of 19 fit (0.75 GiB (weights 0.03 GiB, KV cache "
        "0.03 GiB, compute 0.19 GiB, CUDA 0.50 GiB)))"
    )
    # The most that fit: one more is refused when asked for by number.
    assert refused(device=L4.uuid, gpu_layers="9").startswith(
        f"GPU 1 NVIDIA L4 ({L4.uuid}, 0.75 GiB free): --gpu-layers 9: 9 of 19 layers at "
    )


@pytest.mark.behavior("LOAD-010")
def test_gpu_layers_all_that_does_not_fit_is_refused_with_the_numbers() -> None:
    assert refused(device="1", gpu_layers="all") == (
        f"GPU 1 NVIDIA L4 ({L4.uuid}, 0.75 GiB free): --gpu-layers all: 19 of 19 layers at "
        "--ctx-size 4096 need 0.82 GiB (weights 0.23 GiB, KV cache 0.07 GiB, compute 0.02 GiB, "
        "CUDA 0.50 GiB) but the GPU has 0.75 GiB free; try --gpu-layers auto or a smaller "
        "--ctx-size"
    )


@pytest.mark.behavior("LOAD-010")
def test_gpu_layers_count_is_passed_through() -> None:
    started = plan(gpu_layers="5")
    assert started.n_gpu_layers == 5 and started.apply(Settings()).n_gpu_layers == 5


@pytest.mark.behavior("LOAD-010")
def test_not_one_layer_fits() -> None:
    tiny = FakeGpuProbe((GpuDevice(0, H100.uuid, "NVIDIA H100", 80 * GiB, GiB // 2),))
    started = plan(tiny)
    assert started.backend == "cpu" and started.environ == {CUDA_VISIBLE: ""}
    assert started.notes[1].startswith(
        f"backend: cpu (GPU 0 NVIDIA H100 ({H100.uuid}, 0.50 GiB free): not one layer fits: "
        "one needs 0.69 GiB, 0.50 GiB free)"
    )
    assert refused(tiny, backend="cuda").startswith("--backend cuda: GPU 0 NVIDIA H100 (")


@pytest.mark.behavior("LOAD-007")
def test_no_driver() -> None:
    started = plan(NO_DRIVER)
    assert (started.backend, started.n_gpu_layers, started.environ) == (
        "cpu",
        0,
        {CUDA_VISIBLE: ""},
    )
    assert started.notes[1] == "backend: cpu (no NVIDIA driver (NVML: Driver Not Loaded))"
    assert refused(NO_DRIVER, backend="cuda") == (
        "--backend cuda: no NVIDIA driver (NVML: Driver Not Loaded)"
    )


@pytest.mark.behavior("LOAD-008")
def test_cuda_visible_devices_is_respected() -> None:
    started = plan(visible="1", gpu_layers="3")
    assert started.gpu is not None and started.gpu.device == L4
    assert started.environ == {CUDA_VISIBLE: L4.uuid}
    hidden = plan(visible="")
    assert hidden.backend == "cpu"
    assert hidden.notes[1] == (
        "backend: cpu (--device 0: 2 GPU(s) exist but none is visible under "
        "CUDA_VISIBLE_DEVICES='')"
    )
    assert refused(visible="", backend="cuda") == (
        "--backend cuda: --device 0: 2 GPU(s) exist but none is visible under "
        "CUDA_VISIBLE_DEVICES=''"
    )


@pytest.mark.behavior("LOAD-007")
def test_llama_cpp_without_gpu_offload() -> None:
    started = plan(offload=Offload(False))
    assert started.backend == "cpu"
    assert (
        started.notes[1] == "backend: cpu (the installed llama.cpp was built without GPU offload)"
    )
    assert refused(offload=Offload(False), backend="cuda") == (
        "--backend cuda: the installed llama.cpp was built without GPU offload "
        "(reinstall llama-cpp-python with CMAKE_ARGS=-DGGML_CUDA=on)"
    )


@pytest.mark.behavior("LOAD-007")
def test_backend_cpu_is_said_so() -> None:
    started = plan(backend="cpu")
    assert (started.backend, started.notes[1]) == ("cpu", "backend: cpu (--backend cpu)")


@pytest.mark.behavior("LOAD-010")
def test_not_enough_ram() -> None:
    message = refused(NO_DRIVER, ram=256 << 20)
    assert message == (
        "the model at --ctx-size 4096 needs 0.32 GiB (weights 0.23 GiB, KV cache 0.07 GiB, "
        "compute 0.02 GiB) of RAM but 0.25 GiB is available; try a smaller --ctx-size or "
        "another model"
    )


@pytest.mark.behavior("LOAD-012")
def test_a_bad_model_is_refused_before_any_gpu_question(tmp_path: Path) -> None:
    class Refusing:
        def devices(self) -> Sequence[GpuDevice]:
            raise AssertionError("NVML asked before the model was checked")

    (tmp_path / "m.gguf").write_bytes(b"")
    with pytest.raises(StartError) as caught:
        plan_start(
            settings_from({"model": str(tmp_path / "m.gguf")}, environ={}),
            probe=Refusing(),
            environ={},
            offload_supported=Offload(),
            ram_available=lambda: GiB,
        )
    assert str(caught.value) == (
        f"model {tmp_path / 'm.gguf'} is empty (0 bytes); an interrupted download?"
    )


@pytest.mark.behavior("LOAD-009")
def test_plan_names_the_model() -> None:
    started = plan(NO_DRIVER)
    assert started.model.path == BUNDLED
    assert started.notes[0] == f"model: {BUNDLED} (the bundled model), gemma3"
