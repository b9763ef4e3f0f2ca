"""Loading progress: the LoadProgress object, the two routes, and the worker's load failure,
timeout and unload paths on the fake engine (virtual time) or a real thread."""

from __future__ import annotations

import logging
from functools import partial
from itertools import count

import pytest
import trio
import trio.testing
from pydantic import SecretStr

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.base import (
    EngineError,
    EngineOutOfMemory,
    LoadCancelled,
    LoadTimeout,
    ModelLoadError,
)
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.engine.loading import LoadProgress, LoadStage
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.messages.inference import SamplingParams
from llm_worker_rbee.messages.lifecycle import Drain
from llm_worker_rbee.messages.session import InferenceRequest
from llm_worker_rbee.pipeline.runner import VirtualTimeStepRunner
from llm_worker_rbee.testing.asgi import asgi_request
from llm_worker_rbee.testing.inprocess import InProcessServer, inprocess_worker
from llm_worker_rbee.testing.virtual_load import VirtualTimeLoader
from llm_worker_rbee.worker import LOAD_FAILED_EXIT, Runtime, run_worker
from tests.hand_clock import HandClock


@pytest.mark.behavior("LOAD-013")
async def test_stages_map_onto_one_rising_progress() -> None:
    progress = LoadProgress()
    progress.begin(600)
    seen = [progress.snapshot()]
    progress.enter(LoadStage.LOADING_WEIGHTS)
    assert progress.weights(0.5) is True
    seen.append(progress.snapshot())
    progress.enter(LoadStage.CREATING_CONTEXT)
    seen.append(progress.snapshot())
    progress.enter(LoadStage.WARMING_UP)
    seen.append(progress.snapshot())
    progress.succeed()
    seen.append(progress.snapshot())
    assert [(s.stage.value, round(s.progress, 3)) for s in seen] == [
        ("starting", 0.0),
        ("loading_weights", 0.45),
        ("creating_context", 0.9),
        ("warming_up", 0.95),
        ("ready", 1.0),
    ]
    assert [s.version for s in seen] == sorted({s.version for s in seen})
    assert seen[-1].finished and not seen[-2].finished


@pytest.mark.behavior("LOAD-014")
async def test_small_steps_are_not_published_and_progress_never_goes_back() -> None:
    progress = LoadProgress()
    progress.begin(600)
    progress.weights(0.5)
    version = progress.snapshot().version
    progress.weights(0.505)  # under 1% of the whole load
    progress.weights(0.2)  # llama.cpp never does this; the published value holds anyway
    assert progress.snapshot().version == version
    assert progress.snapshot().progress == pytest.approx(0.45)


@pytest.mark.behavior("LOAD-014")
async def test_one_log_line_per_ten_percent(caplog: pytest.LogCaptureFixture) -> None:
    progress = LoadProgress()
    progress.begin(600)
    with caplog.at_level(logging.INFO, logger="llm_worker_rbee.engine.loading"):
        for done in range(101):  # llama.cpp reports every tensor
            progress.weights(done / 100)
        progress.enter(LoadStage.CREATING_CONTEXT)
        progress.enter(LoadStage.WARMING_UP)
        progress.succeed()
    assert [r.getMessage() for r in caplog.records] == [
        *(f"loading the model: {p}% (loading_weights)" for p in range(10, 90, 10)),
        "loading the model: 90% (loading_weights)",
        "loading the model: 100% (ready)",
    ]


@pytest.mark.behavior("LOAD-016")
async def test_past_the_deadline_the_callback_says_stop_and_the_stage_raises() -> None:
    clock = HandClock()
    progress = LoadProgress(clock=clock)
    progress.begin(10)
    assert progress.weights(0.3) is True
    clock.now = 10.0
    assert progress.weights(0.4) is False  # llama.cpp aborts the load
    with pytest.raises(LoadTimeout) as caught:
        progress.enter(LoadStage.CREATING_CONTEXT)
    assert str(caught.value) == (
        "the model did not load within --load-timeout 10 s (stopped loading_weights at 36%)"
    )
    assert caught.value.code == "load_timeout"


