"""The package's import graph, read with `ast` from the source (nothing is imported): no
cycles, and no runtime module importing the docs checker or the test harness.

Every import statement counts, wherever it stands: at the top, inside a function (an import
moved into a function hides a cycle without removing it) and under `if TYPE_CHECKING:` (with
`from __future__ import annotations` such an import costs nothing at run time, which is
exactly how a cycle hides there; mypy still follows it, and the cure is the same: a leaf
module both sides import). Importing `a.b.c` also runs the `__init__` of each package on the
way that the importer is not already inside, so those count as edges too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import llm_worker_rbee

PACKAGE = "llm_worker_rbee"
ROOT = Path(llm_worker_rbee.__file__).resolve().parent


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under `root`."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported_names(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement asks for (`from x import y` asks for x and x.y:
    y may be a submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    return [source, *(f"{source}.{alias.name}" for alias in node.names)]


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_edges(files: dict[str, Path]) -> Iterator[Edge]:
    """Every import of a module in `files` by a module in `files` (and every name outside
    the package, for the checks on what the package may import)."""
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        inside = {module, *_ancestors(module)}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets: dict[str, None] = {}  # in order, once each
            for name in _imported_names(module, is_package, node):
                # The packages on the way run first, unless the importer is already inside.
                targets.update(dict.fromkeys([*_ancestors(name), name]))
            for target in targets:
                if target not in inside and (target in files or not target.startswith(PACKAGE)):
                    yield Edge(module, target, node.lineno)


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


# The behaviour-inventory checker and the scenario harness are tooling: the installed
# worker must run without them (they live in the checkout's `devtools`, which is not
# installed; the old paths stay listed so they do not come back).
TOOLING = ("devtools", f"{PACKAGE}.behaviors", f"{PACKAGE}.testing.scenario")
# Test support in the package (fake engine servers, in-process clients): tests use it, the
# running worker never does.
TEST_SUPPORT = f"{PACKAGE}.testing"


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".") or name.startswith(prefix + "_")


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_edges(module_files())) == []


def test_no_runtime_module_imports_the_checker_the_harness_or_test_support() -> None:
    wrong = [
        f"{edge.importer}:{edge.line} imports {edge.imported}"
        for edge in import_edges(module_files())
        if not any(_under(edge.importer, part) for part in (*TOOLING, TEST_SUPPORT))
        and any(_under(edge.imported, part) for part in (*TOOLING, TEST_SUPPORT))
    ]
    assert wrong == []


def imports_inside_functions_without_a_reason(files: dict[str, Path]) -> list[str]:
    """Imports inside a function with no comment on their line or the line above. The few
    that must wait (llama_cpp after the CUDA environment is pinned, or until first needed)
    say why; anything else belongs at the top, or in a leaf module if it dodges a cycle."""
    found = []
    for module, path in files.items():
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse("\n".join(lines), str(path))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                if "#" not in here and not above.startswith("#"):
                    found.append(f"{module}:{node.lineno}: {here.strip()}")
    return found


def test_an_import_inside_a_function_says_why() -> None:
    assert imports_inside_functions_without_a_reason(module_files()) == []


def test_the_check_finds_an_import_inside_a_function_that_does_not_say_why(
    tmp_path: Path,
) -> None:
    files = _package(
        tmp_path,
        {
            "__init__": "",
            "a": (
                "def f():\n"
                "    import json\n"
                "    # llama_cpp must load after the environment is pinned\n"
                "    import llama_cpp\n"
                "    import ctypes  # the reason, on the line\n"
            ),
        },
    )
    assert imports_inside_functions_without_a_reason(files) == [f"{PACKAGE}.a:2: import json"]


def _package(tmp_path: Path, modules: dict[str, str]) -> dict[str, Path]:
    root = tmp_path / PACKAGE
    for name, text in modules.items():
        path = root / f"{name.replace('.', '/')}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(root)


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        pytest.param(
            {
                "__init__": "",
                "a": "from llm_worker_rbee import b\n",
                "b": "import llm_worker_rbee.a\n",
            },
            [[f"{PACKAGE}.a", f"{PACKAGE}.b"]],
            id="top-level",
        ),
        pytest.param(
            {
                "__init__": "",
                "a": "def f():\n    from llm_worker_rbee.b import g\n",
                "b": "from .a import f\n",
            },
            [[f"{PACKAGE}.a", f"{PACKAGE}.b"]],
            id="inside-a-function-and-relative",
        ),
        pytest.param(
            {
                "__init__": "",
                "a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n",
                "b": "from llm_worker_rbee.a import x\n",
            },
            [[f"{PACKAGE}.a", f"{PACKAGE}.b"]],
            id="type-checking",
        ),
        pytest.param(
            {
                "__init__": "",
                "h.__init__": "from llm_worker_rbee.h.c import f\n",
                "h.c": "from llm_worker_rbee.config import S\n",
                "config": "from llm_worker_rbee.h.u import p\n",
                "h.u": "",
            },
            [[f"{PACKAGE}.config", f"{PACKAGE}.h", f"{PACKAGE}.h.c"]],
            id="through-a-package-init",
        ),
        pytest.param(
            {
                "__init__": "",
                "h.__init__": "from llm_worker_rbee.h.c import f\n",
                "h.c": "from llm_worker_rbee.h.u import p\nfrom . import u\n",
                "h.u": "import json\n",
            },
            [],
            id="a-package-re-exporting-its-modules-is-no-cycle",
        ),
    ],
)
def test_the_check_finds_every_kind_of_cycle(
    tmp_path: Path, modules: dict[str, str], expected: list[list[str]]
) -> None:
    assert cycles(import_edges(_package(tmp_path, modules))) == expected
