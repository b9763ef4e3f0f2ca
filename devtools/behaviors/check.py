"""The check: the inventory against the tests' and scenarios' declarations, each row's
"where" against the source, and every fact of the code against the behaviours' sentences;
`sync` rewrites the covered-by column from the declarations, `show` prints the table with
each "where" as the file and line it is at now."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.behaviors.declarations import (
    Declaration,
    scenario_declarations,
    test_declarations,
)
from devtools.behaviors.facts import Fact
from devtools.behaviors.inventory import GAPS, ID, SECTIONS, Inventory, parse_inventory, split_row
from devtools.behaviors.locations import Location, Sources, resolve
from devtools.behaviors.paths import INVENTORY, PACKAGE_DIR, SOURCE_ROOT, relative
from devtools.behaviors.runtime_facts import (
    cli_facts,
    route_facts,
    settings_facts,
    vocabulary_facts,
)
from devtools.behaviors.source_facts import (
    environment_facts,
    error_facts,
    payload_facts,
    sse_event_facts,
)


def code_facts(
    package_dir: Path = PACKAGE_DIR,
    problems: list[str] | None = None,
    *,
    app: Any | None = None,
    settings: type[Any] | None = None,
    flags: Sequence[Any] | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> list[Fact]:
    """Everything the code has that the inventory must name (see devtools/behaviors/__init__.py)."""
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
    sources = Sources(package_dir)

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
                f"{', '.join(tests)} (run `python -m devtools.behaviors sync`)"
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
                places.append(f"{relative(located.path)}:{located.line} {qualname}")
            else:
                places.append(f"MISSING {ref}")
        tests = report.covering().get(behavior.id, [])
        rows.append(
            f"| {behavior.id} | {behavior.text.replace('|', chr(92) + '|')} | "
            f"{', '.join(places)} | {len(tests)}: {', '.join(tests)} |"
        )
    return "\n".join(rows)
