"""Several tokens a step, as the llama engine's accepted n-gram drafts give them (the fake
engine's `tokens_per_step`): stop strings, limits, logprobs, cancellation and the counters
stay right inside a run. In-process on the fake engine, in virtual time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.testing.inprocess import inprocess_worker

PIECES = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"]


def script(tokens_per_step: int = 4) -> FakeScript:
    return FakeScript(reply=PIECES, step_latency=0.1, tokens_per_step=tokens_per_step)


@pytest.mark.behavior("INF-068")
async def test_a_stop_string_inside_a_run_ends_the_text_there(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(Settings(worker_id="w"), script()) as worker:
        # "cd" comes in the first step's run of four (a, b, c, d): nothing after it leaks.
        whole = await worker.request("POST", "/v1/completions", {"prompt": "x", "stop": "cd"})
        streamed = await worker.request(
            "POST", "/v1/completions", {"prompt": "x", "stop": "cd", "stream": True}
        )
    choice = whole.json()["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == ("ab", "stop")
    texts = [e.json()["choices"][0]["text"] for e in streamed.events if e.data != "[DONE]"]
    assert "".join(texts) == "ab"


@pytest.mark.behavior("INF-068")
async def test_max_tokens_reached_mid_run_keeps_exactly_max_tokens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(Settings(worker_id="w"), script()) as worker:
        reply = await worker.request(
            "POST", "/v1/completions", {"prompt": "x", "max_tokens": 6, "logprobs": 1}
        )
    choice = reply.json()["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == ("abcdef", "length")
    assert reply.json()["usage"]["completion_tokens"] == 6
    # Every kept token of a run has its own logprob, in order.
    assert choice["logprobs"]["tokens"] == list("abcdef")


@pytest.mark.behavior("INF-068")
async def test_runs_take_fewer_steps_and_a_request_may_turn_them_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(Settings(worker_id="w"), script()) as worker:
        engine = worker.engine
        await worker.request("POST", "/v1/completions", {"prompt": "x", "max_tokens": 12})
        with_runs = engine.steps
        await worker.request(
            "POST",
            "/v1/completions",
            {"prompt": "x", "max_tokens": 12, "speculative.n_max": 0},
        )
        without = engine.steps - with_runs
        metrics = (await worker.request("GET", "/metrics")).body.decode()
    assert with_runs == 3 and without == 12  # 12 tokens: 3 runs of 4, or 12 steps of 1
    assert engine.admitted[-1].draft_max == 0
    assert "llm_worker:spec_decode_num_draft_tokens_total 9.0" in metrics
    assert "llm_worker:spec_decode_num_accepted_tokens_total 9.0" in metrics


@pytest.mark.behavior("INF-068")
async def test_a_cancel_between_runs_stops_the_sequence_and_frees_its_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    long = FakeScript(reply=PIECES * 10, step_latency=0.1, tokens_per_step=4)
    async with inprocess_worker(Settings(worker_id="w"), long) as worker:
        async with trio.open_nursery() as nursery:
            replies = []

            async def ask() -> None:
                body = {"prompt": "x", "max_tokens": 100, "stream": True}
                replies.append(
                    await worker.request(
                        "POST", "/v1/completions", body, headers={"X-Request-Id": "spec"}
                    )
                )

            nursery.start_soon(ask)
            await trio.sleep(0.35)  # three steps: twelve tokens
            cancel = await worker.request("DELETE", "/v1/inference/spec")
        scheduler = worker.services.scheduler
        assert scheduler is not None
        await scheduler.wait_idle()
    assert cancel.status == 204
    [reply] = replies
    chunks = [e.json() for e in reply.events if e.data != "[DONE]"]
    texts = [c["choices"][0]["text"] for c in chunks if "choices" in c]
    assert 0 < len("".join(texts)) < 100
    assert chunks[-1]["error"]["code"] == "cancelled"  # the stream's end says why
    assert worker.engine.cancelled == [0]
