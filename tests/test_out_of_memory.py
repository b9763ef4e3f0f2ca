"""Out of memory while serving: the DecodeLoop's mapping and the degraded streak (the HTTP
side is scenarios/out_of_memory_mid_generation.toml)."""

from __future__ import annotations

import pytest

from llm_worker_rbee.actors.mailbox import OutputMailbox
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.messages.inference import (
    Admit,
    SamplingParams,
    SequenceFailed,
)
from llm_worker_rbee.pipeline.decode import DecodeLoop
from llm_worker_rbee.pipeline.memory_pressure import MemoryPressure
from tests.hand_clock import HandClock


@pytest.mark.behavior("RES-010")
def test_three_in_a_row_within_the_window_is_degraded_until_a_success() -> None:
    clock = HandClock()
    pressure = MemoryPressure(clock)
    for at in (0.0, 30.0):
        clock.now = at
        pressure.out_of_memory()
        assert not pressure.degraded
    clock.now = 60.0
    pressure.out_of_memory()
    assert pressure.degraded
    pressure.succeeded()
    assert not pressure.degraded


@pytest.mark.behavior("RES-010")
def test_failures_further_apart_than_the_window_are_not_a_streak() -> None:
    clock = HandClock()
    pressure = MemoryPressure(clock)
    for at in (0.0, 50.0, 100.0):
        clock.now = at
        pressure.out_of_memory()
    assert not pressure.degraded  # 100 s from first to last
    clock.now = 110.0
    pressure.out_of_memory()  # the last three: 50, 100, 110
    assert pressure.degraded


def _admit(loop: DecodeLoop, engine: FakeEngine, seq_id: int) -> None:
    prompt = tuple(engine.tokenize("hi", add_special=True))
    admit = Admit(seq_id, f"job-{seq_id}", prompt, SamplingParams(), 8, OutputMailbox())
    assert loop.apply(admit) == []


@pytest.mark.behavior("RES-008")
def test_a_step_out_of_memory_fails_its_sequences_as_such_and_frees_them() -> None:
    engine = FakeEngine(FakeScript(reply=["x"] * 8, oom_at_steps=frozenset({2, 3, 4})))
    loop = DecodeLoop(engine, HandClock())
    _admit(loop, engine, 0)
    _admit(loop, engine, 1)
    assert len(loop.step()) == 2  # step 1: a token each
    failed = [output.end for _, output in loop.step()]
    assert failed == [
        SequenceFailed(0, "scripted out of memory at step 2", out_of_memory=True),
        SequenceFailed(1, "scripted out of memory at step 2", out_of_memory=True),
    ]
    assert engine.active == [] and not loop.busy
    for _ in range(2):  # steps 3 and 4 fail too: three in a row
        assert not loop.statistics().memory_degraded
        _admit(loop, engine, 0)
        loop.step()
    assert loop.statistics().memory_degraded
    _admit(loop, engine, 0)
    loop.step()  # step 5 succeeds
    assert not loop.statistics().memory_degraded


@pytest.mark.behavior("RES-008")
def test_other_engine_errors_are_not_out_of_memory() -> None:
    engine = FakeEngine(FakeScript(fail_at_steps=frozenset({1})))
    loop = DecodeLoop(engine, HandClock())
    _admit(loop, engine, 0)
    [(_, output)] = loop.step()
    assert output.end == SequenceFailed(0, "scripted failure at step 1", out_of_memory=False)
