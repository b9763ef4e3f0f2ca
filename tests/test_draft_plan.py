"""draft_plan: drafts made only where they raise the step's expected tokens per second, by the
costs the steps measured."""

from __future__ import annotations

import pytest

from llm_worker_rbee.engine.draft_plan import StepCosts, plan

# A 2-core AVX-512 EPYC, the bundled model (ms by rows of logits, docs/PERFORMANCE.md): the
# second row doubles the step, each after it adds about 2 ms.
CPU = {1: 11.5, 2: 24.9, 3: 31.3, 4: 35.3, 6: 55.7, 8: 41.9, 12: 53.1, 16: 56.0, 24: 77.7,
       32: 96.1, 48: 133.0, 64: 170.1}  # fmt: skip


def costs(table: dict[int, float]) -> StepCosts:
    return StepCosts({rows: ms / 1000 for rows, ms in table.items()})


def chances(p: float, n: int) -> list[float]:
    """A proposal of n tokens from one source kept with chance p once the ones before were."""
    return [p**j for j in range(1, n + 1)]


@pytest.mark.behavior("INF-068")
def test_a_lone_stream_drafts_nothing_until_its_drafts_would_pay_then_drafts_long() -> None:
    cpu = costs(CPU)
    # 0.75: no draft is expected to give its rows' time back (the best, 7 rows, 0.98x).
    assert plan(cpu, [chances(0.75, 64)], room=64) == [0]
    # 0.95: 15 rows (16 in all, the knee: each row past it costs more than it is worth).
    assert plan(cpu, [chances(0.95, 64)], room=64) == [15]
    # 0.999: the longest.
    assert plan(cpu, [chances(0.999, 64)], room=64) == [64]
    # 6 rows cost more than 8: a 5-token proposal drafts 3 (4 in all), a 7-token one all.
    assert plan(cpu, [chances(0.95, 5)], room=64) == [3]
    assert plan(cpu, [chances(0.95, 7)], room=64) == [7]
    assert plan(cpu, [chances(0.999, 64)], room=15) == [15]
    assert plan(cpu, [chances(0.97, 0)], room=64) == [0]


@pytest.mark.behavior("INF-068")
def test_where_rows_are_nearly_free_every_proposal_is_drafted() -> None:
    gpu = costs({rows: 10 + rows * 0.01 for rows in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)})
    assert plan(gpu, [chances(0.5, 3), chances(0.6, 7), chances(0.6, 0)], room=64) == [3, 7, 0]


@pytest.mark.behavior("INF-068")
def test_streams_share_the_rows_by_their_tokens_expected_worth() -> None:
    cpu = costs(CPU)
    # Eight streams already pay for matrix kernels: the confident ones draft, the other
    # does not (0.2^j is worth less than a row at that load).
    lengths = plan(cpu, [chances(0.95, 64)] * 4 + [chances(0.2, 64)] * 4, room=56)
    assert lengths == [6, 6, 6, 6, 0, 0, 0, 0]  # 32 rows in all
    assert plan(cpu, [chances(0.95, 64)] * 4 + [chances(0.2, 64)] * 4, room=4) == [1] * 4 + [0] * 4


@pytest.mark.behavior("INF-068")
def test_a_row_count_never_timed_is_taken_as_cheap_so_it_is_tried_once() -> None:
    seen = StepCosts()
    assert plan(seen, [chances(0.9, 64)], room=64) == [0]  # nothing timed: no base to compare with
    seen.observe(1, 0.0115)
    assert seen.cost(64) == pytest.approx(0.0115)  # optimistic beyond what was timed
    assert plan(seen, [chances(0.9, 64)], room=64) == [64]
    seen.observe(64, 0.170)
    assert seen.cost(16) == pytest.approx(0.0115 + 15 / 63 * (0.170 - 0.0115))
    seen.observe(64, 0.070)  # a moving average: one timing moves it a fifth of the way
    assert seen.cost(64) == pytest.approx(0.170 + 0.2 * (0.070 - 0.170))
