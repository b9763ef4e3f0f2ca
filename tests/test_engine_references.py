"""Only the engine's own modules and the ModelActor's hold the engine (issue #17).

The engine is not thread-safe and steps on a thread of its own; everything else reaches the
model through the ModelHandle (its inbox, the thread-safe vocabulary, published snapshots).
This reads every module of the package with `ast` and lists those that mention an engine:
an engine class (any class in `engine/` with `admit` and `step`, and the `Engine`
protocol), an `.engine` / `._engine` attribute, or a name or parameter called `engine`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llm_worker_rbee

PACKAGE = Path(llm_worker_rbee.__file__).parent

# Where the engine may be held, and why. A folder (ending in "/") allows every module in it.
ALLOWED = {
    "engine/": "the engine itself, its vocabulary and snapshots, and its step runners",
    "actors/model.py": "the ModelActor: loads the engine and owns it; hands out only the "
    "vocabulary and snapshots",
    "pipeline/decode.py": "the DecodeLoop: the ModelActor's driver of the engine (on the engine "
    "thread, or the pump's task in virtual time)",
    "worker.py": "wiring: takes the engine factory and hands it to the ModelActor",
    "cli.py": "wiring: builds the llama.cpp engine factory for `serve`",
    "testing/": "test support: builds the fake engine and reads its counters for checks",
}
ENGINE_ATTRIBUTES = {"engine", "_engine"}


def engine_classes(package: Path) -> set[str]:
    """Names of the classes in `engine/` that are engines: they `admit` and `step`."""
    names = {"Engine"}
    for path in (package / "engine").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                if {"admit", "step"} <= methods:
                    names.add(node.name)
    return names


def engine_mentions(source: str, classes: set[str]) -> list[str]:
    """Each place in `source` that refers to an engine, as `line: what`."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        what = None
        if isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names if alias.name in classes]
            what = f"imports {', '.join(names)}" if names else None
        elif isinstance(node, ast.Name) and node.id in classes | ENGINE_ATTRIBUTES:
            what = f"name {node.id}"
        elif isinstance(node, ast.Attribute) and node.attr in classes | ENGINE_ATTRIBUTES:
            what = f"attribute .{node.attr}"
        elif isinstance(node, ast.arg) and node.arg in ENGINE_ATTRIBUTES:
            what = f"parameter {node.arg}"
        if what is not None:
            found.append(f"{getattr(node, 'lineno', 0)}: {what}")
    return found


def allowed(module: str) -> bool:
    return any(module == key or (key.endswith("/") and module.startswith(key)) for key in ALLOWED)


def package_mentions(package: Path) -> dict[str, list[str]]:
    classes = engine_classes(package)
    mentions = {}
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).as_posix()
        found = engine_mentions(path.read_text(encoding="utf-8"), classes)
        if found:
            mentions[module] = found
    return mentions


def test_the_engine_classes_are_found() -> None:
    assert {"Engine", "LlamaEngine", "FakeEngine"} <= engine_classes(PACKAGE)


def test_only_the_engine_and_the_model_actor_hold_the_engine() -> None:
    outside = {m: found for m, found in package_mentions(PACKAGE).items() if not allowed(m)}
    assert outside == {}, "modules that reach the engine (use ModelHandle.vocab or a snapshot)"


def test_every_allowed_module_still_needs_it() -> None:
    """An allowed module that no longer refers to the engine comes off the list."""
    mentions = package_mentions(PACKAGE)
    modules = [key for key in ALLOWED if not key.endswith("/")]
    assert [m for m in modules if m not in mentions] == []


def test_the_check_sees_a_route_reaching_through_the_handle() -> None:
    """What the check is for: each of these would make the test above fail."""
    classes = {"Engine", "LlamaEngine"}
    route = "def piece(model, t):\n    return model.engine.token_piece(t)\n"
    typed = "from llm_worker_rbee.engine.base import Engine\ndef f(e: Engine) -> None: ...\n"
    held = "class Handle:\n    def __init__(self, engine):\n        self._engine = engine\n"
    assert engine_mentions(route, classes) == ["2: attribute .engine"]
    assert engine_mentions(typed, classes) == ["1: imports Engine", "2: name Engine"]
    assert sorted(engine_mentions(held, classes)) == [
        "2: parameter engine",
        "3: attribute ._engine",
        "3: name engine",
    ]
    assert engine_mentions("def f(model):\n    return model.vocab.token_piece(1)\n", classes) == []
