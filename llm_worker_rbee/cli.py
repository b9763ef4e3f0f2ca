"""`llm-worker-rbee serve | ...`: the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio

from llm_worker_rbee import __version__
from llm_worker_rbee.config import Settings, SettingsError, add_setting_flags, die, settings_from


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        die(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llm-worker-rbee", description="An LLM worker daemon for rbee.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = commands.add_parser("serve", help="serve one GGUF model over HTTP")
    add_setting_flags(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "serve":
        try:
            settings = settings_from(args)
        except SettingsError as exc:
            die(str(exc))
        return serve(settings)
    return 2


def serve(settings: Settings) -> int:
    from llm_worker_rbee.engine.bundled import BUNDLED_MODEL_ID, bundled_model_path
    from llm_worker_rbee.engine.llama import LlamaEngine
    from llm_worker_rbee.engine.runner import ThreadStepRunner
    from llm_worker_rbee.worker import run_worker

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if settings.model is None:
        model_path = bundled_model_path()
        model_id = BUNDLED_MODEL_ID
    else:
        model_path = settings.model.expanduser()
        if not model_path.is_file():
            die(f"--model: no model file at {model_path}", code=3)
        model_id = settings.model_ref or Path(model_path).stem
    factory = partial(LlamaEngine.load, model_path, settings, model_id)
    return trio.run(
        partial(
            run_worker,
            settings,
            model_id=model_id,
            engine_factory=factory,
            runner=ThreadStepRunner(),
        )
    )
