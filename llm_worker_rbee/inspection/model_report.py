"""`llm-worker-rbee inspect-model PATH`: what a GGUF model is, and what it needs to serve.

Reads the file the way `serve` checks it (nothing is loaded, no GPU is touched) and prints
architecture, parameters, quantization, context length, chat template presence and the
memory estimate for `--ctx-size`/`--slots`, as text or `--json`. A file `serve` would
refuse for its structure exits 3 with the same one line; an architecture the installed
llama.cpp does not know is reported (`supported: false`), not refused.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from llm_worker_rbee.config import SettingsError, die, env_of, settings_from
from llm_worker_rbee.inspection.architectures import architecture_problem
from llm_worker_rbee.inspection.gguf_check import GgufError, GgufSummary, read_gguf
from llm_worker_rbee.inspection.memory import ContextShape, ModelShape, estimate
from llm_worker_rbee.inspection.model_path import ModelPathError, resolve_model
from llm_worker_rbee.inspection.preflight import context_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="a GGUF file, or a folder with one")
    parser.add_argument("--ctx-size", metavar="N", help="context tokens (default 4096)")
    parser.add_argument("--slots", metavar="N", help="concurrent sequences (default 4)")
    parser.add_argument("--batch-size", metavar="N", help="tokens per step (default 512)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    """Prints the report; exits 2 for a bad flag and 3 for a file `serve` would refuse."""
    flags = {"ctx_size": args.ctx_size, "slots": args.slots, "batch_size": args.batch_size}
    environ = {
        env_of(name): os.environ[env_of(name)] for name in flags if env_of(name) in os.environ
    }
    try:
        settings = settings_from(flags, environ)
    except SettingsError as exc:
        die(str(exc))
    try:
        path = resolve_model(Path(args.path), None, None).path
        summary = read_gguf(path)
    except (ModelPathError, GgufError) as exc:
        die(str(exc), code=3)
    context = context_of(settings)
    report = describe(summary, context, architecture_problem(summary.architecture) is None)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def describe(summary: GgufSummary, context: ContextShape, supported: bool) -> dict[str, Any]:
    """The report as plain data (what `--json` prints)."""
    shape = ModelShape.from_gguf(summary)
    cpu = estimate(shape, context, 0)
    gpu = estimate(shape, context, shape.all_layers)
    by_type: Counter[str] = Counter()
    for tensor in summary.tensors:
        by_type[tensor.ggml_type.name] += tensor.n_bytes
    return {
        "path": str(summary.path),
        "file_bytes": summary.file_size,
        "gguf_version": summary.version,
        "name": summary.get("general.name"),
        "architecture": summary.architecture,
        "supported": supported,
        "parameters": sum(t.n_elements for t in summary.tensors),
        "quantization": quantization(summary, by_type),
        "tensor_types": dict(by_type.most_common()),
        "context_length": shape.n_ctx_train,
        "layers": shape.n_layer,
        "embedding_length": shape.n_embd,
        "heads": shape.n_head,
        "kv_heads": max(shape.n_head_kv, default=0),
        "vocab_size": shape.n_vocab,
        "sliding_window": shape.n_swa,
        "chat_template": isinstance(summary.get("tokenizer.chat_template"), str),
        "memory": {
            "ctx_size": context.ctx_size,
            "slots": context.slots,
            "batch_size": context.batch_size,
            "kv_cache_type": context.cache_type,
            "cpu": cpu.as_dict(),
            "gpu_all_layers": gpu.as_dict(),
        },
    }


@dataclass(frozen=True, slots=True)
class ModelFile:
    """What the served file says about the model, for the status page's model card."""

    name: str | None  # general.name
    architecture: str
    quantization: str
    parameters: int
    file_bytes: int

    @classmethod
    def of(cls, summary: GgufSummary) -> ModelFile:
        by_type: Counter[str] = Counter()
        for tensor in summary.tensors:
            by_type[tensor.ggml_type.name] += tensor.n_bytes
        name = summary.get("general.name")
        return cls(
            name=name if isinstance(name, str) else None,
            architecture=summary.architecture,
            quantization=quantization(summary, by_type),
            parameters=sum(t.n_elements for t in summary.tensors),
            file_bytes=summary.file_size,
        )


def quantization(summary: GgufSummary, by_type: Counter[str]) -> str:
    """`general.file_type` by name (`Q4_K_M`), else the type holding the most bytes."""
    file_type = summary.get("general.file_type")
    try:
        return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return by_type.most_common(1)[0][0] if by_type else "unknown"


def render(report: dict[str, Any]) -> str:
    memory = report["memory"]
    cpu, gpu = memory["cpu"], memory["gpu_all_layers"]
    rows = [
        (
            "file",
            f"{report['path']} ({_size(report['file_bytes'])}, GGUF v{report['gguf_version']})",
        ),
        ("name", report["name"] or "-"),
        (
            "architecture",
            f"{report['architecture']}"
            + ("" if report["supported"] else " (NOT supported by the installed llama.cpp)"),
        ),
        ("parameters", _count(report["parameters"])),
        ("quantization", report["quantization"]),
        ("context length", f"{report['context_length']} tokens (trained)"),
        (
            "shape",
            f"{report['layers']} layers, {report['embedding_length']} wide, "
            f"{report['heads']} heads / {report['kv_heads']} KV heads, "
            f"{report['vocab_size']} vocab"
            + (f", {report['sliding_window']} sliding window" if report["sliding_window"] else ""),
        ),
        ("chat template", "yes" if report["chat_template"] else "no"),
        (
            "memory for",
            f"--ctx-size {memory['ctx_size']} --slots {memory['slots']} "
            f"--batch-size {memory['batch_size']} (KV cache {memory['kv_cache_type']})",
        ),
        (
            "  on the CPU",
            f"RAM {_size(cpu['cpu_total'])}: weights {_size(cpu['weights_cpu'])}, "
            f"KV cache {_size(cpu['kv_cpu'])}, compute "
            f"{_size(cpu['compute_cpu'] + cpu['output_cpu'])}",
        ),
        (
            "  on a GPU",
            f"VRAM {_size(gpu['gpu_total'])}: weights {_size(gpu['weights_gpu'])}, "
            f"KV cache {_size(gpu['kv_gpu'])}, compute {_size(gpu['compute_gpu'])}, "
            f"CUDA {_size(gpu['cuda_context'])}; RAM {_size(gpu['cpu_total'])}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _count(n: int) -> str:
    for unit, scale in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit} ({n})"
    return str(n)
