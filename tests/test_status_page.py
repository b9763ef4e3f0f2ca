"""The status page's data (GET /v1/status, its history ring, the recent errors) and its files
(GET /ui), in-process on the fake engine in virtual time; the page itself runs in a real
browser in tests/e2e/test_status_page.py."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, Histogram

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.history import Reading, StatusHistory
from llm_worker_rbee.http.system.ui import PAGE_FILES
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.inspection.gguf_check import read_gguf
from llm_worker_rbee.inspection.model_report import ModelFile
from llm_worker_rbee.metrics import histogram_totals
from llm_worker_rbee.pipeline.decode import SequenceProgress
from llm_worker_rbee.testing.inprocess import InProcessWorker, inprocess_worker
from tests.test_limits_and_auth import KEY, keyed
from tests.test_metrics import samples as metric_samples

ROOT = Path(__file__).resolve().parent.parent


def stream(job: str, **fields: Any) -> dict[str, Any]:
    return {"prompt": "hi", "stream": True, "job_id": job, **fields}


async def status(worker: InProcessWorker, query: str = "") -> dict[str, Any]:
    response = await worker.request("GET", "/v1/status" + query)
    assert response.status == 200, response.body
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.behavior("HTTP-062", "HTTP-063")
async def test_status_shows_each_slot_the_queue_and_a_history_that_adds_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(worker_id="st", slots=2, max_queue=2)
    script = FakeScript(reply=["x"] * 12, step_latency=0.25)
    async with inprocess_worker(settings, script) as worker:
        async with trio.open_nursery() as nursery:
            for job in ("a", "b", "c"):
                nursery.start_soon(worker.request, "POST", "/v1/inference", stream(job))
                await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(2.6)  # two readings or more into the two streams
            during = await status(worker)
        await trio.sleep(2)  # every token is in a sample
        after = await status(worker)
        metrics = metric_samples((await worker.request("GET", "/metrics")).body.decode())
    slots = {slot["id"]: slot for slot in during["slots"]}
    assert {slots[0]["job_id"], slots[1]["job_id"]} == {"a", "b"}
    for slot in slots.values():
        assert slot["phase"] == "decode"
        assert slot["prompt_tokens"] == 3  # BOS + "hi"
        assert 0 < slot["tokens"] < 12
        assert slot["tokens_per_s"] > 0
    assert during["queue"] == {"depth": 1, "max": 2}
    assert during["kv"]["used"] == sum(3 + slot["tokens"] for slot in slots.values())
    assert during["state"] == "busy"

    assert [slot["phase"] for slot in after["slots"]] == ["idle", "idle"]
    assert after["totals"] == {"requests": 3, "prompt_tokens": 9, "tokens_generated": 36}
    samples = after["history"]["samples"]
    assert [sample["n"] for sample in samples] == list(range(1, len(samples) + 1))
    # Each sample is the difference between two readings a second apart: together they
    # count every token and every first token exactly once.
    assert sum(sample["tokens_per_s"] for sample in samples) == pytest.approx(36)
    assert sum(sample["first_tokens"] for sample in samples) == 3
    ttft_ms = sum(s["ttft_ms"] * s["first_tokens"] for s in samples if s["first_tokens"])
    ttft_s = metrics[("llm_worker:time_to_first_token_seconds_sum", ())]
    assert ttft_ms == pytest.approx(1000 * ttft_s)
    assert after["history"]["interval_s"] == 1.0
    assert after["errors"] == []


@pytest.mark.behavior("HTTP-063")
async def test_since_answers_only_the_later_samples_and_a_bad_one_is_400(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker() as worker:
        await trio.sleep(5.5)
        everything = (await status(worker))["history"]["samples"]
        later = (await status(worker, "?since=3"))["history"]["samples"]
        for bad in ("-1", "x", "1.5", "9" * 19):
            response = await worker.request("GET", f"/v1/status?since={bad}")
            assert response.status == 400, bad
            assert response.json()["error"]["code"] == "invalid_value"
            assert response.json()["error"]["param"] == "since"
    assert [s["n"] for s in everything] == [1, 2, 3, 4, 5]
    assert later == everything[3:]


@pytest.mark.behavior("HTTP-064")
async def test_the_recent_errors_are_listed_newest_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(worker_id="err", slots=1, max_queue=0)
    script = FakeScript(reply=["x"] * 40, step_latency=0.25)
    async with inprocess_worker(settings, script) as worker:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.request, "POST", "/v1/inference", stream("long"))
            await trio.testing.wait_all_tasks_blocked()
            refused = await worker.request("POST", "/v1/inference", stream("refused"))
            assert refused.status == 503
        timed_out = stream("late", timeout=0.5)
        await worker.request("POST", "/v1/inference", timed_out)
        errors = (await status(worker))["errors"]
    assert [(e["job_id"], e["status"], e["code"]) for e in errors] == [
        ("late", 408, "request_timeout"),
        (None, 503, "all_slots_busy"),  # refused before its body was read: no job id
    ]
    assert errors[0]["at"] > errors[1]["at"]
    assert all(e["message"] for e in errors)


@pytest.mark.behavior("HTTP-062")
async def test_the_model_card_says_the_mode_the_context_and_the_device(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for batch_invariant, mode in ((False, "fast"), (True, "exact")):
        settings = Settings(worker_id="card", slots=2, ctx_size=1024, threads=3)
        settings = settings.model_copy(update={"batch_invariant": batch_invariant})
        async with inprocess_worker(settings) as worker:
            card = (await status(worker))["model"]
        assert card["id"] == "fake-model"
        assert card["mode"] == mode
        assert card["n_ctx"] == 1024
        assert card["n_ctx_per_slot"] == (512 if batch_invariant else 1024)
        assert (card["slots"], card["threads"], card["device"]) == (2, 3, "cpu:0")
        assert card["chat_template"] is False
        assert card["architecture"] is None  # the fake engine has no file


def test_the_model_file_facts_come_from_the_gguf() -> None:
    summary = read_gguf(bundled_model_path())
    facts = ModelFile.of(summary)
    assert facts.architecture == summary.architecture
    assert facts.name == summary.get("general.name")
    assert facts.file_bytes == bundled_model_path().stat().st_size
    assert facts.parameters == sum(t.n_elements for t in summary.tensors)
    assert facts.quantization == "Q4_K_M"  # the bundled file's general.file_type


@pytest.mark.behavior("HTTP-061", "HTTP-017")
async def test_the_page_is_open_with_its_policy_and_its_data_needs_the_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(keyed()) as worker:
        page = await worker.request("GET", "/ui")
        files = {name: await worker.request("GET", f"/ui/{name}") for name in PAGE_FILES}
        missing = await worker.request("GET", "/ui/secrets.json")
        without = await worker.request("GET", "/v1/status")
        wrong = await worker.request("GET", "/v1/status", headers={"Authorization": "Bearer x"})
        keyed_answer = await worker.request(
            "GET", "/v1/status", headers={"Authorization": f"Bearer {KEY}"}
        )
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert b'<script src="/ui/ui.js"' in page.body
    for name, answer in files.items():
        assert answer.status == 200, name
        assert answer.headers["content-type"] == PAGE_FILES[name]
        assert answer.body == (ROOT / "llm_worker_rbee" / "ui" / name).read_bytes()
    assert missing.status == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert (without.status, without.json()["error"]["code"]) == (401, "missing_api_key")
    assert (wrong.status, wrong.json()["error"]["code"]) == (401, "invalid_api_key")
    assert keyed_answer.status == 200


def test_a_wheel_ships_the_page() -> None:
    """The files are package data: every one the routes serve is there and matched."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["llm_worker_rbee"]
    package = ROOT / "llm_worker_rbee"
    shipped = {path.relative_to(package).as_posix() for p in patterns for path in package.glob(p)}
    assert {f"ui/{name}" for name in PAGE_FILES} <= shipped


