"""Which GPU, if any: NVML behind a small probe interface, and `CUDA_VISIBLE_DEVICES` rules.

NVML (pynvml) is asked before CUDA starts: it sees every device, their UUIDs and free
memory without creating a CUDA context. The worker then pins CUDA to the one chosen device
(`pinned_environment`), so llama.cpp sees exactly that GPU as its device 0, whatever its
split mode and whatever order CUDA would enumerate the GPUs in.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

with warnings.catch_warnings():
    # pynvml 12+ warns on import that nvidia-ml-py is its new name; same API.
    warnings.simplefilter("ignore", FutureWarning)
    import pynvml

CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"


class GpuError(Exception):
    """The GPU asked for cannot be used; the message is one line."""


class NoGpuDriver(GpuError):
    """NVML is missing or cannot talk to a driver."""


@dataclass(frozen=True, slots=True)
class GpuDevice:
    index: int  # NVML's index: PCI bus order, as nvidia-smi numbers the GPUs
    uuid: str  # "GPU-..."
    name: str
    total_bytes: int
    free_bytes: int

    def describe(self) -> str:
        return f"GPU {self.index} {self.name} ({self.uuid}, {gib(self.free_bytes)} free)"


class GpuProbe(Protocol):
    def devices(self) -> Sequence[GpuDevice]:
        """Every GPU the driver sees, in NVML order.

        Raises:
            NoGpuDriver: no NVML library or no driver loaded.
        """
        ...

    def process_memory(self, uuid: str, pid: int) -> int | None:
        """Bytes of the GPU with this UUID that process `pid` holds, or None when NVML
        cannot say (no such GPU or process, no permission, a PID namespace that hides it).

        Raises:
            NoGpuDriver: no NVML library or no driver loaded.
        """
        ...


class NvmlProbe:
    """The real probe: pynvml, initialised and shut down around each call."""

    def devices(self) -> Sequence[GpuDevice]:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NoGpuDriver(f"no NVIDIA driver (NVML: {exc})") from None
        # Only reached with an NVIDIA driver: tests/test_gpu_probe.py runs it on a GPU machine.
        try:  # pragma: no cover
            found: list[GpuDevice] = []
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                found.append(
                    GpuDevice(
                        index=index,
                        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                        name=_text(pynvml.nvmlDeviceGetName(handle)),
                        total_bytes=int(memory.total),
                        free_bytes=int(memory.free),
                    )
                )
            return found
        except pynvml.NVMLError as exc:
            raise NoGpuDriver(f"NVML could not list the GPUs ({exc})") from None
        finally:
            pynvml.nvmlShutdown()

    def process_memory(self, uuid: str, pid: int) -> int | None:
        """The largest `usedGpuMemory` NVML lists for `pid` among the compute and graphics
        processes of that GPU (a process appears once per context kind; the largest entry
        is its memory, never counted twice)."""
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NoGpuDriver(f"no NVIDIA driver (NVML: {exc})") from None
        # Only reached with an NVIDIA driver: tests/test_gpu_probe.py runs it on a GPU machine.
        try:  # pragma: no cover
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid.encode())
            used = [
                int(entry.usedGpuMemory)
                for listing in (
                    pynvml.nvmlDeviceGetComputeRunningProcesses,
                    pynvml.nvmlDeviceGetGraphicsRunningProcesses,
                )
                for entry in listing(handle)
                # None: NVML_VALUE_NOT_AVAILABLE (e.g. without the rights to see it)
                if entry.pid == pid and entry.usedGpuMemory is not None
            ]
            return max(used) if used else None
        except pynvml.NVMLError:  # pragma: no cover
            return None
        finally:
            pynvml.nvmlShutdown()


def _text(value: bytes | str) -> str:  # pragma: no cover (NVML's strings: GPU machines only)
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class FakeGpuProbe:
    """A probe for tests: fixed devices, or the error NVML would give without a driver."""

    gpus: tuple[GpuDevice, ...] = ()
    driver_error: str | None = None
    # (GPU UUID, pid) -> bytes that process holds there; a pair not listed: NVML cannot say.
    processes: Mapping[tuple[str, int], int] = field(default_factory=dict)

    def devices(self) -> Sequence[GpuDevice]:
        if self.driver_error is not None:
            raise NoGpuDriver(f"no NVIDIA driver (NVML: {self.driver_error})")
        return self.gpus

    def process_memory(self, uuid: str, pid: int) -> int | None:
        self.devices()  # the same driver error
        return self.processes.get((uuid, pid))


def visible_devices(devices: Sequence[GpuDevice], environ: Mapping[str, str]) -> list[GpuDevice]:
    """The devices CUDA will show under `CUDA_VISIBLE_DEVICES`, in the order it lists them.

    As CUDA reads it: unset shows every device; a comma-separated list of indices or (a
    unique prefix of) UUIDs shows those, in that order; the list ends at the first entry
    that names no device (so `-1` or an empty value hides them all). Indices are NVML's
    (PCI bus order); see docs/MODEL_LOADING.md for CUDA_DEVICE_ORDER.
    """
    spec = environ.get(CUDA_VISIBLE)
    if spec is None:
        return list(devices)
    shown: list[GpuDevice] = []
    for entry in (part.strip() for part in spec.split(",")):
        device = _by_index(devices, entry) if entry.isdigit() else _by_uuid(devices, entry)
        if device is None or device in shown:
            break
        shown.append(device)
    return shown


def _by_index(devices: Sequence[GpuDevice], entry: str) -> GpuDevice | None:
    return next((d for d in devices if d.index == int(entry)), None)


def _by_uuid(devices: Sequence[GpuDevice], entry: str) -> GpuDevice | None:
    if not entry:
        return None
    wanted = entry.lower()
    if not wanted.startswith(("gpu-", "mig-")):
        wanted = "gpu-" + wanted
    matches = [d for d in devices if d.uuid.lower().startswith(wanted)]
    return matches[0] if len(matches) == 1 else None


@dataclass(frozen=True, slots=True)
class GpuChoice:
    device: GpuDevice
    visible_index: int  # its index among the visible devices (CUDA's numbering)


def select_device(
    spec: int | str, devices: Sequence[GpuDevice], environ: Mapping[str, str]
) -> GpuChoice:
    """`--device N` (an index among the visible devices) or `--device UUID`.

    Raises:
        GpuError: no such device, or hidden by CUDA_VISIBLE_DEVICES; the line lists
            what is visible.
    """
    visible = visible_devices(devices, environ)
    where = _visibility(environ)
    if not visible:
        seen = f"{len(devices)} GPU(s) exist but " if devices else "no GPU found, "
        raise GpuError(f"--device {spec}: {seen}none is visible{where}")
    shown = ", ".join(f"{i}={d.uuid}" for i, d in enumerate(visible))
    if isinstance(spec, int):
        if spec >= len(visible):
            raise GpuError(f"--device {spec}: only {len(visible)} GPU(s) visible{where}: {shown}")
        return GpuChoice(visible[spec], spec)
    device = _by_uuid(devices, spec)
    if device is None:
        raise GpuError(f"--device {spec}: no GPU has this UUID; visible{where}: {shown}")
    if device not in visible:
        raise GpuError(f"--device {spec}: this GPU is hidden{where}; visible: {shown}")
    return GpuChoice(device, visible.index(device))


def _visibility(environ: Mapping[str, str]) -> str:
    spec = environ.get(CUDA_VISIBLE)
    return "" if spec is None else f" under {CUDA_VISIBLE}={spec!r}"


@dataclass(frozen=True, slots=True)
class AskedDevice:
    """The device as the operator asked for it, for what the worker reports.

    Once the chosen GPU is pinned (`pinned_environment`), llama.cpp, and the settings it
    loads with (`StartPlan.apply`), call it device 0; the hive and the queen need the
    device the operator named and which GPU that is.
    """

    spec: int | str = 0  # --device as given: an index among the visible GPUs, or a UUID
    gpu: GpuChoice | None = None  # the GPU it resolved to; None: the worker runs on the CPU

    @property
    def uuid(self) -> str | None:
        return self.gpu.device.uuid if self.gpu is not None else None

    def rbee_name(self) -> str:
        """rbee's `WorkerInfo.device`: `cpu:0`, or `cuda:N` with N the index among the
        visible GPUs (what `--device N` names; also for a GPU chosen by UUID)."""
        return f"cuda:{self.gpu.visible_index}" if self.gpu is not None else "cpu:0"


@dataclass(frozen=True, slots=True)
class GpuFinding:
    """The GPU `--backend` and `--device` point at, or why there is none."""

    gpu: GpuChoice | None
    reason: str


def find_gpu(
    backend: Literal["auto", "cpu", "cuda"],
    spec: int | str,
    probe: GpuProbe,
    environ: Mapping[str, str],
) -> GpuFinding:
    """Looks for the device `--backend`/`--device` ask for; NVML only, CUDA is not started.

    With `cuda` every failure is an error; with `auto` it is the reason to run on the CPU.

    Raises:
        GpuError: `--backend cuda` and no driver, no such device, or none visible.
    """
    if backend == "cpu":
        return GpuFinding(None, "--backend cpu")
    try:
        choice = select_device(spec, probe.devices(), environ)
    except GpuError as exc:
        if backend == "cuda":
            raise GpuError(f"--backend cuda: {exc}") from None
        return GpuFinding(None, str(exc))
    return GpuFinding(choice, f"{choice.device.describe()}")


def pinned_environment(gpu: GpuChoice | None) -> dict[str, str]:
    """`CUDA_VISIBLE_DEVICES` for llama.cpp: the chosen GPU only (its device 0), or none.

    Set before CUDA starts. On the CPU no GPU is shown at all, so llama.cpp cannot move
    work to one behind the worker's back (it offloads large batches when it can).
    """
    return {CUDA_VISIBLE: gpu.device.uuid if gpu is not None else ""}


def gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"
