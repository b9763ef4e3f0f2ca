"""The inventory's rows: docs/BEHAVIORS.md parsed into behaviours, with what is wrong with
the file's shape (unknown sections, malformed ids, duplicate ids, rows of the wrong width)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from devtools.behaviors.paths import INVENTORY

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
