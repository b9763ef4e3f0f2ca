"""What the tests and scenarios declare: `@pytest.mark.behavior(...)` on tests under tests/
(read from their syntax trees, nothing is imported) and `covers = [...]` in scenarios/*.toml."""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

MARKER = "behavior"


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