@pytest.mark.behavior("LOAD-018")
async def test_cancel_stops_the_loader_at_its_next_report() -> None:
    progress = LoadProgress()
    progress.begin(600)
    progress.cancel()
    assert progress.weights(0.1) is False
    with pytest.raises(LoadCancelled):
        progress.check()


@pytest.mark.behavior("LOAD-017")
async def test_fail_is_final_and_keeps_the_progress() -> None:
    progress = LoadProgress()
    progress.begin(600)
    progress.weights(0.5)
    progress.fail(ModelLoadError("no context"))
    progress.succeed()  # too late: a failed load stays failed
    snapshot = progress.snapshot()
    assert (snapshot.stage, snapshot.error, snapshot.error_code) == (
        LoadStage.FAILED,
        "no context",
        "load_failed",
    )
    assert snapshot.progress == pytest.approx(0.45)


@pytest.mark.behavior("LOAD-015")
async def test_a_loader_thread_wakes_the_trio_side_without_blocking_on_it() -> None:
    """The real arrangement: llama.cpp's callback on the engine thread, a reader in trio."""
    progress = LoadProgress()
    progress.begin(600)
    seen: list[tuple[str, float]] = []

    def load() -> None:
        progress.enter(LoadStage.LOADING_WEIGHTS)
        for done in range(1, 101):
            assert progress.weights(done / 100)
        progress.enter(LoadStage.CREATING_CONTEXT)
        progress.enter(LoadStage.WARMING_UP)

    async def watch() -> None:
        version = -1
        while True:
            snapshot = await progress.wait_change(version)
            version = snapshot.version
            seen.append((snapshot.stage.value, snapshot.progress))
            if snapshot.finished:
                return

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await trio.to_thread.run_sync(load)
            progress.succeed()
    assert seen[-1] == ("ready", 1.0)
    values = [p for _, p in seen]
    assert values == sorted(values) and len(values) >= 2


@pytest.mark.behavior("LOAD-015")
def test_a_report_after_the_run_has_ended_is_dropped() -> None:
    progress = LoadProgress()

    async def begin() -> None:
        progress.begin(600)

    trio.run(begin)
    assert progress.weights(0.5) is True  # no RunFinishedError reaches llama.cpp
    assert progress.snapshot().progress == pytest.approx(0.45)


@pytest.mark.behavior("RES-008")
def test_decode_failures_for_memory_are_their_own_error() -> None:
    from llm_worker_rbee.engine.llama import decode_error

    assert isinstance(decode_error(1), EngineOutOfMemory)
    assert isinstance(decode_error(-2), EngineOutOfMemory)
    for status in (-1, -3, 2):
        error = decode_error(status)
        assert isinstance(error, EngineError) and not isinstance(error, EngineOutOfMemory)
    assert str(decode_error(1)) == "llama_decode returned 1: no KV cells free for the batch"


# The routes, on the whole worker in virtual time.


@pytest.mark.behavior("HTTP-002", "HTTP-003", "HTTP-017", "SSE-011")
async def test_ready_is_open_and_the_progress_stream_of_a_loaded_worker_answers_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(worker_id="w", api_key=SecretStr("secret"))
    async with inprocess_worker(settings) as worker:
        ready = await worker.request("GET", "/v1/ready")
        assert (ready.status, ready.json()) == (
            200,
            {"ready": True, "state": "ready", "stage": "ready", "progress": 1.0},
        )
        refused = await worker.request("GET", "/v1/loading/progress")
        assert refused.status == 401  # behind the key like every route but the probes
        started = trio.current_time()
        stream = await worker.request(
            "GET", "/v1/loading/progress", headers={"Authorization": "Bearer secret"}
        )
        assert stream.status == 200 and stream.ended_at == started
        assert [(e.name, e.json()) for e in stream.events] == [
            ("ready", {"stage": "ready", "progress": 1.0})
        ]
        heartbeat = await worker.request(
            "GET", "/heartbeat", headers={"Authorization": "Bearer secret"}
        )
        assert heartbeat.json()["load_progress"] == 1.0


