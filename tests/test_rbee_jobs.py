"""rbee's two-call job API and readiness route, in-process on the fake engine in virtual time
(docs/BEHAVIORS.md names each behaviour; the real-process flow is tests/e2e/test_rbee_dropin.py)."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.choice_stream import ChoiceStream
from llm_worker_rbee.actors.jobs import JobBoard, JobBoardStatistics
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.http.rbee.jobs import end_frames
from llm_worker_rbee.messages.session import Ended, ErrorInfo, TextDelta
from llm_worker_rbee.testing.asgi import Exchange, asgi_request
from llm_worker_rbee.testing.inprocess import InProcessWorker, inprocess_worker

INFER = {"operation": "infer", "hive_id": "localhost", "prompt": "hi", "max_tokens": 4}


def data_lines(exchange: Exchange) -> list[str]:
    """Every non-blank line of a stream's body, as rbee's readers see them."""
    return [line for line in exchange.body.decode().split("\n") if line.strip()]


async def post_job(worker: InProcessWorker, body: Any) -> Exchange:
    return await worker.request("POST", "/v1/jobs", body, headers={"accept": "*/*"})


@pytest.mark.behavior("ERR-015")
@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"{not json", 400, "invalid_json", None),
        ([INFER], 400, "invalid_json", None),
        ({"hive_id": "h", "prompt": "hi"}, 400, "missing_required_parameter", "operation"),
        ({"operation": 7}, 400, "invalid_value", "operation"),
        ({"operation": "worker_spawn", "hive_id": "h"}, 400, "unsupported_operation", "operation"),
        ({"operation": "model_list"}, 400, "unsupported_operation", "operation"),
        ({"operation": "infer", "hive_id": "h"}, 400, "missing_required_parameter", "prompt"),
        ({**INFER, "max_tokens": -1}, 400, "invalid_value", "max_tokens"),
        ({**INFER, "model": "someone-else"}, 404, "model_not_found", "model"),
    ],
)
async def test_a_bad_operation_is_refused_in_the_error_shape(
    autojump_clock: trio.testing.MockClock,
    body: Any,
    status: int,
    code: str,
    param: str | None,
) -> None:
    async with inprocess_worker() as worker:
        response = await post_job(worker, body)
        assert response.status == status
        error = response.json()["error"]
        assert (error["code"], error["param"]) == (code, param)
        assert error["message"] and error["type"]
        # Refused before anything was admitted.
        assert worker.services.scheduler is not None
        assert worker.services.scheduler.statistics().slots_busy == 0


@pytest.mark.behavior("HTTP-030")
async def test_unknown_operation_fields_are_ignored_and_the_model_may_be_an_alias(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(worker_id="w", alias="my-alias")
    async with inprocess_worker(settings) as worker:
        body = {**INFER, "model": "my-alias", "device": "cuda:1", "something_new": [1, 2]}
        posted = await post_job(worker, body)
        assert posted.status == 200, posted.body
        job = posted.json()
        assert job == {"job_id": "job-1", "sse_url": "/v1/jobs/job-1/stream"}


@pytest.mark.behavior("HTTP-029", "HTTP-031")
async def test_inference_is_one_sse_call_or_the_queens_two_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(reply=["Hel", "lo"])
    async with inprocess_worker(script=script) as worker:
        plain = {"prompt": "hi", "max_tokens": 4}
        # The queen: Accept */* and no `stream` -> a JSON job.
        queen = await worker.request("POST", "/v1/inference", plain, headers={"accept": "*/*"})
        assert queen.status == 200 and queen.json()["sse_url"] == "/v1/inference/job-1/stream"
        # `stream: false` -> a JSON job even when Accept names SSE.
        sse_accept = {"accept": "text/event-stream"}
        explicit = await worker.request(
            "POST", "/v1/inference", {**plain, "stream": False}, headers=sse_accept
        )
        assert explicit.status == 200 and "sse_url" in explicit.json()
        # Accept text/event-stream, or `stream: true` -> the single-call SSE stream.
        for body, headers in ((plain, sse_accept), ({**plain, "stream": True}, {})):
            single = await worker.request("POST", "/v1/inference", body, headers=headers)
            assert single.streaming and single.events[0].name == "started"
        # The two-call stream is read at its sse_url.
        read = await asgi_request(worker.app, "GET", queen.json()["sse_url"])
        lines = data_lines(read)
        assert all(line.startswith("data: ") for line in lines)
        assert lines[-1] == "data: [DONE]"
        events = [json.loads(line[6:]) for line in lines[:-1]]
        assert [e["type"] for e in events] == ["started", "token", "token", "end"]
        assert "".join(e["t"] for e in events if e["type"] == "token") == "Hello"
        assert events[-1] == {
            "type": "end",
            "tokens_out": 2,
            "decode_time_ms": events[-1]["decode_time_ms"],
            "stop_reason": "EOS",
        }


@pytest.mark.behavior("HTTP-033")
async def test_delete_cancels_a_posted_job_and_its_reader_sees_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(reply=["x"] * 100, step_latency=0.125)
    async with inprocess_worker(script=script) as worker:
        job = (await post_job(worker, {**INFER, "max_tokens": 50})).json()
        await trio.sleep(0.3)
        deleted = await worker.request("DELETE", f"/v1/jobs/{job['job_id']}")
        assert deleted.status == 204
        read = await asgi_request(worker.app, "GET", job["sse_url"])
        lines = data_lines(read)
        assert lines[-1] == "data: [CANCELLED]"
        end = json.loads(lines[-2][6:])
        assert end["type"] == "end" and end["stop_reason"] == "CANCELLED"
        unknown = await worker.request("DELETE", "/v1/jobs/nobody")
        assert unknown.status == 404 and unknown.json()["error"]["code"] == "job_not_found"


@pytest.mark.behavior("HTTP-028")
async def test_the_bare_base_url_answers_like_health_and_needs_no_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(worker_id="w", api_key="secret")
    async with inprocess_worker(settings) as worker:
        for method in ("GET", "HEAD"):
            response = await worker.request(method, "/")
            assert response.status == 200
        assert (await worker.request("GET", "/")).json() == {"status": "ok", "state": "ready"}
        # The job routes need the key like every other working route.
        assert (await post_job(worker, INFER)).status == 401
        worker.services.lifecycle.signal(signal.SIGTERM)
        await trio.testing.wait_all_tasks_blocked()
        assert (await worker.request("GET", "/")).status == 503


@pytest.mark.behavior("SSE-012")
@pytest.mark.parametrize(
    ("ended", "tail"),
    [
        (Ended("max_tokens", 3, 5, 40), ["end MAX_TOKENS", "[DONE]"]),
        (Ended("stop_sequence", 3, 5, 40), ["end STOP_SEQUENCE", "[DONE]"]),
        (Ended("cancelled", 3, 2, 40), ["end CANCELLED", "[CANCELLED]"]),
        (
            Ended("timeout", 3, 2, 40, ErrorInfo(408, "timeout", "request_timeout", "too\nlate")),
            ["error TIMEOUT", "end ERROR", "[ERROR] too late"],
        ),
        (
            Ended(
                "error", 3, 0, 1, ErrorInfo(503, "resource_exhausted", "resource_exhausted", "m")
            ),
            ["error VRAM_OOM", "end ERROR", "[ERROR] m"],
        ),
        (
            Ended("error", 3, 0, 1, ErrorInfo(500, "server_error", "engine_error", "failed")),
            ["error INFERENCE_FAILED", "end ERROR", "[ERROR] failed"],
        ),
    ],
)
def test_a_jobs_end_in_rbees_terms(ended: Ended, tail: list[str]) -> None:
    seen = []
    for frame in end_frames(ended):
        text = frame.decode()
        assert text.startswith("data: ") and text.endswith("\n\n") and text.count("\n") == 2
        payload = text[6:-2]
        if payload.startswith("{"):
            event = json.loads(payload)
            seen.append(f"{event['type']} {event.get('stop_reason') or event.get('code')}")
        else:
            seen.append(payload)
    assert seen == tail


@pytest.mark.behavior("SSE-008", "SSE-012")
async def test_the_started_frame_goes_out_when_the_reader_connects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The job's `started` frame does not wait for the prefill: with 8 prompt tokens a step
    at 0.125 s a step, a prompt of 101 tokens takes 13 steps before its first token."""
    script = FakeScript(reply=["Hel", "lo"], step_latency=0.125, prefill_chunk=8)
    async with inprocess_worker(script=script) as worker:
        job = (await post_job(worker, {**INFER, "prompt": "x" * 100})).json()
        read = await asgi_request(worker.app, "GET", job["sse_url"])
    kinds = [e.json()["type"] if e.data.startswith("{") else e.data for e in read.events]
    assert kinds == ["started", "token", "token", "end", "[DONE]"]
    started, first_token = read.events[0], read.events[1]
    assert started.at == read.sent_at == 0
    assert first_token.at == 13 * 0.125


