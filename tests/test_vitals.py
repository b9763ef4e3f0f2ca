"""What only the HeartbeatActor knows: the GPU's memory from NVML, refreshed as it beats."""

from __future__ import annotations

import os
from itertools import count

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.heartbeat import HeartbeatActor
from llm_worker_rbee.actors.lifecycle import LifecycleActor
from llm_worker_rbee.hive.vitals import Vitals, VramSample, nvml_vram
from llm_worker_rbee.inspection.gpu import FakeGpuProbe, GpuDevice, NoGpuDriver, NvmlProbe

GIB = 1 << 30
GPUS = (
    GpuDevice(0, "GPU-aaaa", "L4", 24 * GIB, 20 * GIB),
    GpuDevice(1, "GPU-bbbb", "L4", 24 * GIB, 4 * GIB),
)


@pytest.mark.behavior("HIVE-010")
def test_vram_comes_from_the_chosen_gpu() -> None:
    assert nvml_vram(FakeGpuProbe(GPUS), "GPU-bbbb")() == VramSample(20 * GIB, 24 * GIB)
    assert nvml_vram(FakeGpuProbe(GPUS), "GPU-gone")() is None
    assert nvml_vram(FakeGpuProbe(driver_error="driver gone"), "GPU-aaaa")() is None


@pytest.mark.behavior("HIVE-037")
def test_the_processs_own_vram_where_nvml_tells_it() -> None:
    probe = FakeGpuProbe(GPUS, processes={("GPU-bbbb", os.getpid()): 3 * GIB, ("GPU-aaaa", 7): GIB})
    assert nvml_vram(probe, "GPU-bbbb")() == VramSample(20 * GIB, 24 * GIB, 3 * GIB)
    assert nvml_vram(probe, "GPU-aaaa", pid=7)() == VramSample(4 * GIB, 24 * GIB, GIB)
    # NVML lists no such process (another PID namespace, no permission): unknown, not 0.
    assert nvml_vram(probe, "GPU-aaaa")() == VramSample(4 * GIB, 24 * GIB, None)


@pytest.mark.behavior("HIVE-037")
def test_the_real_probe_reads_a_process_or_names_the_missing_driver() -> None:
    probe = NvmlProbe()
    try:
        devices = probe.devices()
    except NoGpuDriver:  # this machine: no NVIDIA library
        with pytest.raises(NoGpuDriver, match=r"^no NVIDIA driver \(NVML: "):
            probe.process_memory("GPU-aaaa", os.getpid())
        return
    for device in devices:  # a GPU machine: PID 0 never holds GPU memory
        assert probe.process_memory(device.uuid, 0) is None
        own = probe.process_memory(device.uuid, os.getpid())
        assert own is None or own > 0


@pytest.mark.behavior("HIVE-010")
async def test_the_heartbeat_refreshes_vram_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    used = count(1)
    vitals = Vitals()
    reads_send, reads = trio.open_memory_channel[int](4)

    def read() -> VramSample:  # on a thread, as NVML is
        n = next(used)
        trio.from_thread.run_sync(reads_send.send_nowait, n)
        return VramSample(n, 100, 10 * n)

    async with trio.open_nursery() as nursery:
        lifecycle = await nursery.start(LifecycleActor(drain_timeout=1, handle_signals=False).run)
        actor = HeartbeatActor(
            client=None,
            interval=10.0,
            lifecycle=lifecycle,
            reports=None,  # type: ignore[arg-type]  # no hive: nothing is reported
            cancel_job=lambda job: False,
            vitals=vitals,
            wall_clock=trio.current_time,
            jitter=lambda: 0.0,
            vram=read,
        )
        await nursery.start(actor.run)
        assert await reads.receive() == 1
        assert await reads.receive() == 2  # the next refresh, one interval later
        assert trio.current_time() >= 10.0
        assert (vitals.vram_used_bytes, vitals.vram_total_bytes, vitals.hive) == (1, 100, "none")
        assert vitals.vram_process_bytes == 10
        nursery.cancel_scope.cancel()
