"""The behaviour inventory (docs/BEHAVIORS.md), checked against the code and the tests.

`llm-worker-rbee behaviors check` (run by `make test`, and by tests/test_behaviors.py) fails
when:

- a behaviour has no covering test or scenario, or a test or scenario names an unknown id
  (tests declare `@pytest.mark.behavior("HTTP-007", ...)`, scenarios `covers = [...]`);
- a row's "where" (`module:function`, `module:Class.method`, relative to the package) no
  longer exists;
- a row's "covered by" column differs from what the tests declare (`behaviors sync`
  rewrites it), or the "Coverage gaps" section lists anything;
- something the code has appears in no behaviour: a route (the app's own url_map), a
  `serve` flag or its `LLM_WORKER_*` variable (Settings and FLAGS), a flag of another
  subcommand (the argparse tree), an environment variable the code reads, an error code or
  type it emits, a stop or finish reason, a request field, a metric, an SSE event...

`behaviors show` prints the table with each "where" as the file and line it is at now.
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
import sys
import tomllib
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llm_worker_rbee

PACKAGE = "llm_worker_rbee"
PACKAGE_DIR = Path(llm_worker_rbee.__file__).resolve().parent
# The source checkout: docs/BEHAVIORS.md, tests/ and scenarios/ live beside the package.
SOURCE_ROOT = PACKAGE_DIR.parent
INVENTORY = Path("docs/BEHAVIORS.md")

# Section title -> the prefix of its ids, in the order the sections come in.
SECTIONS: dict[str, str] = {
    "HTTP API": "HTTP",
    "Model loading": "LOAD",
    "Inference pipeline": "INF",
    "Streaming": "SSE",
    "Hive": "HIVE",
    "Resources": "RES",
    "Configuration": "CFG",
    "Daemon lifecycle": "LIFE",
    "Errors": "ERR",
    "OpenAI compatibility": "OAI",
}
GAPS = "Coverage gaps"
ID = re.compile(r"^([A-Z]+)-(\d{3})$")
MARKER = "behavior"


# --- The inventory --------------------------------------------------------------------


@dataclass(frozen=True)
class Behavior:
    id: str
    section: str
    text: str
    where: tuple[str, ...]
    covered_by: tuple[str, ...]
    line: int  # in the inventory file


@dataclass
class Inventory:
    behaviors: list[Behavior] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # ids the "Coverage gaps" table lists
    problems: list[str] = field(default_factory=list)

    def by_id(self) -> dict[str, Behavior]:
        return {b.id: b for b in self.behaviors}


def split_row(line: str) -> list[str]:
    """The cells of a markdown table row; `\\|` is a literal bar inside a cell."""
    body = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", body)]


def _code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _list_cell(cell: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in cell.split(",") if part.strip())


def parse_inventory(text: str, name: str = str(INVENTORY)) -> Inventory:
    """The rows of every section's table, and what is wrong with the file's shape."""
    inventory = Inventory()
    section: str | None = None
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            section = line[3:].strip()
            if section not in SECTIONS and section != GAPS:
                inventory.problems.append(
                    f"{name}:{number}: unknown section {section!r}; the sections are "
                    + ", ".join(map(repr, [*SECTIONS, GAPS]))
                )
            continue
        if not line.startswith("|") or section is None:
            continue
        cells = split_row(line)
        if not cells or cells[0] in ("id", "") or set(cells[0]) <= set("-: "):
            continue  # the header and the separator
        if section == GAPS:
            inventory.gaps.append(cells[0])
            continue
        if section not in SECTIONS:
            continue
        if len(cells) != 4:
            inventory.problems.append(
                f"{name}:{number}: a row needs 4 cells (id, behaviour, where, covered by); "
                f"found {len(cells)}"
            )
            continue
        ident, behaviour, where, covered = cells
        match = ID.match(ident)
        if match is None or match.group(1) != SECTIONS[section]:
            inventory.problems.append(
                f"{name}:{number}: id {ident!r} should be {SECTIONS[section]}-NNN in "
                f"section {section!r}"
            )
            continue
        if ident in seen:
            inventory.problems.append(
                f"{name}:{number}: {ident} is also the id at line {seen[ident]}"
            )
            continue
        seen[ident] = number
        refs = tuple(_code_spans(where))
        if not refs:
            inventory.problems.append(f"{name}:{number}: {ident} says nowhere where it lives")
        inventory.behaviors.append(
            Behavior(ident, section, behaviour, refs, _list_cell(covered), number)
        )
    missing = [s for s in SECTIONS if s not in {b.section for b in inventory.behaviors}]
    if missing:
        inventory.problems.append(f"{name}: no behaviours in section(s) {', '.join(missing)}")
    return inventory


# --- Where a behaviour lives ----------------------------------------------------------


@dataclass(frozen=True)
class Location:
    path: Path
    line: int


_Scope = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
_Found = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef | ast.Assign | ast.AnnAssign


def _definitions(scope: _Scope) -> Iterator[_Found]:
    """The names a scope defines, including inside if/try/with/for (not nested scopes)."""
    pending: list[ast.stmt] = list(scope.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, _Found):
            yield node
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    pending.append(child)


def _defines(node: _Found, name: str) -> bool:
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.target.id == name
    return node.name == name


def module_file(module: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The source file of `module` (dotted, relative to the package), if there is one."""
    base = package_dir.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@dataclass
