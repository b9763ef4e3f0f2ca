"""A short schemathesis pass against the worker's /openapi.json (the long one: make fuzz)."""

from __future__ import annotations

import pytest

from devtools.fuzz import run_fuzz


@pytest.mark.behavior("HTTP-008", "HTTP-018")
def test_schemathesis_finds_no_5xx_and_no_schema_violation() -> None:
    result = run_fuzz(examples=5, seed=7, phases="examples,fuzzing")
    assert result.generated > 0, result.output
    assert result.failures == [], result.output
    assert result.tracebacks == 0, result.output
