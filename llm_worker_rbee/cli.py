"""`llm-worker-rbee serve | ...`: the command line."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import NoReturn

import trio

from llm_worker_rbee import __version__
from llm_worker_rbee.config import Settings, SettingsError, add_setting_flags, die, settings_from
from llm_worker_rbee.engine.loading import LoadProgress
from llm_worker_rbee.hive.vitals import nvml_vram
from llm_worker_rbee.hive_stub.cli import add_hive_stub_parser, run_hive_stub
from llm_worker_rbee.http.server import ListenError, first_exception
from llm_worker_rbee.inspection.gpu import AskedDevice, NvmlProbe
from llm_worker_rbee.inspection.memory import available_ram
from llm_worker_rbee.inspection.model_report import ModelFile
from llm_worker_rbee.inspection.model_report import add_arguments as add_inspect_arguments
from llm_worker_rbee.inspection.model_report import run as inspect_model
from llm_worker_rbee.inspection.preflight import StartError, llama_offload_supported, plan_start
from llm_worker_rbee.logs import configure_logging
from llm_worker_rbee.pipeline.runner import ThreadStepRunner
from llm_worker_rbee.prompts import TemplateFileError, read_chat_template
from llm_worker_rbee.worker import LOAD_FAILED_EXIT, Runtime, run_worker


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        die(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llm-worker-rbee", description="An LLM worker daemon for rbee.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = commands.add_parser("serve", help="serve one GGUF model over HTTP")
    add_setting_flags(serve)
    add_hive_stub_parser(commands)
    inspect = commands.add_parser("inspect-model", help="what a GGUF model is and needs")
    add_inspect_arguments(inspect)
    # Listed here for --help; main() hands everything after `bench` to bench's own parser.
    commands.add_parser("bench", help="benchmarks beside llama.cpp's servers (source checkout)")
    return parser


# rbee's hive finds a worker binary by asking it this; it wants exactly `release`.
BUILD_INFO = "release"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if list(argv) == ["--build-info"]:
        print(BUILD_INFO)
        return 0
    if argv[:1] and argv[0].startswith("--") and argv[0] not in ("--help", "--version"):
        argv = ["serve", *argv]  # rbee's hive starts `llm-worker-rbee --worker-id ID ...`
    if argv[:1] == ["bench"]:
        return run_bench(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        try:
            settings = settings_from(args)
        except SettingsError as exc:
            die(str(exc), code=exc.exit_code)
        return serve(settings)
    if args.command == "inspect-model":
        return inspect_model(args)
    if args.command == "hive-stub":
        return run_hive_stub(args)
    return 2


def run_bench(args: Sequence[str]) -> int:
    """Runs `python -m bench` from the checkout this package lives in (as `make bench`)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "__main__.py").is_file():
        die(f"bench: the benchmarks live in a source checkout; no bench/ in {root}")
    return subprocess.call([sys.executable, "-m", "bench", *args], cwd=root)


def exit_now(code: int) -> NoReturn:
    """Ends the process at once, its logs flushed: once a stop has answered every client,
    what remains (freeing the engine, which waits for the step in flight, and tearing the
    interpreter down around a loaded model: 0.3-0.5 s under load) is the OS's to do faster.
    Atexit handlers do not run (coverage's `patch = ["_exit"]` saves its data even so)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# The port (or address) cannot be listened on: a bad setting, like any other (exit 2).
LISTEN_FAILED_EXIT = 2


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    try:  # a bad flag value, like the others (exit 2)
        chat_template = read_chat_template(settings.chat_template_file)
    except TemplateFileError as exc:
        die(str(exc), code=2)
    try:  # path, file, device and memory: refused in one line before anything loads
        plan = plan_start(
            settings,
            probe=NvmlProbe(),
            environ=os.environ,
            offload_supported=llama_offload_supported,
            ram_available=available_ram,
        )
    except StartError as exc:
        die(str(exc), code=3)
    os.environ.update(plan.environ)  # before llama.cpp starts CUDA: the chosen GPU only
    for note in plan.notes:
        logging.getLogger(__name__).info("%s", note)
    if chat_template is not None:
        logging.getLogger(__name__).info(
            "chat template: %s, in place of the model's own", settings.chat_template_file
        )
    # Imported only now: llama_cpp loads the native library, and CUDA must see the pinned
    # environment above when it starts (inspection/preflight.py:llama_offload_supported).
    from llm_worker_rbee.engine.llama import LlamaEngine

    device = AskedDevice(settings.device, plan.gpu)  # the reports name it as the operator did
    settings = plan.apply(settings)
    model_path, model_id = plan.model.path, plan.model.model_id
    progress = LoadProgress()
    factory = partial(
        LlamaEngine.load, model_path, settings, model_id, progress, chat_template=chat_template
    )
    vram = nvml_vram(NvmlProbe(), plan.gpu.device.uuid) if plan.gpu is not None else None
    runtime = Runtime(
        runner=ThreadStepRunner(),
        vram=vram,
        device=device,
        model_file=ModelFile.of(plan.summary),
        exit_when_served=exit_now,
    )
    try:
        code = trio.run(
            partial(
                run_worker,
                settings,
                model_id=model_id,
                engine_factory=factory,
                runtime=runtime,
                progress=progress,
            )
        )
    except BaseExceptionGroup as group:
        listen = first_exception(group, ListenError)
        if listen is None:
            raise
        die(str(listen), code=LISTEN_FAILED_EXIT)
    if code == LOAD_FAILED_EXIT:  # one line, like the refusals before loading
        die(progress.snapshot().error or "the model did not load", code=code)
    return code
