"""What a hive operator reads in the reports: the URL the worker is reached at (never
0.0.0.0), the device as the operator named it (index and UUID, not the pinned 0), and this
worker's own VRAM beside the device's."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from llm_worker_rbee.config import Settings
from llm_worker_rbee.http.system.status import advertised_url, heartbeat_payload, ready_payload
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.inspection.gpu import AskedDevice, FakeGpuProbe, GpuChoice, GpuDevice
from llm_worker_rbee.inspection.preflight import plan_start
from llm_worker_rbee.testing.inprocess import inprocess_worker

GIB = 1 << 30
H100 = GpuDevice(0, "GPU-aaaa1111", "NVIDIA H100", 80 * GIB, 79 * GIB)
L4 = GpuDevice(1, "GPU-bbbb2222", "NVIDIA L4", 24 * GIB, 20 * GIB)


def host() -> str:
    return "gpu-box-7"


@pytest.mark.parametrize(
    ("advertise", "bind", "url"),
    [
        (None, "http://0.0.0.0:8080", "http://gpu-box-7:8080"),
        (None, "http://[::]:9001", "http://gpu-box-7:9001"),
        (None, "http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        (None, "http://[::1]:8080", "http://[::1]:8080"),
        (None, "http://10.0.0.5:8081", "http://10.0.0.5:8081"),
        (None, "http://localhost:8080", "http://localhost:8080"),
        (None, "http://0.0.0.0", "http://gpu-box-7"),
        ("http://worker-7.lan:9000", "http://0.0.0.0:8080", "http://worker-7.lan:9000"),
    ],
)
@pytest.mark.behavior("HIVE-038")
def test_the_advertised_url_is_never_an_unspecified_address(
    advertise: str | None, bind: str, url: str
) -> None:
    settings = Settings(advertise_url=advertise)
    assert advertised_url(settings, [bind, "http://other:1"], hostname=host) == url


@pytest.mark.behavior("HIVE-038")
def test_without_a_bind_there_is_no_url_unless_advertised() -> None:
    assert advertised_url(Settings(), [], hostname=host) is None
    assert advertised_url(Settings(advertise_url="http://w:1/"), [], hostname=host) == "http://w:1"


@pytest.mark.behavior("HIVE-036")
def test_the_asked_device_is_named_as_the_operator_did() -> None:
    assert AskedDevice().rbee_name() == "cpu:0" and AskedDevice().uuid is None
    by_index = AskedDevice(1, GpuChoice(L4, 1))
    assert (by_index.rbee_name(), by_index.uuid) == ("cuda:1", "GPU-bbbb2222")
    # Chosen by UUID under CUDA_VISIBLE_DEVICES=1,0: visible index 0, NVML index 1.
    by_uuid = AskedDevice("GPU-bbbb2222", GpuChoice(L4, 0))
    assert (by_uuid.rbee_name(), by_uuid.spec) == ("cuda:0", "GPU-bbbb2222")


@pytest.mark.behavior("HIVE-036")
def test_pinning_gives_llama_cpp_device_0_and_the_report_keeps_the_asked_one() -> None:
    settings = Settings(model=str(bundled_model_path()), backend="cuda", device=1)
    plan = plan_start(
        settings,
        probe=FakeGpuProbe((H100, L4)),
        environ={},
        offload_supported=lambda pin: True,
        ram_available=lambda: 64 * GIB,
    )
    asked = AskedDevice(settings.device, plan.gpu)  # as `serve` does, before apply
    assert plan.apply(settings).device == 0  # what llama.cpp loads with: unchanged
    assert plan.environ == {"CUDA_VISIBLE_DEVICES": "GPU-bbbb2222"}
    assert (asked.spec, asked.uuid, asked.rbee_name()) == (1, "GPU-bbbb2222", "cuda:1")


@pytest.mark.behavior("HIVE-036", "HIVE-037")
async def test_the_hive_payloads_carry_the_asked_device_and_the_own_vram(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(Settings(worker_id="w", device=0)) as worker:
        services = worker.services
        beat = heartbeat_payload(services)
        assert (beat["device"], beat["device_uuid"], beat["vram_process_bytes"]) == (0, None, None)
        services.device = AskedDevice(1, GpuChoice(L4, 1))
        services.vitals.vram_used_bytes, services.vitals.vram_total_bytes = 4 * GIB, 24 * GIB
        services.vitals.vram_process_bytes = 3 * GIB
        beat = heartbeat_payload(services)
        assert (beat["device"], beat["device_uuid"]) == (1, "GPU-bbbb2222")
        assert (beat["vram_used_bytes"], beat["vram_process_bytes"]) == (4 * GIB, 3 * GIB)
        ready = ready_payload(services, ["http://127.0.0.1:8080"])
        assert (ready["device"], ready["device_uuid"]) == (1, "GPU-bbbb2222")
