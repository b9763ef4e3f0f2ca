"""GET /metrics: Prometheus text with vLLM-style names, measured in virtual time."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.metrics import observe_times
from llm_worker_rbee.testing.inprocess import inprocess_worker

STREAM = {"prompt": "hi", "stream": True}  # rbee's single-call SSE stream


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.behavior("HTTP-007", "RES-012")
async def test_latencies_tokens_and_gauges(autojump_clock: trio.testing.MockClock) -> None:
    settings = Settings(worker_id="m", slots=1, max_queue=1)
    script = FakeScript(reply=["a", "b", "c", "d"], step_latency=0.125)
    async with inprocess_worker(settings, script) as worker:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.request, "POST", "/v1/inference", STREAM)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(worker.request, "POST", "/v1/inference", STREAM)
            await trio.testing.wait_all_tasks_blocked()
            refused = await worker.request("POST", "/v1/inference", STREAM)
            assert refused.status == 503
            during = samples((await worker.request("GET", "/metrics")).body.decode())
            assert during[("llm_worker:num_requests_running", ())] == 1
            assert during[("llm_worker:num_requests_waiting", ())] == 1
            assert during[("llm_worker:slots_total", ())] == 1
        after = samples((await worker.request("GET", "/metrics")).body.decode())
    m = "llm_worker:"
    assert after[(f"{m}request_success_total", (("finished_reason", "eos"),))] == 2
    assert after[(f"{m}request_rejected_total", (("code", "all_slots_busy"),))] == 1
    assert after[(f"{m}generation_tokens_total", ())] == 8
    assert after[(f"{m}prompt_tokens_total", ())] == 6  # BOS + 2 bytes, twice
    # first: token at 0.125; second waited 0.625 for the slot, first token at 0.75
    assert after[(f"{m}time_to_first_token_seconds_sum", ())] == 0.875
    assert after[(f"{m}request_queue_time_seconds_sum", ())] == 0.625
    assert after[(f"{m}e2e_request_latency_seconds_sum", ())] == 0.625 + 1.25
    assert after[(f"{m}time_per_output_token_seconds_count", ())] == 6
    assert after[(f"{m}time_per_output_token_seconds_sum", ())] == 6 * 0.125
    assert after[(f"{m}num_requests_running", ())] == 0
    assert after[(f"{m}kv_cache_usage_perc", ())] == 0


@pytest.mark.behavior("RES-012")
def test_observe_times_equals_that_many_single_observations() -> None:
    registry_a, registry_b = CollectorRegistry(), CollectorRegistry()
    buckets = (0.01, 0.1, 1.0)
    many = Histogram("itl", "x", buckets=buckets, registry=registry_a)
    single = Histogram("itl", "x", buckets=buckets, registry=registry_b)
    for value, times in [(0.05, 3), (0.1, 2), (2.0, 1), (0.001, 0), (0.005, 4)]:
        observe_times(many, value, times)
        for _ in range(times):
            single.observe(value)
    got, expected = (samples(generate_latest(r).decode()) for r in (registry_a, registry_b))
    for key in expected:
        if key[0] != "itl_created":
            assert got[key] == pytest.approx(expected[key]), key
