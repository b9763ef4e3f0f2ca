"""On a GPU machine: the memory estimate against what llama.cpp and the device really use.

    python -m bench.gpu_memory [--model PATH] [--ctx-size N] [--slots N] [--batch-size N]
                               [--gpu-layers all|N] [--device N|UUID] [--json]

Reads the device through NVML (pynvml), pins CUDA to it as `serve` does, loads the model
through the engine with llama.cpp's log captured, runs one full micro-batch so the compute
buffer is really touched, and prints, per component, the estimate, what llama.cpp says it
allocated on the GPU (its `CUDA0 ... buffer size` lines), and what NVML measured (the
device's used memory before and after, and this process's own use where the driver says).

Exit status: 0 when the estimated GPU total is within 15% of the measured use, 1 when it is
not, and 0 with one `skipped:` line where there is no NVIDIA driver, no GPU, or a
llama.cpp built without GPU offload (so it can run anywhere; it only measures on a GPU).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from llm_worker_rbee.config import Settings
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.inspection.gguf_check import validate_gguf
from llm_worker_rbee.inspection.gpu import GpuError, NvmlProbe, select_device
from llm_worker_rbee.inspection.memory import ContextShape, ModelShape, estimate
from llm_worker_rbee.messages.inference import SamplingParams

MiB = 1 << 20
TOLERANCE = 0.15
_CUDA_BUFFER = re.compile(r"CUDA\d+\s+(model|KV|compute|output) buffer size =\s+([\d.]+) MiB")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_memory", description=__doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--ctx-size", type=int, default=4096)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--gpu-layers", default="all", help="all or a layer count")
    parser.add_argument("--device", default="0", help="GPU index or UUID")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def skipped(reason: str) -> int:
    print(f"skipped: {reason}")
    return 0


def _nvml() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import pynvml
    return pynvml


def device_used(uuid: str) -> tuple[int, int | None]:
    """(memory used on the device, memory used by this process if the driver says)."""
    pynvml = _nvml()
    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        used = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        mine = None
        try:
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    mine = int(proc.usedGpuMemory)
        except pynvml.NVMLError:
            pass  # not allowed in some containers: the device delta still stands
        return used, mine
    finally:
        pynvml.nvmlShutdown()


def cuda_buffers(log: str) -> dict[str, int]:
    """llama.cpp's own GPU allocations, by kind, from lines like `CUDA0 KV buffer size = 1 MiB`."""
    found: dict[str, int] = {}
    for kind, size in _CUDA_BUFFER.findall(log):
        found[kind] = found.get(kind, 0) + round(float(size) * MiB)
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        devices = NvmlProbe().devices()
        spec: int | str = int(args.device) if args.device.isdigit() else args.device
        choice = select_device(spec, devices, os.environ)
    except GpuError as exc:  # NoGpuDriver included
        return skipped(str(exc))
    path = args.model or bundled_model_path()
    shape = ModelShape.from_gguf(validate_gguf(path))
    context = ContextShape(args.ctx_size, args.slots, args.batch_size)
    layers = shape.all_layers if args.gpu_layers == "all" else int(args.gpu_layers)
    need = estimate(shape, context, layers)

    before, _ = device_used(choice.device.uuid)  # before CUDA starts: its context counts
    os.environ["CUDA_VISIBLE_DEVICES"] = choice.device.uuid  # as `serve` pins it
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        return skipped("the installed llama.cpp was built without GPU offload")
    from llm_worker_rbee.engine.llama import LlamaEngine

    lines: list[str] = []

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    settings = Settings(
        backend="cuda",
        device=0,
        gpu_layers=layers,
        ctx_size=args.ctx_size,
        slots=args.slots,
        batch_size=args.batch_size,
    )
    engine = LlamaEngine.load(path, settings, path.stem)
    try:
        text = "The quick brown fox jumps over the lazy dog. " * 200
        prompt = engine.tokenize(text, add_special=True)[: context.ubatch_tokens]
        engine.admit(0, prompt, SamplingParams(temperature=0.0))
        while engine.step() == []:
            pass  # the prompt is decoded: the compute buffer has been used in full
        after, mine = device_used(choice.device.uuid)
    finally:
        engine.close()
    measured = after - before
    reported = cuda_buffers("".join(lines))
    report = {
        "device": choice.device.describe(),
        "model": str(path),
        "ctx_size": args.ctx_size,
        "slots": args.slots,
        "batch_size": args.batch_size,
        "n_gpu_layers": layers,
        "estimate": need.as_dict(),
        "llama_cpp_gpu_buffers": reported,
        "measured_device_delta": measured,
        "measured_process": mine,
        "error": need.gpu_total / measured - 1 if measured > 0 else None,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report, need.as_dict(), reported, measured, mine)
    error = report["error"]
    return 0 if isinstance(error, float) and abs(error) <= TOLERANCE else 1


def print_table(
    report: dict[str, Any],
    need: dict[str, int],
    reported: dict[str, int],
    measured: int,
    mine: int | None,
) -> None:
    print(
        f"{report['device']}: {report['model']}, {report['n_gpu_layers']} layers, "
        f"ctx {report['ctx_size']}, {report['slots']} slots, batch {report['batch_size']}"
    )
    rows = [
        ("weights", need["weights_gpu"], reported.get("model")),
        ("KV cache", need["kv_gpu"], reported.get("KV")),
        ("compute", need["compute_gpu"], reported.get("compute")),
        ("CUDA context", need["cuda_context"], None),
        ("total", need["gpu_total"], sum(reported.values()) or None),
    ]
    print(f"{'':14}{'estimate':>12}{'llama.cpp':>12}")
    for name, estimated, said in rows:
        said_text = f"{said / MiB:>8.1f} MiB" if said is not None else f"{'-':>12}"
        print(f"{name:14}{estimated / MiB:>8.1f} MiB{said_text}")
    own = f", this process {mine / MiB:.1f} MiB" if mine is not None else ""
    error = report["error"]
    off = f"estimate off by {error:+.1%}" if error is not None else "nothing to compare"
    print(f"measured: device use grew {measured / MiB:.1f} MiB{own}; {off}")


if __name__ == "__main__":
    sys.exit(main())