@pytest.mark.behavior("HTTP-063")
def test_the_ring_is_bounded_and_rates_follow_one_job() -> None:
    history = StatusHistory(size=3)

    def reading(at: float, tokens: int, *sequences: SequenceProgress) -> Reading:
        return Reading(at, 1000 + at, tokens, 0.0, 0, len(sequences), 0, 0.0, sequences)

    assert history.record(reading(0, 0, SequenceProgress(0, "a", 5, 0))) is None
    history.record(reading(1, 4, SequenceProgress(0, "a", 5, 4)))
    assert history.job_rates == {"a": 4.0}
    # Slot 0 now runs another job: no rate until it has been seen for a second.
    history.record(reading(2, 6, SequenceProgress(0, "b", 5, 1)))
    assert history.job_rates == {}
    for second in range(3, 7):
        history.record(reading(second, 6 + second, SequenceProgress(0, "b", 5, second)))
    assert [s.n for s in history.since()] == [4, 5, 6]
    assert [s.n for s in history.since(5)] == [6]
    assert history.since()[-1].tokens_per_s == 1.0


def test_histogram_totals_are_the_sum_and_the_count() -> None:
    histogram = Histogram("t", "x", buckets=(0.1, 1.0), registry=CollectorRegistry())
    for value in (0.05, 0.5, 5.0, 0.5):
        histogram.observe(value)
    total, count = histogram_totals(histogram)
    assert (total, count) == (pytest.approx(6.05), 4)