async def _run_fake_worker(
    settings: Settings,
    script: FakeScript,
    *,
    load_time: float = 2.5,
    factory: partial[FakeEngine] | None = None,
) -> tuple[int, LoadProgress, FakeEngine]:
    engine = FakeEngine(script)
    progress = LoadProgress(clock=trio.current_time)
    ids = count(1)
    runtime = Runtime(
        runner=VirtualTimeLoader(VirtualTimeStepRunner(0.01), progress, load_time),
        server=InProcessServer(),
        handle_signals=False,
        new_job_id=lambda: f"job-{next(ids)}",
    )
    code = await run_worker(
        settings,
        model_id="fake-model",
        engine_factory=factory or partial(engine.load, progress),
        runtime=runtime,
        progress=progress,
    )
    return code, progress, engine


@pytest.mark.behavior("LOAD-017")
async def test_a_load_error_stops_the_worker_with_the_load_failed_exit_code(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    script = FakeScript(load_error="llama.cpp could not load model.gguf")
    code, progress, engine = await _run_fake_worker(Settings(worker_id="w"), script)
    assert code == LOAD_FAILED_EXIT == 3
    snapshot = progress.snapshot()
    assert (snapshot.stage, snapshot.error) == (
        LoadStage.FAILED,
        "llama.cpp could not load model.gguf",
    )
    assert trio.current_time() == 2.5
    assert "stopping: load failed: llama.cpp could not load model.gguf" in caplog.messages
    assert not engine.closed  # never handed over: nothing to unload


@pytest.mark.behavior("LOAD-017")
async def test_any_exception_while_loading_is_a_load_failure_not_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def broken() -> FakeEngine:
        raise OSError("disk on fire")

    code, progress, _ = await _run_fake_worker(
        Settings(worker_id="w"), FakeScript(), factory=partial(broken)
    )
    assert code == LOAD_FAILED_EXIT
    assert progress.snapshot().error == "OSError: disk on fire"


@pytest.mark.behavior("LOAD-016", "CFG-006")
async def test_load_timeout_aborts_at_the_next_weight_report(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(worker_id="w", load_timeout=2.5)
    code, progress, _ = await _run_fake_worker(settings, FakeScript(), load_time=10.0)
    assert code == LOAD_FAILED_EXIT
    assert trio.current_time() == 3.0  # reports every 1.0 s: the one at 3.0 is late
    assert progress.snapshot().error_code == "load_timeout"


@pytest.mark.behavior("LOAD-020")
async def test_the_engine_is_closed_once_when_the_worker_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker() as worker:
        engine = worker.engine
        stream = await worker.request("POST", "/v1/inference", {"prompt": "hi", "max_tokens": 2})
        assert stream.status == 200
        assert not engine.closed
    assert engine.closed
    engine.close()  # idempotent
    assert engine.closed


@pytest.mark.behavior("HTTP-002", "LIFE-001")
async def test_ready_follows_the_lifecycle_after_the_load(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker() as worker:
        services: Services = worker.services
        assert services.sessions is not None
        busy = InferenceRequest("busy", (1, 5), SamplingParams(), max_tokens=100)
        services.sessions.start(busy)  # in flight: the drain waits for it
        services.lifecycle.request(Drain("test"))
        await trio.testing.wait_all_tasks_blocked()
        ready = await asgi_request(worker.app, "GET", "/v1/ready")
        assert (ready.status, ready.json()["state"], ready.json()["stage"]) == (
            503,
            "draining",
            "ready",
        )
