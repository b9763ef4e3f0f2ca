"""Repeatable trio scheduling for the scenario harness: the same trace on every run and in
every process.

Trio makes two choices that a scenario's trace would otherwise show:

- the tasks ready at once run in an order drawn from a module-level `random.Random`
  (`trio._core._run._r`): on purpose, so that nobody comes to rely on an order;
- cancel scopes whose deadlines fall on the same instant expire in the order of `id()` of
  the scope, i.e. of memory addresses, which differ from one process to the next. Under
  `MockClock(autojump_threshold=0)` many deadlines fall on the same virtual instant.

Trio has no supported hook for either. `trio.testing.MockClock` controls time, not order;
`trio.abc.Instrument` sees tasks run but cannot reorder them. Its one switch,
`_ALLOW_DETERMINISTIC_SCHEDULING` (set by `_hypothesis_plugin_setup`, which Hypothesis loads
as a plugin), is private as well, replaces the shuffle by a sort and a seeded shuffle (every
recorded trace would change), and leaves the tie-break by address. So this module, and
nothing else, reaches into the two private names: it seeds `_r`, and while the harness runs
it replaces `Deadlines.add` so that ties break in registration order.

`check_trio_internals()` verifies both before each use and raises `TrioInternalsChanged`
saying what moved, rather than letting scenarios turn flaky. tests/test_scenario_scheduling.py
fails on a trio not in CHECKED_TRIO_VERSIONS: check the names and the traces on it
(`pytest scenarios tests/test_scenario_harness.py tests/test_scenario_scheduling.py`), then
add it to the list.
"""

from __future__ import annotations

import heapq
import inspect
import random
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from types import ModuleType
from typing import Any

import trio

# The trio releases this module was checked against: check_trio_internals() passes, every
# scenario passes, and every scenario's trace hashes the same as on the others (0.27 is
# pyproject's floor).
CHECKED_TRIO_VERSIONS = ("0.27.0", "0.30.0", "0.32.0", "0.34.0", "0.35.0")
SCHEDULER_SEED = 0x5EED


class TrioInternalsChanged(RuntimeError):
    """Trio's private scheduling names are not what the harness relies on."""


def _run_module() -> ModuleType:
    core = getattr(trio, "_core", None)
    run_module = getattr(core, "_run", None)
    if not isinstance(run_module, ModuleType):
        raise TrioInternalsChanged(f"trio {trio.__version__} has no module trio._core._run")
    return run_module


def check_trio_internals() -> None:
    """Raises TrioInternalsChanged unless `trio._core._run` has a `random.Random` named `_r`
    and a `Deadlines` whose `add(deadline, cancel_scope)` pushes `(deadline, tie-breaker,
    cancel_scope)` onto a heap `_heap` and counts it in `_active`."""
    run_module = _run_module()
    where = f"trio {trio.__version__}: trio._core._run"
    if not isinstance(getattr(run_module, "_r", None), random.Random):
        raise TrioInternalsChanged(f"{where}._r is not the scheduler's random.Random any more")
    deadlines_class = getattr(run_module, "Deadlines", None)
    add = getattr(deadlines_class, "add", None)
    if deadlines_class is None or add is None:
        raise TrioInternalsChanged(f"{where}.Deadlines.add is gone")
    parameters = list(inspect.signature(add).parameters)
    if parameters != ["self", "deadline", "cancel_scope"]:
        raise TrioInternalsChanged(
            f"{where}.Deadlines.add takes ({', '.join(parameters)}), "
            "not (self, deadline, cancel_scope)"
        )
    deadlines = deadlines_class()
    scope = object()
    add(deadlines, 1.0, scope)
    heap = getattr(deadlines, "_heap", None)
    if not (
        isinstance(heap, list)
        and len(heap) == 1
        and isinstance(heap[0], tuple)
        and len(heap[0]) == 3
        and heap[0][0] == 1.0
        and heap[0][2] is scope
        and getattr(deadlines, "_active", None) == 1
    ):
        raise TrioInternalsChanged(
            f"{where}.Deadlines no longer keeps (deadline, tie-breaker, scope) in _heap "
            "and a count in _active"
        )


@contextmanager
def deterministic_trio() -> Iterator[None]:
    """Makes trio's scheduling repeatable while the block runs (see the module's comment):
    the ready-task order is seeded, and same-instant deadlines expire in registration
    order. `Deadlines.add` is trio's again when the block ends."""
    check_trio_internals()
    run_module = _run_module()
    deadlines = run_module.Deadlines
    original_add = deadlines.add
    order = count()

    def add(self: Any, deadline: float, cancel_scope: Any) -> None:
        heapq.heappush(self._heap, (deadline, next(order), cancel_scope))
        self._active += 1

    run_module._r.seed(SCHEDULER_SEED)
    deadlines.add = add
    try:
        yield
    finally:
        deadlines.add = original_add
