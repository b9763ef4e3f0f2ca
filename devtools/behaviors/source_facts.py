"""Facts read from the package's source by its syntax trees: every error code and type it
emits, the environment variables it reads, the SSE event names it sends and the hive
payloads' fields. Values computed at run time are listed by hand in `_computed_errors`."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path

from devtools.behaviors.facts import Fact, backticked, env_fact
from devtools.behaviors.locations import defines
from devtools.behaviors.paths import PACKAGE, PACKAGE_DIR, relative
from llm_worker_rbee.messages.lifecycle import WorkerState


# Error codes and types the code computes at run time, where the checker cannot read them:
# (module:qualname of the function, "code" or "type") -> every value it can produce.
def _computed_errors() -> dict[tuple[str, str], tuple[str, ...]]:
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
        ("hive_stub.server:_app.worker_call", "code"): ("http_<status>",),
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
                    if isinstance(stmt, ast.Assign) and defines(stmt, "code"):
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
                        f"{relative(path)}:{node.lineno} ({origin}): an error {kind} computed "
                        f"at run time; list its values in source_facts._computed_errors"
                    )
    for key in computed.keys() - used:
        problems.append(
            f"source_facts._computed_errors lists {key[0]} ({key[1]}), which computes none any more"
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
    """The fields of the hive payloads (the dicts http/system/status.py's builders return)."""
    tree = ast.parse((package_dir / "http/system/status.py").read_text(encoding="utf-8"))
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