@pytest.mark.behavior("HTTP-025", "HTTP-034")
async def test_a_job_id_stays_taken_while_the_worker_remembers_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """#23's leak: a job left unread, then a second POST with its id. The second is 409 (it
    used to replace the first on the board, whose pickup timer then dropped it unclosed,
    its slot busy for good); the first expires alone; the id stays taken once it ended."""
    settings = Settings(worker_id="w", slots=1, job_pickup_timeout=2.0)
    script = FakeScript(reply=["x"] * 400, step_latency=0.125)
    queen = {"accept": "*/*"}
    async with inprocess_worker(settings, script) as worker:
        first = {"prompt": "hi", "max_tokens": 1, "job_id": "dupX"}
        posted = await worker.request("POST", "/v1/inference", first, headers=queen)
        assert posted.status == 200 and posted.json()["job_id"] == "dupX"
        second = {**first, "max_tokens": 300}
        again = await worker.request("POST", "/v1/inference", second, headers=queen)
        assert again.status == 409
        error = again.json()["error"]
        assert (error["code"], error["type"], error["param"]) == (
            "duplicate_job_id",
            "invalid_request_error",
            None,
        )
        assert "dupX" in error["message"]
        await trio.sleep(3.0)  # past the first job's pickup timeout
        late = await asgi_request(worker.app, "GET", posted.json()["sse_url"])
        assert late.status == 410 and late.json()["error"]["code"] == "job_expired"
        assert worker.services.scheduler is not None
        assert worker.services.scheduler.statistics().slots_busy == 0
        assert worker.services.jobs is not None
        assert worker.services.jobs.statistics() == JobBoardStatistics(0, 1)
        # Expired and ended, the id is still remembered: any API refuses it.
        for path, body in (("/v1/jobs", {**INFER, "job_id": "dupX"}), ("/v1/inference", first)):
            reused = await worker.request("POST", path, body, headers=queen)
            assert reused.status == 409, path
        header = {"X-Request-Id": "dupX"}
        openai = await worker.request("POST", "/v1/completions", {"prompt": "hi"}, header)
        assert openai.status == 409
        fresh = await worker.request("POST", "/v1/inference", {**first, "job_id": "new"}, queen)
        assert fresh.status == 200


