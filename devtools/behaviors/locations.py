"""Where a behaviour lives: a row's `module:qualname` found in the source by its syntax
tree (nothing is imported), as a file and line, or the reason it cannot be found."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devtools.behaviors.paths import PACKAGE, PACKAGE_DIR, TOOLS, relative


@dataclass(frozen=True)
class Location:
    path: Path
    line: int


Scope = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
Found = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef | ast.Assign | ast.AnnAssign


def definitions(scope: Scope) -> Iterator[Found]:
    """The names a scope defines, including inside if/try/with/for (not nested scopes)."""
    pending: list[ast.stmt] = list(scope.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, Found):
            yield node
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    pending.append(child)


def defines(node: Found, name: str) -> bool:
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
class Sources:
    """Parsed modules, each parsed once."""

    package_dir: Path
    trees: dict[Path, ast.Module] = field(default_factory=dict)

    def tree(self, path: Path) -> ast.Module:
        if path not in self.trees:
            self.trees[path] = ast.parse(path.read_text(encoding="utf-8"), str(path))
        return self.trees[path]


def resolve(ref: str, sources: Sources) -> Location | str:
    """`module:qualname` -> where it is, or why it cannot be found.

    The module is relative to the package (`http.app`, or `llm_worker_rbee.http.app`), or
    a development tool's (`devtools.behaviors.check`); the qualname walks classes and
    functions (`register.health`: a route handler defined inside `register`), and may end on
    a module- or class-level assignment (a table, a constant).
    """
    module, sep, qualname = ref.partition(":")
    if not sep or not module or not qualname:
        return f"`{ref}` is not module:function"
    if module.startswith(TOOLS + "."):  # a development tool's, beside the package
        path = module_file(module, sources.package_dir.parent)
        if path is None:
            return f"`{ref}`: there is no module {module}"
    else:
        module = module.removeprefix(PACKAGE + ".")
        path = module_file(module, sources.package_dir)
        if path is None:
            return f"`{ref}`: there is no module {PACKAGE}.{module}"
    scope: Found | ast.Module = sources.tree(path)
    line = 1
    for part in qualname.split("."):
        if not isinstance(
            scope, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        ):
            return f"`{ref}`: {part!r} cannot be inside an assignment"
        found = next((d for d in definitions(scope) if defines(d, part)), None)
        if found is None:
            return f"`{ref}`: no {part!r} in {relative(path)}"
        scope, line = found, found.lineno
    return Location(path, line)
