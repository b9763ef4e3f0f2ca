"""pytest collects every scenario file here as a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.scenarios.runner import run_scenario


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix == ".toml":
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self) -> list[pytest.Item]:
        return [ScenarioItem.from_parent(self, name=self.path.stem)]


class ScenarioItem(pytest.Item):
    @property
    def obj(self) -> object:
        """pytest-trio's trio_mode looks at every item's `obj`; a scenario is not a coroutine."""
        return self.runtest

    def runtest(self) -> None:
        outcome = run_scenario(self.path)
        if not outcome.passed:
            raise ScenarioFailed(outcome.failures)

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: object = None
    ) -> str:
        if isinstance(excinfo.value, ScenarioFailed):
            return f"scenario {self.path.name} failed:\n  " + "\n  ".join(excinfo.value.failures)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario: {self.name}"


class ScenarioFailed(Exception):
    def __init__(self, failures: list[str]) -> None:
        super().__init__("\n".join(failures))
        self.failures = failures
