"""One Settings object: command line > LLM_WORKER_* environment > defaults, validated once."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from llm_worker_rbee.rbee_worker_id import UnsupportedWorkerType, backend_of_worker_id
from llm_worker_rbee.urls import hive_url_problem, http_url_problem, unspecified_host

ENV_PREFIX = "LLM_WORKER_"
# What an unresolved `--ctx-size` (auto) means where no model file is read (the fake
# engine), and the least auto goes down to when the trained context does not fit.
DEFAULT_CTX_SIZE = 4096


class Settings(BaseModel):
    """Everything the worker is told at start. Immutable once validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    worker_id: str = Field(default_factory=lambda: f"worker-{socket.gethostname()}-{os.getpid()}")
    # A path, or an rbee catalog id (kept exactly as given: rbee's queen matches it).
    model: str | None = None
    model_ref: str | None = None
    alias: str | None = None
    models_dir: Path | None = None
    # A Jinja chat template in place of the model's own (llama-server's flag): read and
    # checked at start (prompts.read_chat_template).
    chat_template_file: Path | None = None
    # Chat completions: a reply's leading `<think>` block as `reasoning_content` (deepseek,
    # llama-server's default) or left in `content` (none); reasoning.py.
    reasoning_format: Literal["none", "deepseek"] = "deepseek"
    tool_fallback: Literal["generic", "off"] = "generic"  # tools.generic; off: a 400
    backend: Literal["auto", "cpu", "cuda"] = "auto"
    device: int | str = 0
    gpu_layers: int | Literal["auto", "all"] = "auto"
    load_timeout: float = Field(default=600.0, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    hive_url: str | None = None
    # rbee's queen (`--queen-url`, given by rbee's hive): the worker-contract heartbeat target.
    queen_url: str | None = None
    # The URL the hive and queen are told to reach this worker at; None: the bound address
    # (an unspecified one such as 0.0.0.0 replaced by this machine's name).
    advertise_url: str | None = None
    # rbee's `--local-mode`: loopback only and no API key (refused when one is set).
    local_mode: bool = False
    # A job posted to /v1/jobs (or rbee's two-call /v1/inference) whose stream nobody opens
    # within this many seconds is cancelled and its slot freed.
    job_pickup_timeout: float = Field(default=30.0, gt=0)
    # None: the model's trained context, bounded by the memory budget (inspection/preflight.py
    # resolves it before the load; `ctx_tokens` is what a worker without a model file uses).
    ctx_size: int | None = Field(default=None, ge=64, le=1 << 20)
    slots: int = Field(default=4, ge=1, le=256)
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024)
    batch_size: int = Field(default=512, ge=1, le=1 << 16)
    # Requests that may wait for a slot: a count (for memory) and the longest wait, in
    # seconds, a request may be queued for (0: no bound but the count); actors/scheduler.py.
    max_queue: int = Field(default=256, ge=0)
    max_queue_wait: float = Field(default=120.0, ge=0)
    drain_timeout: float = Field(default=30.0, ge=0)
    request_timeout: float | None = Field(default=None, gt=0)
    sse_keepalive: float = Field(default=15.0, gt=0)
    heartbeat_interval: float = Field(default=10.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    log_prompts: bool = False
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1 << 30)
    insecure: bool = False
    # Browser origins allowed to call the worker: comma-separated, or `*`; None: no CORS.
    cors_origins: str | None = None
    # The exact mode: per-slot KV streams and prompts decoded alone, so a request's tokens
    # do not depend on its company (docs/PERFORMANCE.md). Off: one KV pool, mixed batches.
    batch_invariant: bool = False
    # N-gram drafts in the fast mode's step (engine/ngram.py): from the request's text and
    # the worker's memory of outputs (ngram), its text only (prompt), or none (off).
    speculation: Literal["ngram", "prompt", "off"] = "ngram"
    # Secrets come from the environment only (a flag would show in `ps`): see SECRET_ENV.
    api_key: SecretStr | None = None
    hive_token: SecretStr | None = None

    @field_validator("hive_url")
    @classmethod
    def _hive_url(cls, value: str | None) -> str | None:
        problem = None if value is None else hive_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("queen_url")
    @classmethod
    def _queen_url(cls, value: str | None) -> str | None:
        if value is not None and (problem := http_url_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("advertise_url")
    @classmethod
    def _advertise_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        problem = http_url_problem(value)
        host = urlsplit(value).hostname or ""
        if problem is None and unspecified_host(host):
            problem = f"{host} is where the worker listens, not an address others can reach"
        if problem is not None:
            raise ValueError(problem)
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_local_mode(self) -> Settings:
        if self.local_mode and self.api_key is not None:
            raise ValueError(
                "--local-mode serves without an API key, but LLM_WORKER_API_KEY "
                "(or LLORCH_API_TOKEN) is set: unset it or drop --local-mode"
            )
        if self.local_mode and not _loopback(self.host):
            raise ValueError(f"--local-mode binds to loopback only, not --host {self.host}")
        return self

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

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for origin in (part.strip() for part in value.split(",")):
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin: give scheme://host[:port] or *")
        return value

    @property
    def allowed_origins(self) -> frozenset[str]:
        if self.cors_origins is None:
            return frozenset()
        return frozenset(part.strip() for part in self.cors_origins.split(","))

    @property
    def ctx_tokens(self) -> int:
        """The context size: `--ctx-size`, or (auto, not resolved against a model file, as
        on the fake engine) DEFAULT_CTX_SIZE."""
        return DEFAULT_CTX_SIZE if self.ctx_size is None else self.ctx_size

    @property
    def drafting(self) -> bool:
        """N-gram drafts in the step (in the exact mode for a stream alone)."""
        return self.speculation != "off"

    @property
    def queue_wait_s(self) -> float | None:
        return self.max_queue_wait or None


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
    _Flag("chat_template_file", "a Jinja chat template in place of the model's own", "PATH"),
    _Flag("reasoning_format", "none or deepseek: <think> as reasoning_content (deepseek)"),
    _Flag("tool_fallback", "generic or off: tools where the template has no format (generic)"),
    _Flag("backend", "auto, cpu or cuda (default auto: cuda when it can)"),
    _Flag("device", "GPU index or UUID (default 0)", "N|UUID"),
    _Flag("gpu_layers", "layers on the GPU: auto, all or N (default auto)", "auto|all|N"),
    _Flag("load_timeout", "seconds the model may take to load (default 600)", "S"),
    _Flag("host", "address to bind (default 127.0.0.1)"),
    _Flag("port", "port to bind (default 8080; 0 picks a free one)"),
    _Flag("hive_url", "the hive's base URL; unset: no hive", "URL"),
    _Flag("queen_url", "rbee's queen: worker-contract heartbeats every 30 s", "URL"),
    _Flag("advertise_url", "the URL the hive and queen reach this worker at", "URL"),
    _Flag("local_mode", "rbee's local mode: loopback only, no API key", switch=True),
    _Flag("cuda_device", "rbee's name for --device", "N"),
    _Flag("job_pickup_timeout", "seconds a posted job waits for its stream reader (30)", "S"),
    _Flag(
        "ctx_size",
        "context tokens, shared by all slots (default: the model's trained context, "
        "bounded by memory)",
        "N",
    ),
    _Flag("slots", "concurrent sequences (default 4)", "N"),
    _Flag("threads", "CPU threads for llama.cpp (default: all cores)", "N"),
    _Flag("batch_size", "tokens per decode step, prompt chunks included (default 512)", "N"),
    _Flag("max_queue", "requests that may wait for a slot (default 256)", "N"),
    _Flag("max_queue_wait", "longest wait in the queue before 503; 0: any (default 120)", "S"),
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
        "cors_origins", "browser origins allowed (comma-separated, or *); default none", "ORIGINS"
    ),
    _Flag(
        "batch_invariant",
        "the same answer alone or in company: per-slot KV, prompts decoded alone (slower)",
        switch=True,
    ),
    _Flag("speculation", "ngram, prompt or off: n-gram drafts from text and past outputs"),
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
    """A bad setting; the message is one line naming the flag. `exit_code` is 2 (a bad
    value), or 3 when the settings ask for something this worker cannot serve."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
    _take_rbee_spellings(values, sources)
    try:
        return Settings(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = str(error["loc"][0]) if error["loc"] else ""
        where = sources.get(loc, flag_of(loc)) if loc else "settings"
        value = f" (got {values[loc]!r})" if loc in values else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"{where}: {message}{value}") from None


def _take_rbee_spellings(values: dict[str, Any], sources: dict[str, str]) -> None:
    """rbee's worker flags in this worker's terms: `--cuda-device` is `--device`, and the
    worker id's type is the backend unless `--backend` says otherwise."""
    if "cuda_device" in values:
        cuda = values.pop("cuda_device")
        if "device" in values and str(values["device"]) != str(cuda):
            raise SettingsError(
                f"{sources['cuda_device']} {cuda} and {sources['device']} "
                f"{values['device']} name different GPUs"
            )
        values["device"] = cuda
        sources["device"] = sources.pop("cuda_device")
    if "backend" not in values and "worker_id" in values:
        try:
            port = int(values.get("port", 8080))
        except (TypeError, ValueError):
            return  # the port's own validation says what is wrong
        try:
            backend = backend_of_worker_id(str(values["worker_id"]), port)
        except UnsupportedWorkerType as exc:
            raise SettingsError(str(exc), exit_code=3) from None
        if backend is not None:
            values["backend"] = backend
            sources["backend"] = sources["worker_id"]


def parse_serve_args(argv: Sequence[str]) -> Settings:
    parser = _OneLineParser(prog="llm-worker-rbee serve")
    add_setting_flags(parser)
    return settings_from(parser.parse_args(argv))


def die(message: str, code: int = 2) -> NoReturn:
    print(f"llm-worker-rbee: error: {message}", file=sys.stderr)
    raise SystemExit(code)
