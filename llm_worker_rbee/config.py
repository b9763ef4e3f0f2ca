"""One Settings object: command line > LLM_WORKER_* environment > defaults, validated once."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ENV_PREFIX = "LLM_WORKER_"


class Settings(BaseModel):
    """Everything the worker is told at start. Immutable once validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    worker_id: str = Field(default_factory=lambda: f"worker-{socket.gethostname()}-{os.getpid()}")
    model: Path | None = None
    model_ref: str | None = None
    backend: Literal["cpu", "cuda"] = "cpu"
    device: int = Field(default=0, ge=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    hive_url: str | None = None
    ctx_size: int = Field(default=4096, ge=64, le=1 << 20)
    slots: int = Field(default=4, ge=1, le=256)
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024)
    batch_size: int = Field(default=512, ge=1, le=1 << 16)
    max_queue: int | None = Field(default=None, ge=0)
    drain_timeout: float = Field(default=30.0, ge=0)
    heartbeat_interval: float = Field(default=10.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _check_ctx_per_slot(self) -> Settings:
        if self.ctx_size // self.slots < 16:
            raise ValueError(f"--ctx-size {self.ctx_size} leaves under 16 tokens per slot")
        return self

    @property
    def queue_limit(self) -> int:
        return 2 * self.slots if self.max_queue is None else self.max_queue


@dataclass(frozen=True)
class _Flag:
    name: str
    help: str
    metavar: str | None = None


FLAGS: tuple[_Flag, ...] = (
    _Flag("worker_id", "id the hive knows this worker by"),
    _Flag("model", "path of the GGUF model (default: the bundled Gemma 3 270M)", "PATH"),
    _Flag("model_ref", "the hive's name for the model", "REF"),
    _Flag("backend", "cpu or cuda"),
    _Flag("device", "GPU index", "N"),
    _Flag("host", "address to bind (default 127.0.0.1)"),
    _Flag("port", "port to bind (default 8080; 0 picks a free one)"),
    _Flag("hive_url", "the hive's base URL; unset: no hive", "URL"),
    _Flag("ctx_size", "context tokens, shared by all slots (default 4096)", "N"),
    _Flag("slots", "concurrent sequences (default 4)", "N"),
    _Flag("threads", "CPU threads for llama.cpp (default: all cores)", "N"),
    _Flag("batch_size", "tokens per decode step, prompt chunks included (default 512)", "N"),
    _Flag("max_queue", "requests waiting for a slot before 503 (default 2 x slots)", "N"),
    _Flag("drain_timeout", "seconds in-flight work may take after SIGTERM (default 30)", "S"),
    _Flag("heartbeat_interval", "seconds between heartbeats to the hive (default 10)", "S"),
    _Flag("log_level", "debug, info, warning or error"),
)


def flag_of(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_of(field: str) -> str:
    return ENV_PREFIX + field.upper()


class SettingsError(Exception):
    """A bad setting; the message is one line naming the flag."""


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise SettingsError(message)


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for flag in FLAGS:
        parser.add_argument(
            flag_of(flag.name),
            dest=flag.name,
            metavar=flag.metavar or flag.name.split("_")[-1].upper(),
            help=f"{flag.help} [env {env_of(flag.name)}]",
            default=None,
        )


def settings_from(
    namespace: argparse.Namespace | Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> Settings:
    """Merges flags over environment over defaults and validates once.

    Raises:
        SettingsError: one line naming the offending flag (and its environment variable).
    """
    environ = os.environ if environ is None else environ
    given = vars(namespace) if isinstance(namespace, argparse.Namespace) else dict(namespace)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for flag in FLAGS:
        if given.get(flag.name) is not None:
            values[flag.name] = given[flag.name]
            sources[flag.name] = flag_of(flag.name)
        elif env_of(flag.name) in environ:
            values[flag.name] = environ[env_of(flag.name)]
            sources[flag.name] = env_of(flag.name)
    try:
        return Settings(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = str(error["loc"][0]) if error["loc"] else ""
        where = sources.get(loc, flag_of(loc)) if loc else "settings"
        value = f" (got {values[loc]!r})" if loc in values else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"{where}: {message}{value}") from None


def parse_serve_args(argv: Sequence[str]) -> Settings:
    parser = _OneLineParser(prog="llm-worker-rbee serve")
    add_setting_flags(parser)
    return settings_from(parser.parse_args(argv))


def die(message: str, code: int = 2) -> NoReturn:
    print(f"llm-worker-rbee: error: {message}", file=sys.stderr)
    raise SystemExit(code)
