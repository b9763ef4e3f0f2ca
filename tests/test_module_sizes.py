"""No runtime module over 400 lines without a paragraph at its top, starting "One piece",
that says why it is not split (#17)."""

from __future__ import annotations

import ast
from pathlib import Path

import llm_worker_rbee

ROOT = Path(llm_worker_rbee.__file__).resolve().parent
MAX_LINES = 400


def _says_why(text: str) -> bool:
    """The module docstring has a paragraph that starts with "One piece" and says why."""
    docstring = ast.get_docstring(ast.parse(text)) or ""
    return any(
        paragraph.startswith("One piece") and len(paragraph) > len("One piece") + 40
        for paragraph in (part.strip() for part in docstring.split("\n\n"))
    )


def oversized(root: Path, leaving: tuple[str, ...] = ()) -> list[str]:
    """Modules under `root` over MAX_LINES lines that do not say why they are one piece."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if any(relative.match(pattern) for pattern in leaving):
            continue
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_LINES and not _says_why(text):
            found.append(f"{relative.as_posix()}: {lines} lines")
    return found


def test_every_long_runtime_module_says_why_it_is_one_piece() -> None:
    assert oversized(ROOT) == []


def test_the_rule_counts_lines_and_reads_the_reason(tmp_path: Path) -> None:
    body = "x = 1\n" * MAX_LINES
    (tmp_path / "short.py").write_text('"""Short."""\n' + "x = 1\n" * (MAX_LINES - 1))
    (tmp_path / "long.py").write_text('"""Long."""\n' + body)
    (tmp_path / "terse.py").write_text('"""Terse.\n\nOne piece.\n"""\n' + body)
    reason = "One piece (over 400 lines): one state machine whose steps share a buffer."
    (tmp_path / "why.py").write_text(f'"""Why.\n\n{reason}\n"""\n' + body)
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "scenario.py").write_text(body + body)
    assert oversized(tmp_path, ("gone/scenario*.py",)) == [
        f"long.py: {MAX_LINES + 1} lines",
        f"terse.py: {MAX_LINES + 4} lines",
    ]
