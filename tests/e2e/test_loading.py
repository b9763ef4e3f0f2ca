"""The real model's load: progress through llama.cpp's callback, the warm-up, the abort past
the deadline, the unload order, and a freshly started worker's /v1/loading/progress."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import llama_cpp
import pytest
import trio

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.base import LoadTimeout
from llm_worker_rbee.engine.llama import LlamaEngine
from llm_worker_rbee.engine.loading import LoadProgress, LoadStage
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.messages.inference import SamplingParams
from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

SETTINGS = Settings(backend="cpu", ctx_size=512, slots=2, batch_size=64, threads=2)


def load_on_a_thread(progress: LoadProgress, timeout: float = 600) -> LlamaEngine:
    """As the worker does it: the deadline set in trio, the load on a thread."""

    async def main() -> LlamaEngine:
        progress.begin(timeout)
        return await trio.to_thread.run_sync(
            lambda: LlamaEngine.load(bundled_model_path(), SETTINGS, "gemma", progress)
        )

    return trio.run(main)


@pytest.mark.behavior("LOAD-013", "LOAD-019")
def test_load_reports_the_weights_warms_up_and_leaves_no_cells(
    caplog: pytest.LogCaptureFixture,
) -> None:
    progress = LoadProgress()
    with caplog.at_level("INFO", logger="llm_worker_rbee.engine.loading"):
        engine = load_on_a_thread(progress)
    try:
        snapshot = progress.snapshot()
        assert (snapshot.stage, snapshot.progress) == (LoadStage.WARMING_UP, 0.95)
        # llama.cpp's callback drove the weights to 90% of the whole load, logged at most
        # once per 10% (Gemma's embedding table is most of the file: the first report jumps)
        assert logged_percents([r.getMessage() for r in caplog.records])[-1] == 90
        # the warm-up decoded in slot 0 and dropped its cells
        memory = llama_cpp.llama_get_memory(engine._ctx)
        assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == -1
    finally:
        engine.close()


@pytest.mark.behavior("LOAD-016")
def test_load_past_the_deadline_is_aborted_inside_llama_cpp() -> None:
    ticks = iter(range(1_000_000))

    def clock() -> float:
        """One second per question: the deadline passes at the fifth weight report."""
        return float(next(ticks))

    progress = LoadProgress(clock=clock)
    with pytest.raises(LoadTimeout, match=r"within --load-timeout 6 s \(stopped loading_weights"):
        load_on_a_thread(progress, timeout=6)
    snapshot = progress.snapshot()
    assert snapshot.stage is LoadStage.LOADING_WEIGHTS and snapshot.progress < 0.9


@pytest.mark.behavior("LOAD-020")
def test_close_frees_samplers_batch_context_model_in_order_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = LlamaEngine.load(bundled_model_path(), SETTINGS, "gemma")
    engine.admit(0, engine.tokenize("Hello", add_special=True), SamplingParams(temperature=0))
    freed: list[str] = []
    names = ("llama_sampler_free", "llama_batch_free", "llama_free", "llama_model_free")
    for name in names:
        monkeypatch.setattr(llama_cpp, name, recorder(name, getattr(llama_cpp, name), freed))
    engine.close()
    engine.close()
    assert freed == list(names)


def recorder(name: str, free: Callable[..., Any], freed: list[str]) -> Callable[..., Any]:
    def record(*args: Any) -> Any:
        freed.append(name)
        return free(*args)

    return record


@pytest.fixture
def fresh_worker() -> Iterator[WorkerProcess]:
    worker = WorkerProcess(["--slots", "1", "--ctx-size", "512", "--threads", "2"])
    worker.start(wait_ready=False)
    yield worker
    worker.stop()


@pytest.mark.behavior("SSE-011", "LIFE-001")
def test_loading_progress_of_a_fresh_worker_ends_with_ready(fresh_worker: WorkerProcess) -> None:
    with (
        httpx.Client(base_url=fresh_worker.url, timeout=120) as http,
        http.stream("GET", "/v1/loading/progress") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
        ready = http.get("/v1/ready")
    names = [name for name, _ in events]
    assert names[-1] == "ready" and set(names[:-1]) <= {"progress"}
    values = [data["progress"] for _, data in events]
    assert values == sorted(values) and values[-1] == 1.0
    assert (ready.status_code, ready.json()) == (
        200,
        {"ready": True, "state": "ready", "stage": "ready", "progress": 1.0},
    )
    assert logged_percents(fresh_worker.log().splitlines())[-1] == 100
    assert fresh_worker.log().count("loading the model: 100% (ready)") == 1


def logged_percents(lines: list[str]) -> list[int]:
    """The percentages of the progress log lines, checked to be one per 10% step at most."""
    marker = "loading the model: "
    percents = [int(line.split(marker)[1].split("%")[0]) for line in lines if marker in line]
    assert percents == sorted(set(percents)) and all(p % 10 == 0 for p in percents)
    return percents


def sse_events(lines: Iterator[str]) -> list[tuple[str | None, dict[str, Any]]]:
    events: list[tuple[str | None, dict[str, Any]]] = []
    name: str | None = None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            name = None
    return events


@pytest.mark.behavior("LOAD-017")
def test_load_timeout_exits_3_with_one_line() -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "llm_worker_rbee", "serve", "--port", "0"),
            *("--ctx-size", "512", "--threads", "2", "--load-timeout", "0.001"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3
    last = done.stderr.splitlines()[-1]
    assert last.startswith(
        "llm-worker-rbee: error: the model did not load within --load-timeout 0.001 s (stopped "
    )