class _Sources:
    """Parsed modules, each parsed once."""

    package_dir: Path
    trees: dict[Path, ast.Module] = field(default_factory=dict)

    def tree(self, path: Path) -> ast.Module:
        if path not in self.trees:
            self.trees[path] = ast.parse(path.read_text(encoding="utf-8"), str(path))
        return self.trees[path]


def resolve(ref: str, sources: _Sources) -> Location | str:
    """`module:qualname` -> where it is, or why it cannot be found.

    The module is relative to the package (`http.app`, or `llm_worker_rbee.http.app`); the
    qualname walks classes and functions (`register.health`: a route handler defined inside
    `register`), and may end on a module- or class-level assignment (a table, a constant).
    """
    module, sep, qualname = ref.partition(":")
    if not sep or not module or not qualname:
        return f"`{ref}` is not module:function"
    module = module.removeprefix(PACKAGE + ".")
    path = module_file(module, sources.package_dir)
    if path is None:
        return f"`{ref}`: there is no module {PACKAGE}.{module}"
    scope: _Found | ast.Module = sources.tree(path)
    line = 1
    for part in qualname.split("."):
        if not isinstance(
            scope, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        ):
            return f"`{ref}`: {part!r} cannot be inside an assignment"
        found = next((d for d in _definitions(scope) if _defines(d, part)), None)
        if found is None:
            return f"`{ref}`: no {part!r} in {_relative(path)}"
        scope, line = found, found.lineno
    return Location(path, line)


def _relative(path: Path) -> str:
    try:
        return path.relative_to(SOURCE_ROOT).as_posix()
    except ValueError:
        return path.as_posix()


# --- What the tests and scenarios declare ---------------------------------------------


@dataclass(frozen=True)
class Declaration:
    node: str  # tests/test_x.py::test_y, tests/test_x.py::TestZ, tests/test_x.py, scenarios/x.toml
    ids: tuple[str, ...]
    where: str  # file:line, for messages


def _behavior_marks(node: ast.expr, where: str, problems: list[str]) -> list[str] | None:
    """The ids of a `pytest.mark.behavior(...)` expression; None if it is not one."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    if not (isinstance(func, ast.Attribute) and func.attr == MARKER):
        return None
    if not (isinstance(func.value, ast.Attribute) and func.value.attr == "mark"):
        return None
    ids: list[str] = []
    for arg in node.args:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            ids.append(arg.value)
        else:
            problems.append(f"{where}: pytest.mark.{MARKER} takes string ids only")
    if not ids or node.keywords:
        problems.append(f"{where}: pytest.mark.{MARKER} needs one or more ids and nothing else")
    return ids


def _module_marks(value: ast.expr, where: str, problems: list[str]) -> list[str]:
    items = value.elts if isinstance(value, ast.List | ast.Tuple) else [value]
    ids: list[str] = []
    for item in items:
        ids += _behavior_marks(item, where, problems) or []
    return ids


def test_declarations(root: Path, problems: list[str]) -> list[Declaration]:
    """Every `@pytest.mark.behavior(...)` under tests/: on test functions, test classes
    (and their methods), and as a module's `pytestmark`."""
    declarations: list[Declaration] = []
    for path in sorted((root / "tests").rglob("*.py")):
        name = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), name)
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
            ):
                where = f"{name}:{node.lineno}"
                ids = _module_marks(node.value, where, problems)
                if ids:
                    declarations.append(Declaration(name, tuple(ids), where))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                declarations += _declared_on(node, name, problems)
    return declarations


