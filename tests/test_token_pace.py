"""TokenPace: slot-seconds per generated token over the engine's busy steps."""

from __future__ import annotations

import pytest

from llm_worker_rbee.pipeline.token_pace import DECAY, SEED_TOKENS, TokenPace
from tests.hand_clock import HandClock


@pytest.mark.behavior("RES-014")
def test_the_pace_is_slot_seconds_per_token_over_busy_steps() -> None:
    clock = HandClock()
    pace = TokenPace(clock)
    assert pace.seconds() is None  # nothing measured, nothing seeded
    # Four sequences, 0.2 s a step, a token each: 0.2 slot-seconds a token.
    for _ in range(3):
        start = pace.step_started()
        pace.step_ended(start, 4, 4, busy=True)
        clock.now += 0.2
    assert pace.seconds() == pytest.approx(0.2)
    # A step that only read prompts costs time and brings no token: the pace rises.
    start = pace.step_started()
    pace.step_ended(start, 4, 0, busy=True)
    clock.now += 1.0
    pace.step_started()
    slot_s = 0.8 * (DECAY + DECAY**2) + 0.8
    tokens = 4 * (DECAY + DECAY**2 + DECAY**3)
    slot_s = slot_s * DECAY + 4.0
    assert pace.seconds() == pytest.approx(slot_s / tokens)


@pytest.mark.behavior("RES-014")
def test_idle_time_after_the_last_step_is_not_work_and_the_warm_up_seeds_the_pace() -> None:
    clock = HandClock()
    pace = TokenPace(clock, seed_s=0.05)
    assert pace.seconds() == pytest.approx(0.05)
    start = pace.step_started()
    pace.step_ended(start, 1, 1, busy=False)  # the last sequence ended in this step
    clock.now += 60.0  # idle
    start = pace.step_started()
    assert pace.seconds() == pytest.approx(0.05)
    pace.step_ended(start, 2, 2, busy=True)
    clock.now += 0.1
    pace.step_started()
    seeded = SEED_TOKENS * DECAY
    assert pace.seconds() == pytest.approx((0.05 * seeded + 0.2) / (seeded + 2))
