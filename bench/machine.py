"""What the machine was doing: CPU model, cores, and how busy other processes kept it."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main_thread_cpu_s(pid: int) -> float:
    """CPU seconds (user and system) of a process's main thread: a worker's event loop."""
    with open(f"/proc/{pid}/task/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy_s() -> float:
    """CPU seconds all processes have used since boot (user, nice, system, irq, softirq)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _ours_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # servers, once they have ended
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class BusyMeter:
    """CPU that processes other than the bench and its servers used while it ran."""

    started_at: float = 0.0
    busy_at_start: float = 0.0
    ours_at_start: float = 0.0

    def start(self) -> BusyMeter:
        self.started_at = time.monotonic()
        self.busy_at_start = _busy_s()
        self.ours_at_start = _ours_s()
        return self

    def others(self) -> tuple[float, float]:
        """(CPU seconds used by others, wall seconds) since start."""
        busy = _busy_s() - self.busy_at_start
        ours = _ours_s() - self.ours_at_start
        return max(0.0, busy - ours), time.monotonic() - self.started_at
