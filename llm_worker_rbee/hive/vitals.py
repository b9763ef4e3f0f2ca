"""What only the HeartbeatActor knows, for the heartbeat payload and `GET /heartbeat`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from llm_worker_rbee.engine.gpu import GpuError, GpuProbe

# none: no --hive-url; connecting: nothing answered yet; reachable / unreachable: how the
# last call went.
HiveStatus = Literal["none", "connecting", "reachable", "unreachable"]

# (used, total) bytes of the worker's GPU, or None; blocking (NVML), so run on a thread.
VramReader = Callable[[], tuple[int, int] | None]


@dataclass
class Vitals:
    hive: HiveStatus = "none"
    hive_last_success: float | None = None  # wall clock (Unix seconds) of the last answer
    vram_used_bytes: int | None = None
    vram_total_bytes: int | None = None


def nvml_vram(probe: GpuProbe, uuid: str) -> VramReader:
    """Reads the memory of the GPU with this UUID through the probe (NVML).

    Used bytes are the device's, as nvidia-smi shows them: this worker's model, context
    and anything else on the GPU. A probe that fails reads as None.
    """

    def read() -> tuple[int, int] | None:
        try:
            devices = probe.devices()
        except GpuError:
            return None
        for device in devices:
            if device.uuid == uuid:
                return device.total_bytes - device.free_bytes, device.total_bytes
        return None

    return read