@pytest.mark.behavior("HTTP-025")
async def test_a_refused_requests_job_id_may_be_sent_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request refused before its answer started (here 503, the queue full) never became a
    job: a retry with the same id is served."""
    settings = Settings(worker_id="w", slots=1, max_queue=0)
    script = FakeScript(reply=["x"] * 8, step_latency=0.125)
    async with inprocess_worker(settings, script) as worker:
        async with trio.open_nursery() as nursery:
            holder = {"prompt": "a", "stream": True}
            nursery.start_soon(worker.request, "POST", "/v1/inference", holder)
            await trio.testing.wait_all_tasks_blocked()
            body = {"prompt": "b", "max_tokens": 2, "job_id": "retry-me", "stream": True}
            refused = await worker.request("POST", "/v1/inference", body)
            assert refused.status == 503
        served = await worker.request("POST", "/v1/inference", body)
        assert served.status == 200 and served.events[-1].data == "[DONE]"
        ended = await worker.request("POST", "/v1/inference", body)
        assert ended.status == 409


@pytest.mark.behavior("HTTP-025")
async def test_the_board_takes_one_job_per_id() -> None:
    board = JobBoard(pickup_timeout=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(board.run)
        stream = ChoiceStream([], [], trio.lowlevel.ParkingLot())
        board.post("x", stream, model="m", posted_at=0.0)
        with pytest.raises(ValueError, match="already waiting"):
            board.post("x", stream, model="m", posted_at=0.0)
        assert board.knows("x") and not board.knows("y")
        assert board.claim("x") is not None and board.knows("x")
        nursery.cancel_scope.cancel()


@pytest.mark.behavior("SSE-012")
async def test_tokens_out_counts_only_the_tokens_the_reader_got(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """#23: a cancel (the drain's abort) that lands while text is on its way must leave the
    end counting exactly the tokens the reader got. The reader takes its text from the
    mailbox itself (#24), and the tracer sees each delta as the reader takes it, so this
    cancels just after the third was taken, before it is written."""
    holder: list[InProcessWorker] = []

    def cancel_at_the_third_delta(recipient: str, message: object) -> None:
        if recipient == "http:job-1" and isinstance(message, TextDelta):
            deltas.append(message)
            if len(deltas) == 3:
                assert holder[0].services.sessions is not None
                holder[0].services.sessions.cancel("job-1")

    deltas: list[TextDelta] = []
    script = FakeScript(reply=["a"] * 20, step_latency=0.125)
    async with inprocess_worker(script=script, tracer=cancel_at_the_third_delta) as worker:
        holder.append(worker)
        job = (await post_job(worker, {**INFER, "max_tokens": 20})).json()
        read = await asgi_request(worker.app, "GET", job["sse_url"])
    lines = data_lines(read)
    events = [json.loads(line[6:]) for line in lines[:-1]]
    tokens = [e for e in events if e["type"] == "token"]
    assert len(deltas) == 3 and lines[-1] == "data: [CANCELLED]"
    assert 3 <= len(tokens) < 20 and events[-1]["stop_reason"] == "CANCELLED"
    assert events[-1]["tokens_out"] == len(tokens) == sum(len(t["t"]) for t in tokens)


@pytest.mark.behavior("SSE-012")
async def test_a_job_streams_one_token_frame_per_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`é` takes two tokens: its text waits for the second, and the delta that carries it
    covers both. rbee's `i` indexes tokens, so it goes out as two frames, the text on the
    last, and the frames count what `end.tokens_out` counts."""
    script = FakeScript(reply=["a", b"\xc3", b"\xa9", "b"])
    async with inprocess_worker(script=script) as worker:
        job = (await post_job(worker, INFER)).json()
        read = await asgi_request(worker.app, "GET", job["sse_url"])
    events = [json.loads(line[6:]) for line in data_lines(read)[:-1]]
    tokens = [(e["t"], e["i"]) for e in events if e["type"] == "token"]
    assert tokens == [("a", 0), ("", 1), ("é", 2), ("b", 3)]
    assert events[-1]["tokens_out"] == 4
