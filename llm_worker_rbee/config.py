"""One Settings object: command line > LLM_WORKER_* environment > defaults, validated once."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "LLM_WORKER_"
# What an unresolved `--ctx-size` (auto) means where no model file is read (the fake
# engine), and the least auto goes down to when the trained context does not fit.
DEFAULT_CTX_SIZE = 4096


class Settings(BaseModel):
    """Everything the worker is told at start. Immutable once validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    worker_id: str = Field(default_factory=lambda: f"worker-{socket.gethostname()}-{os.getpid()}")
    model: Path | None = None
    model_ref: str | None = None
    alias: str | None = None
    models_dir: Path | None = None
    backend: Literal["auto", "cpu", "cuda"] = "auto"
    device: int | str = 0
    gpu_layers: int | Literal["auto", "all"] = "auto"
    load_timeout: float = Field(default=600.0, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    hive_url: str | None = None
    # None: the model's trained context, bounded by the memory budget (engine/preflight.py
    # resolves it before the load; `ctx_tokens` is what a worker without a model file uses).
    ctx_size: int | None = Field(default=None, ge=64, le=1 << 20)
    slots: int = Field(default=4, ge=1, le=256)
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024)
    batch_size: int = Field(default=512, ge=1, le=1 << 16)
    max_queue: int | None = Field(default=None, ge=0)
    drain_timeout: float = Field(default=30.0, ge=0)
    request_timeout: float | None = Field(default=None, gt=0)
    sse_keepalive: float = Field(default=15.0, gt=0)
    heartbeat_interval: float = Field(default=10.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    log_prompts: bool = False
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1 << 30)
    insecure: bool = False
    # The exact mode: per-slot KV streams and prompts decoded alone, so a request's tokens
    # do not depend on its company (docs/PERFORMANCE.md). Off: one KV pool, mixed batches.
    batch_invariant: bool = False
    # Secrets come from the environment only (a flag would show in `ps`): see SECRET_ENV.
    api_key: SecretStr | None = None
    hive_token: SecretStr | None = None

    @field_validator("hive_url")
    @classmethod
    def _hive_url(cls, value: str | None) -> str | None:
        from llm_worker_rbee.hive.client import hive_url_problem

        problem = None if value is None else hive_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _check_ctx_per_slot(self) -> Settings:
        if self.ctx_size is not None and self.ctx_size // self.slots < 16:
            raise ValueError(f"--ctx-size {self.ctx_size} leaves under 16 tokens per slot")
        if not _loopback(self.host) and self.api_key is None and not self.insecure:
            raise ValueError(
                f"--host {self.host} is reachable from other machines: set LLM_WORKER_API_KEY "
                "(or LLORCH_API_TOKEN), or pass --insecure"
            )
        return self

    @field_validator("device", mode="before")
    @classmethod
    def _index_or_uuid(cls, value: object) -> object:
        text = str(value).strip()
        if text.isdigit():
            return int(text)
        if not text or text.startswith("-"):
            raise ValueError("should be a GPU index (0, 1, ...) or a GPU UUID")
        return text

    @field_validator("gpu_layers", mode="before")
    @classmethod
    def _layer_count(cls, value: object) -> object:
        text = str(value).strip().lower()
        if text.isdigit():
            return int(text)
        if text not in ("auto", "all"):
            raise ValueError("should be auto, all or a number of layers")
        return text

    @property
    def n_gpu_layers(self) -> int:
        """llama.cpp's n_gpu_layers: 0 on the CPU, -1 (all) unless resolved to a count."""
        if self.backend == "cpu":
            return 0
        return self.gpu_layers if isinstance(self.gpu_layers, int) else -1

    @property
    def ctx_tokens(self) -> int:
        """The context size: `--ctx-size`, or (auto, not resolved against a model file, as
        on the fake engine) DEFAULT_CTX_SIZE."""
        return DEFAULT_CTX_SIZE if self.ctx_size is None else self.ctx_size

    @property
    def queue_limit(self) -> int:
        return 2 * self.slots if self.max_queue is None else self.max_queue


@dataclass(frozen=True)
class _Flag:
    name: str
    help: str
    metavar: str | None = None
    switch: bool = False  # takes no value: present means true


FLAGS: tuple[_Flag, ...] = (
    _Flag("worker_id", "id the hive knows this worker by"),
    _Flag("model", "path of the GGUF model (default: the bundled Gemma 3 270M)", "PATH"),
    _Flag("model_ref", "the hive's name for the model; hf:ORG/REPO/FILE or file:NAME", "REF"),
    _Flag("alias", "more names clients may use as `model`, comma-separated", "NAMES"),
    _Flag("models_dir", "where --model-ref names are found (default: the cache)", "DIR"),
    _Flag("backend", "auto, cpu or cuda (default auto: cuda when it can)"),
    _Flag("device", "GPU index or UUID (default 0)", "N|UUID"),
    _Flag("gpu_layers", "layers on the GPU: auto, all or N (default auto)", "auto|all|N"),
    _Flag("load_timeout", "seconds the model may take to load (default 600)", "S"),
    _Flag("host", "address to bind (default 127.0.0.1)"),
    _Flag("port", "port to bind (default 8080; 0 picks a free one)"),
    _Flag("hive_url", "the hive's base URL; unset: no hive", "URL"),
    _Flag(
        "ctx_size",
        "context tokens, shared by all slots (default: the model's trained context, "
        "bounded by memory)",
        "N",
    ),
    _Flag("slots", "concurrent sequences (default 4)", "N"),
    _Flag("threads", "CPU threads for llama.cpp (default: all cores)", "N"),
    _Flag("batch_size", "tokens per decode step, prompt chunks included (default 512)", "N"),
    _Flag("max_queue", "requests waiting for a slot before 503 (default 2 x slots)", "N"),
    _Flag("drain_timeout", "seconds in-flight work may take after SIGTERM (default 30)", "S"),
    _Flag("request_timeout", "seconds any request may take, queue included (default none)", "S"),
    _Flag("sse_keepalive", "seconds of silence before a ': ping' on a stream (default 15)", "S"),
    _Flag("heartbeat_interval", "seconds between heartbeats to the hive (default 10)", "S"),
    _Flag("log_level", "debug, info, warning or error"),
    _Flag("log_format", "text or json (one object per line)"),
    _Flag("log_prompts", "log prompt and completion text (off by default)", switch=True),
    _Flag("max_body_bytes", "largest request body; larger ones get 413 (default 4 MiB)", "N"),
    _Flag("insecure", "allow a non-loopback --host without an API key", switch=True),
    _Flag(
        "batch_invariant",
        "the same answer alone or in company: per-slot KV, prompts decoded alone (slower)",
        switch=True,
    ),
)


# Settings read from the environment only, first variable set wins (LLORCH_API_TOKEN: rbee's).
SECRET_ENV: dict[str, tuple[str, ...]] = {
    "api_key": ("LLM_WORKER_API_KEY", "LLORCH_API_TOKEN"),
    "hive_token": ("LLM_WORKER_HIVE_TOKEN",),
}


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


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
        if flag.switch:
            parser.add_argument(
                flag_of(flag.name),
                dest=flag.name,
                action="store_const",
                const="true",
                default=None,
                help=f"{flag.help} [env {env_of(flag.name)}=1]",
            )
            continue
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
    for name, variables in SECRET_ENV.items():
        secret = next((environ[v] for v in variables if environ.get(v)), None)
        if secret is not None:
            values[name] = secret
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
