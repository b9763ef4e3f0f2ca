"""What only the HeartbeatActor knows, for the heartbeat payload and `GET /heartbeat`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from llm_worker_rbee.inspection.gpu import GpuError, GpuProbe

# none: no --hive-url; connecting: nothing answered yet; reachable / unreachable: how the
# last call went.
HiveStatus = Literal["none", "connecting", "reachable", "unreachable"]


@dataclass(frozen=True, slots=True)
class VramSample:
    """The worker's GPU memory at one moment."""

    used_bytes: int  # the device's, as nvidia-smi shows them: anything on the GPU
    total_bytes: int
    process_bytes: int | None = None  # this worker's own, where NVML can tell it


# A VramSample of the worker's GPU, or None; blocking (NVML), so run on a thread.
VramReader = Callable[[], VramSample | None]


@dataclass
class Vitals:
    hive: HiveStatus = "none"
    hive_last_success: float | None = None  # wall clock (Unix seconds) of the last answer
    vram_used_bytes: int | None = None
    vram_total_bytes: int | None = None
    vram_process_bytes: int | None = None


def nvml_vram(probe: GpuProbe, uuid: str, pid: int | None = None) -> VramReader:
    """Reads the memory of the GPU with this UUID through the probe (NVML).

    Used bytes are the device's, as nvidia-smi shows them: this worker's model, context
    and anything else on the GPU; process bytes are what process `pid` (default: this one)
    holds there, None where NVML does not say (no permission; inside a container NVML
    lists the host's PIDs, which are not this process's own). A probe that fails reads as
    None.
    """
    own = os.getpid() if pid is None else pid

    def read() -> VramSample | None:
        try:
            devices = probe.devices()
            device = next((d for d in devices if d.uuid == uuid), None)
            if device is None:
                return None
            process = probe.process_memory(uuid, own)
        except GpuError:
            return None
        return VramSample(device.total_bytes - device.free_bytes, device.total_bytes, process)

    return read
