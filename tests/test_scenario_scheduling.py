"""The scenario harness's repeatable scheduling (devtools/scenarios/scheduling.py) relies on
two private names of trio: these tests say so the day trio moves them, and name the trio
releases the hook was checked against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from devtools.scenarios.scheduling import (
    CHECKED_TRIO_VERSIONS,
    TrioInternalsChanged,
    check_trio_internals,
    deterministic_trio,
)

RUN = trio._core._run


def test_the_installed_trio_is_one_the_hook_was_checked_against() -> None:
    assert trio.__version__ in CHECKED_TRIO_VERSIONS, (
        f"trio {trio.__version__} is not in scheduling.CHECKED_TRIO_VERSIONS "
        f"{CHECKED_TRIO_VERSIONS}: check trio._core._run's `_r` and `Deadlines.add` on it, run "
        "the scenarios and tests/test_scenario_harness.py, then add the version"
    )


def test_trios_private_names_are_where_the_hook_expects_them() -> None:
    check_trio_internals()


def test_a_private_name_that_moved_fails_saying_which(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RUN, "_r")
    with pytest.raises(TrioInternalsChanged, match=r"trio._core._run._r is not"):
        check_trio_internals()
    monkeypatch.undo()

    def add(self: Any, deadline: float) -> None:
        """trio's add with another signature."""

    monkeypatch.setattr(RUN.Deadlines, "add", add)
    changed = r"Deadlines.add takes \(self, deadline\), not \(self, deadline, cancel_scope\)"
    with pytest.raises(TrioInternalsChanged, match=changed), deterministic_trio():
        pass


@dataclass(eq=False)
class _Scope:
    """What Deadlines.expire touches of a cancel scope."""

    _registered_deadline: float
    name: str
    expired: list[str] = field(default_factory=list)

    def _cancel(self, reason: object) -> None:
        self.expired.append(self.name)


def _expiry_order(names: list[str]) -> list[str]:
    """The order in which scopes added in `names`' order, all due at t=1, expire."""
    expired: list[str] = []
    deadlines = RUN.Deadlines()
    for name in names:
        deadlines.add(1.0, _Scope(1.0, name, expired))
    deadlines.expire(1.0)
    return expired


def test_same_instant_deadlines_expire_in_registration_order_and_trio_gets_add_back() -> None:
    names = [f"scope-{i}" for i in range(50)]
    original = RUN.Deadlines.add
    with deterministic_trio():
        assert _expiry_order(names) == names
        assert _expiry_order(names[::-1]) == names[::-1]
    assert RUN.Deadlines.add is original


def test_the_ready_task_shuffle_is_seeded() -> None:
    with deterministic_trio():
        first = [RUN._r.random() for _ in range(5)]
    with deterministic_trio():
        assert [RUN._r.random() for _ in range(5)] == first