def _declared_on(
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, prefix: str, problems: list[str]
) -> list[Declaration]:
    node_id = f"{prefix}::{node.name}"
    where = f"{prefix.split('::')[0]}:{node.lineno}"
    ids: list[str] = []
    for decorator in node.decorator_list:
        ids += _behavior_marks(decorator, where, problems) or []
    found = [Declaration(node_id, tuple(ids), where)] if ids else []
    if ids and not node.name.startswith(("test", "Test")):
        problems.append(f"{where}: {node.name} declares behaviours but pytest does not collect it")
    if isinstance(node, ast.ClassDef):
        for child in node.body:
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found += _declared_on(child, node_id, problems)
    return found


def scenario_declarations(root: Path, problems: list[str]) -> list[Declaration]:
    """`covers = [...]` at the top of every scenarios/*.toml."""
    declarations: list[Declaration] = []
    for path in sorted((root / "scenarios").glob("*.toml")):
        name = path.relative_to(root).as_posix()
        try:
            covers = tomllib.loads(path.read_text(encoding="utf-8")).get("covers", [])
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{name}: not TOML: {exc}")
            continue
        if not isinstance(covers, list) or not all(isinstance(c, str) for c in covers):
            problems.append(f"{name}: covers must be a list of behaviour ids")
        elif covers:
            declarations.append(Declaration(name, tuple(covers), name))
    return declarations


