"""Facts read from the runtime's own objects: the app's routes (and the hive stub's), the
Settings with their flags and variables, the command line's argparse tree, and the closed
vocabularies clients and hives see (stop reasons, states, request fields, metrics...).

This is the one module of the checker that imports the package's runtime; it lives outside
the package, so importing `create_app` or `build_parser` here makes no cycle.
"""

from __future__ import annotations

import argparse
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import trio

from devtools.behaviors.facts import Fact, backticked, env_fact, flag_fact, route_fact
from devtools.behaviors.paths import PACKAGE
from llm_worker_rbee import config
from llm_worker_rbee.actors.lifecycle import LifecycleActor, LifecycleHandle
from llm_worker_rbee.cli import build_parser
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.loading import LoadStage
from llm_worker_rbee.hive.vitals import HiveStatus
from llm_worker_rbee.hive_stub.server import HiveStub
from llm_worker_rbee.http import response_models, schemas
from llm_worker_rbee.http.anthropic import schemas as anthropic_schemas
from llm_worker_rbee.http.app import create_app
from llm_worker_rbee.http.responses import schemas as responses_api_schemas
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.system.admin import ShutdownBody
from llm_worker_rbee.http.system.tokens import DetokenizeBody, TokenizeBody
from llm_worker_rbee.messages.hive import COMMANDS
from llm_worker_rbee.messages.inference import FinishReason
from llm_worker_rbee.messages.lifecycle import LifecycleCommand, WorkerState
from llm_worker_rbee.messages.session import StopReason
from llm_worker_rbee.metrics import WorkerMetrics


def app_routes(app: Any) -> list[str]:
    """`METHOD /path` for every rule of a Quart app (HEAD, OPTIONS and static left out);
    a WebSocket route is `WS /path`."""
    routes: set[str] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        if getattr(rule, "websocket", False):
            routes.add(f"WS {path}")
            continue
        routes.update(f"{m} {path}" for m in rule.methods if m not in ("HEAD", "OPTIONS"))
    return sorted(routes)


def worker_app() -> Any:
    """The worker's app as `create_app` builds it, outside any trio run (nothing runs)."""

    actor = LifecycleActor(drain_timeout=0.0, handle_signals=False)
    send, _ = trio.open_memory_channel[LifecycleCommand](1)
    services = Services(
        settings=Settings(worker_id="inventory"),
        lifecycle=LifecycleHandle(send, actor),
        model_id="inventory",
        started_at=0.0,
    )
    return create_app(services)


def route_facts(app: Any | None = None, stub_app: Any | None = None) -> list[Fact]:
    facts = [route_fact(r, "http.app:create_app") for r in app_routes(app or worker_app())]
    stub = stub_app or HiveStub().app()
    facts += [route_fact(r, "hive_stub.server:_app") for r in app_routes(stub)]
    return facts


def settings_facts(
    settings: type[Any] | None = None,
    flags: Sequence[Any] | None = None,
    secret_env: Mapping[str, Sequence[str]] | None = None,
) -> list[Fact]:
    """Every Settings field: its `serve` flag and `LLM_WORKER_*` variable, or the variables
    a secret is read from."""
    settings = settings or config.Settings
    flags = config.FLAGS if flags is None else flags
    secret_env = config.SECRET_ENV if secret_env is None else secret_env
    by_name = {flag.name: flag for flag in flags}
    facts: list[Fact] = []
    for name in settings.model_fields:
        origin = f"config:Settings.{name}"
        if name in by_name:
            facts.append(flag_fact(config.flag_of(name), origin))
            facts.append(env_fact(config.env_of(name), origin))
        elif name in secret_env:
            facts += [env_fact(variable, origin) for variable in secret_env[name]]
        else:  # a setting nothing can set: still a behaviour to name
            facts.append(backticked("setting", name, origin))
    for name in by_name.keys() - settings.model_fields.keys():
        facts.append(flag_fact(config.flag_of(name), "config:FLAGS"))
    return facts


def cli_facts(parser: argparse.ArgumentParser | None = None) -> list[Fact]:
    """Every subcommand, and every option of it, named in a row with the subcommand."""
    parser = parser or build_parser()
    facts: list[Fact] = []

    def walk(node: argparse.ArgumentParser, path: str) -> None:
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    command = f"{path} {name}".strip()
                    name = f"llm-worker-rbee {command}"
                    facts.append(Fact("subcommand", name, "cli", re.escape(name) + r"(?![\w-])"))
                    walk(child, command)
            elif path != "serve":  # serve's flags are the Settings' (settings_facts)
                for option in action.option_strings:
                    if option.startswith("--") and option != "--help":
                        context = f"llm-worker-rbee {path}".strip()
                        facts.append(flag_fact(option, f"cli:{path or 'main'}", context))

    walk(parser, "")
    return facts


# Error codes and types the code computes at run time, where the checker cannot read them:
def _literal_values(annotation: Any) -> list[str]:
    """The strings of every Literal inside an annotation (unions and Optional included)."""
    if typing.get_origin(annotation) is typing.Literal:
        return [a for a in typing.get_args(annotation) if isinstance(a, str)]
    return [v for arg in typing.get_args(annotation) for v in _literal_values(arg)]


def vocabulary_facts() -> list[Fact]:
    """The closed sets clients and hives see: stop and finish reasons, states, stages,
    hive commands, rbee event types, refused OpenAI parameters, request fields, metrics."""
    facts: list[Fact] = []

    def add(kind: str, origin: str, values: Iterable[str]) -> None:
        facts.extend(backticked(kind, v, origin) for v in dict.fromkeys(values))

    add("stop reason", "messages.session:StopReason", typing.get_args(StopReason))
    add("engine finish reason", "messages.inference:FinishReason", typing.get_args(FinishReason))
    finish = response_models.ChatChoice.model_fields["finish_reason"].annotation
    add("OpenAI finish_reason", "http.response_models:ChatChoice", _literal_values(finish))
    add("worker state", "messages.lifecycle:WorkerState", [s.value for s in WorkerState])
    add("load stage", "engine.loading:LoadStage", [s.value for s in LoadStage])
    add("hive status", "hive.vitals:HiveStatus", typing.get_args(HiveStatus))
    add("hive command", "messages.hive:COMMANDS", COMMANDS)
    event = response_models.InferenceEvent.model_fields["type"].annotation
    add("rbee event type", "http.response_models:InferenceEvent", _literal_values(event))
    add("refused OpenAI parameter", "http.schemas:REFUSED", schemas.REFUSED)
    bodies = (
        schemas.ChatCompletionBody,
        schemas.CompletionBody,
        schemas.InferenceBody,
        TokenizeBody,
        DetokenizeBody,
        ShutdownBody,
        responses_api_schemas.ResponsesBody,
        anthropic_schemas.MessagesBody,
        anthropic_schemas.CountTokensBody,
    )
    for body in bodies:
        origin = f"{body.__module__.removeprefix(PACKAGE + '.')}:{body.__name__}"
        add("request field", origin, [f.alias or n for n, f in body.model_fields.items()])
    names = [m.name for m in WorkerMetrics().registry.collect()]
    add("metric", "metrics:WorkerMetrics", names)
    return facts