# --- What the code has ----------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """Something the code has that some behaviour must name.

    `pattern` is searched in the behaviour sentences; with `context`, the same row must
    also contain it (a flag of one subcommand is named with the subcommand).
    """

    kind: str
    name: str
    origin: str
    pattern: str
    context: str | None = None

    def found_in(self, texts: Sequence[str]) -> bool:
        regex = re.compile(self.pattern)
        return any(
            regex.search(text) and (self.context is None or self.context in text) for text in texts
        )


def backticked(kind: str, name: str, origin: str) -> Fact:
    return Fact(kind, name, origin, re.escape(f"`{name}`"))


def route_fact(route: str, origin: str) -> Fact:
    return Fact("route", route, origin, re.escape(route) + r"(?![\w/{}.-])")


def flag_fact(flag: str, origin: str, context: str | None = None) -> Fact:
    return Fact("flag", flag, origin, r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])", context)


def env_fact(name: str, origin: str) -> Fact:
    return Fact("environment variable", name, origin, rf"(?<![A-Z0-9_]){name}(?![A-Z0-9_])")


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
    import trio

    from llm_worker_rbee.actors.lifecycle import LifecycleActor, LifecycleHandle
    from llm_worker_rbee.config import Settings
    from llm_worker_rbee.http.app import create_app
    from llm_worker_rbee.http.services import Services
    from llm_worker_rbee.messages.lifecycle import LifecycleCommand

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
    from llm_worker_rbee.hive.stub import HiveStub

    facts = [route_fact(r, "http.app:create_app") for r in app_routes(app or worker_app())]
    stub = stub_app or HiveStub().app()
    facts += [route_fact(r, "hive.stub:_app") for r in app_routes(stub)]
    return facts


def settings_facts(
    settings: type[Any] | None = None,
    flags: Sequence[Any] | None = None,
    secret_env: Mapping[str, Sequence[str]] | None = None,
) -> list[Fact]:
    """Every Settings field: its `serve` flag and `LLM_WORKER_*` variable, or the variables
    a secret is read from."""
    from llm_worker_rbee import config

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
    from llm_worker_rbee.cli import build_parser

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
# (module:qualname of the function, "code" or "type") -> every value it can produce.
def _computed_errors() -> dict[tuple[str, str], tuple[str, ...]]:
    from llm_worker_rbee.messages.lifecycle import WorkerState

    return {
        # Any state but ready: the only one in which requests are served.
        ("http.services:Services.serving", "code"): tuple(
            f"worker_{s.value}" for s in WorkerState if s is not WorkerState.READY
        ),
        ("http.app:_register_errors._http_error", "code"): (
            "not_found",
            "method_not_allowed",
            "request_too_large",
            "http_error",
        ),
        ("http.app:_register_errors._http_error", "type"): (
            "invalid_request_error",
            "server_error",
        ),
        ("hive.stub:_app.worker_call", "code"): ("http_<status>",),
    }


# Callables that take an error's type and code: name -> (position of type, of code).
_ERROR_CALLS: dict[str, tuple[int | None, int | None]] = {
    "ApiError": (None, None),  # keywords only
    "bad_request": (None, None),
    "ErrorInfo": (1, 2),
    "error_body": (1, 2),
}


def _modules(package_dir: Path) -> Iterator[tuple[str, Path, ast.Module]]:
    """(dotted name relative to the package, file, syntax tree) for every module."""
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__") or PACKAGE
        yield name, path, _parsed(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=512)
def _parsed(path: Path, mtime_ns: int) -> ast.Module:
    """Each module parsed once per version of it (the facts walk the package thrice)."""
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _scopes(tree: ast.Module) -> Iterator[tuple[str, ast.AST, set[str]]]:
    """(qualname, node, parameters of the enclosing functions) for every node."""

    def visit(
        node: ast.AST, qualname: str, params: set[str]
    ) -> Iterator[tuple[str, ast.AST, set[str]]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{qualname}.{child.name}".lstrip(".")
                inner = set(params)
                if not isinstance(child, ast.ClassDef):
                    args = child.args
                    inner |= {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
                yield name, child, inner
                yield from visit(child, name, inner)
            else:
                yield qualname, child, params
                yield from visit(child, qualname, params)

    yield from visit(tree, "", set())


def error_facts(package_dir: Path = PACKAGE_DIR, problems: list[str] | None = None) -> list[Fact]:
    """Every error `code` and `type` the package emits: arguments of ApiError, bad_request,
    ErrorInfo and error_body, their defaults, and exception classes' `code`. A value
    computed at run time must be listed in `_computed_errors`."""
    problems = [] if problems is None else problems
    computed = _computed_errors()
    used: set[tuple[str, str]] = set()
    found: dict[tuple[str, str], str] = {}
    for module, path, tree in _modules(package_dir):
        for qualname, node, params in _scopes(tree):
            origin = f"{module}:{qualname or '<module>'}"
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign) and _defines(stmt, "code"):
                        assigned = stmt.value
                        if isinstance(assigned, ast.Constant) and isinstance(assigned.value, str):
                            found.setdefault(("code", assigned.value), f"{origin}.code")
            if isinstance(node, ast.FunctionDef) and (
                node.name == "bad_request" or qualname.endswith("ApiError.__init__")
            ):
                args = node.args
                named = [*args.args[len(args.args) - len(args.defaults) :], *args.kwonlyargs]
                defaults = [*args.defaults, *args.kw_defaults]
                for arg, default in zip(named, defaults, strict=True):
                    if (
                        arg.arg in ("code", "type")
                        and isinstance(default, ast.Constant)
                        and isinstance(default.value, str)
                    ):
                        found.setdefault((arg.arg, default.value), origin)
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            callee = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if callee not in _ERROR_CALLS:
                continue
            positions = dict(zip(("type", "code"), _ERROR_CALLS[callee], strict=True))
            for kind in ("type", "code"):
                value: ast.expr | None = next(
                    (k.value for k in node.keywords if k.arg == kind), None
                )
                index = positions[kind]
                if value is None and index is not None and len(node.args) > index:
                    value = node.args[index]
                if value is None:
                    continue
                if isinstance(value, ast.Constant):
                    if isinstance(value.value, str):
                        found.setdefault((kind, value.value), origin)
                    continue
                if isinstance(value, ast.Attribute) or (
                    isinstance(value, ast.Name) and value.id in params
                ):
                    continue  # passed on from another error, not a new one
                key = (origin, kind)
                if key in computed:
                    used.add(key)
                    for item in computed[key]:
                        found.setdefault((kind, item), origin)
                else:
                    problems.append(
                        f"{_relative(path)}:{node.lineno} ({origin}): an error {kind} computed "
                        f"at run time; list its values in behaviors._computed_errors"
                    )
    for key in computed.keys() - used:
        problems.append(
            f"behaviors._computed_errors lists {key[0]} ({key[1]}), which computes none any more"
        )
    return [
        backticked(f"error {kind}", value, origin)
        for (kind, value), origin in sorted(found.items())
    ]


def _variable_name(node: ast.expr, constants: Mapping[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _is_environ(node: ast.expr) -> bool:
    return "environ" in ast.unparse(node)


def environment_facts(package_dir: Path = PACKAGE_DIR) -> list[Fact]:
    """Environment variables the package reads by name (`environ.get(X)`, `environ[X]`,
    `X in environ`, `os.getenv(X)`), X a literal or a module constant."""
    facts: dict[str, str] = {}
    for module, _, tree in _modules(package_dir):
        constants = {
            t.id: s.value.value
            for s in tree.body
            if isinstance(s, ast.Assign)
            and isinstance(s.value, ast.Constant)
            and isinstance(s.value.value, str)
            for t in s.targets
            if isinstance(t, ast.Name)
        }

        for qualname, node, _ in _scopes(tree):
            names: list[ast.expr] = []
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                if isinstance(func, ast.Attribute) and (
                    (func.attr == "get" and _is_environ(func.value)) or func.attr == "getenv"
                ):
                    names.append(node.args[0])
            elif isinstance(node, ast.Subscript) and _is_environ(node.value):
                if isinstance(node.ctx, ast.Load):
                    names.append(node.slice)
            elif (
                isinstance(node, ast.Compare)
                and len(node.ops) == 1
                and isinstance(node.ops[0], ast.In)
                and _is_environ(node.comparators[0])
            ):
                names.append(node.left)
            for expr in names:
                variable = _variable_name(expr, constants)
                if variable is not None:
                    facts.setdefault(variable, f"{module}:{qualname or '<module>'}")
    return [env_fact(name, origin) for name, origin in sorted(facts.items())]


def _literal_values(annotation: Any) -> list[str]:
    """The strings of every Literal inside an annotation (unions and Optional included)."""
    if typing.get_origin(annotation) is typing.Literal:
        return [a for a in typing.get_args(annotation) if isinstance(a, str)]
    return [v for arg in typing.get_args(annotation) for v in _literal_values(arg)]


def sse_event_facts(package_dir: Path = PACKAGE_DIR) -> list[Fact]:
    """The `event:` names of every `sse_data(payload, "name")` the package sends."""
    facts: dict[str, str] = {}
    for module, _, tree in _modules(package_dir):
        for qualname, node, _ in _scopes(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "sse_data"
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                facts.setdefault(node.args[1].value, f"{module}:{qualname}")
    return [backticked("SSE event", name, origin) for name, origin in sorted(facts.items())]


def payload_facts(package_dir: Path = PACKAGE_DIR) -> list[Fact]:
    """The fields of the hive payloads (the dicts status.py's builders return)."""
    tree = ast.parse((package_dir / "status.py").read_text(encoding="utf-8"))
    facts: list[Fact] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.endswith("_payload"):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and isinstance(inner.value, ast.Dict):
                    for key in inner.value.keys:
                        if isinstance(key, ast.Constant) and isinstance(key.value, str):
                            origin = f"status:{node.name}"
                            facts.append(backticked("hive payload field", key.value, origin))
    return facts


def vocabulary_facts() -> list[Fact]:
    """The closed sets clients and hives see: stop and finish reasons, states, stages,
    hive commands, rbee event types, refused OpenAI parameters, request fields, metrics."""
    from llm_worker_rbee.engine.loading import LoadStage
    from llm_worker_rbee.hive.vitals import HiveStatus
    from llm_worker_rbee.http import anthropic_schemas, responses, responses_api_schemas, schemas
    from llm_worker_rbee.http.admin_routes import ShutdownBody
    from llm_worker_rbee.http.token_routes import DetokenizeBody, TokenizeBody
    from llm_worker_rbee.messages.hive import COMMANDS
    from llm_worker_rbee.messages.inference import FinishReason
    from llm_worker_rbee.messages.lifecycle import WorkerState
    from llm_worker_rbee.messages.session import StopReason
    from llm_worker_rbee.metrics import WorkerMetrics

    facts: list[Fact] = []

    def add(kind: str, origin: str, values: Iterable[str]) -> None:
        facts.extend(backticked(kind, v, origin) for v in dict.fromkeys(values))

    add("stop reason", "messages.session:StopReason", typing.get_args(StopReason))
    add("engine finish reason", "messages.inference:FinishReason", typing.get_args(FinishReason))
    finish = responses.ChatChoice.model_fields["finish_reason"].annotation
    add("OpenAI finish_reason", "http.responses:ChatChoice", _literal_values(finish))
    add("worker state", "messages.lifecycle:WorkerState", [s.value for s in WorkerState])
    add("load stage", "engine.loading:LoadStage", [s.value for s in LoadStage])
    add("hive status", "hive.vitals:HiveStatus", typing.get_args(HiveStatus))
    add("hive command", "messages.hive:COMMANDS", COMMANDS)
    event = responses.InferenceEvent.model_fields["type"].annotation
    add("rbee event type", "http.responses:InferenceEvent", _literal_values(event))
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


def code_facts(
    package_dir: Path = PACKAGE_DIR,
    problems: list[str] | None = None,
    *,
    app: Any | None = None,
    settings: type[Any] | None = None,
    flags: Sequence[Any] | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> list[Fact]:
    """Everything the code has that the inventory must name (see the module docstring)."""
    problems = [] if problems is None else problems
    facts = [
        *route_facts(app),
        *settings_facts(settings, flags),
        *cli_facts(parser),
        *environment_facts(package_dir),
        *error_facts(package_dir, problems),
        *sse_event_facts(package_dir),
        *payload_facts(package_dir),
        *vocabulary_facts(),
    ]
    return list({(f.kind, f.name, f.context): f for f in facts}.values())


# --- The check ------------------------------------------------------------------------


@dataclass
class Report:
    inventory: Inventory
    declarations: list[Declaration]
    locations: dict[str, list[Location | str]]
    problems: list[str]

    def covering(self) -> dict[str, list[str]]:
        """id -> the tests and scenarios that declare it, in file order."""
        result: dict[str, list[str]] = {}
        for declaration in self.declarations:
            for ident in declaration.ids:
                result.setdefault(ident, [])
                if declaration.node not in result[ident]:
                    result[ident].append(declaration.node)
        return result


def check(
    root: Path = SOURCE_ROOT,
    *,
    package_dir: Path = PACKAGE_DIR,
    facts: Callable[[list[str]], list[Fact]] | None = None,
) -> Report:
    """Reads the inventory, the tests, the scenarios and the code; `problems` is empty when
    they agree."""
    path = root / INVENTORY
    if not path.is_file():
        report = Report(Inventory(), [], {}, [f"{path}: no inventory (a source checkout?)"])
        return report
    inventory = parse_inventory(path.read_text(encoding="utf-8"), INVENTORY.as_posix())
    problems = list(inventory.problems)
    declarations = test_declarations(root, problems) + scenario_declarations(root, problems)
    report = Report(inventory, declarations, {}, problems)
    known = inventory.by_id()
    sources = _Sources(package_dir)

    for behavior in inventory.behaviors:
        located = [resolve(ref, sources) for ref in behavior.where]
        report.locations[behavior.id] = located
        problems += [f"{behavior.id}: where {why}" for why in located if isinstance(why, str)]

    covering = report.covering()
    for declaration in declarations:
        for ident in declaration.ids:
            if ident not in known:
                problems.append(
                    f"{declaration.where}: {declaration.node} names unknown behaviour {ident}"
                )
    for behavior in inventory.behaviors:
        tests = covering.get(behavior.id, [])
        if not tests:
            problems.append(
                f"{behavior.id}: no test or scenario covers it ({behavior.text[:70]}); add "
                f'@pytest.mark.behavior("{behavior.id}") to a test that checks it'
            )
        elif sorted(tests) != sorted(behavior.covered_by):
            problems.append(
                f"{behavior.id}: the table says covered by "
                f"{', '.join(behavior.covered_by) or 'nothing'}; the tests say "
                f"{', '.join(tests)} (run `llm-worker-rbee behaviors sync`)"
            )
    if inventory.gaps:
        problems.append(
            f"{GAPS}: lists {', '.join(inventory.gaps)}; every behaviour needs a covering test"
        )

    texts = [b.text for b in inventory.behaviors]
    gather = facts or (lambda found: code_facts(package_dir, found))
    for fact in gather(problems):
        if not fact.found_in(texts):
            where = f" (with `{fact.context}`)" if fact.context else ""
            problems.append(
                f"{fact.kind} {fact.name} ({fact.origin}) appears in no behaviour{where}: add a "
                f"row naming it to {INVENTORY.as_posix()}"
            )
    return report


# --- sync and show --------------------------------------------------------------------


def sync(root: Path = SOURCE_ROOT) -> tuple[str, int]:
    """The inventory with each "covered by" cell set to what the tests declare and the
    gaps table listing the behaviours nothing covers; and how many rows changed."""
    path = root / INVENTORY
    text = path.read_text(encoding="utf-8")
    problems: list[str] = []
    declarations = test_declarations(root, problems) + scenario_declarations(root, problems)
    report = Report(parse_inventory(text), declarations, {}, problems)
    covering = report.covering()
    lines = text.splitlines()
    changed = 0
    uncovered: list[str] = []
    section: str | None = None
    out: list[str] = []
    for line in lines:
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("|") and section == GAPS:
            cells = split_row(line)
            if cells and cells[0] != "id" and not set(cells[0]) <= set("-: "):
                continue  # rewritten below
        elif line.startswith("|") and section in SECTIONS:
            cells = split_row(line)
            if cells and ID.match(cells[0]) and len(cells) == 4:
                tests = covering.get(cells[0], [])
                if not tests:
                    uncovered.append(cells[0])
                cell = ", ".join(tests)
                if cell != cells[3]:
                    changed += 1
                    cells[3] = cell
                    line = "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
        out.append(line)
    result = "\n".join(out) + "\n"
    if uncovered:
        gap_rows = "".join(f"| {i} | no test or scenario declares it |\n" for i in uncovered)
        result = re.sub(r"(## Coverage gaps\n(?:.*\n)*?\|[-| :]+\|\n)", r"\1" + gap_rows, result)
    return result, changed


def show(report: Report, ids: Sequence[str] = ()) -> str:
    """The table, each "where" as path:line (as the code is now)."""
    rows = ["| id | behaviour | where | covered by |", "|---|---|---|---|"]
    for behavior in report.inventory.behaviors:
        if ids and behavior.id not in ids and behavior.section not in ids:
            continue
        places = []
        for ref, located in zip(
            behavior.where, report.locations.get(behavior.id, []), strict=False
        ):
            qualname = ref.partition(":")[2]
            if isinstance(located, Location):
                places.append(f"{_relative(located.path)}:{located.line} {qualname}")
            else:
                places.append(f"MISSING {ref}")
        tests = report.covering().get(behavior.id, [])
        rows.append(
            f"| {behavior.id} | {behavior.text.replace('|', chr(92) + '|')} | "
            f"{', '.join(places)} | {len(tests)}: {', '.join(tests)} |"
        )
    return "\n".join(rows)


# --- The command line -----------------------------------------------------------------


def add_behaviors_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "behaviors", help="the behaviour inventory, docs/BEHAVIORS.md (source checkout)"
    )
    actions = parser.add_subparsers(dest="behaviors_command", required=True)
    for name, text in (
        ("check", "fail on an uncovered, unknown or missing behaviour"),
        ("show", "print the inventory with current line numbers"),
        ("sync", "rewrite the covered-by column from the tests' declarations"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument(
            "--root", type=Path, default=SOURCE_ROOT, help="the source checkout (default: this one)"
        )
        if name == "show":
            action.add_argument("ids", nargs="*", help="behaviour ids or section names")


def run(args: argparse.Namespace) -> int:
    root: Path = args.root
    if args.behaviors_command == "sync":
        if not (root / INVENTORY).is_file():
            print(f"llm-worker-rbee: error: no {INVENTORY} in {root}", file=sys.stderr)
            return 2
        text, changed = sync(root)
        (root / INVENTORY).write_text(text, encoding="utf-8")
        print(f"{INVENTORY}: {changed} row(s) updated")
        return 0
    report = check(root)
    if args.behaviors_command == "show":
        print(show(report, args.ids))
    if report.problems:
        print(f"behaviors: {len(report.problems)} problem(s):", file=sys.stderr)
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if args.behaviors_command == "check":
        tests = len({d.node for d in report.declarations})
        print(
            f"behaviors: {len(report.inventory.behaviors)} behaviours, each covered "
            f"({tests} tests and scenarios declare them); the code and the inventory agree"
        )
    return 0
