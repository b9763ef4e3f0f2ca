"""Routes, request handling and stream plumbing not pinned elsewhere, in-process on the fake
engine in virtual time (docs/BEHAVIORS.md names each behaviour)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from time import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
import trio.testing
from quart_trio import QuartTrio
from werkzeug.exceptions import Gone, ServiceUnavailable

from devtools.behaviors.runtime_facts import worker_app
from llm_worker_rbee.actors.choice_stream import ChoiceBox, ChoiceStream
from llm_worker_rbee.actors.mailbox import OutputMailbox
from llm_worker_rbee.actors.model import ModelActor, ModelHandle
from llm_worker_rbee.actors.session import InferenceSession
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.http.errors import ApiError
from llm_worker_rbee.http.frame_loop import session_frames
from llm_worker_rbee.http.openai.routes import _Reply
from llm_worker_rbee.http.schemas import CompletionBody
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sse import LOST, SessionBody, next_choice
from llm_worker_rbee.http.translate import build_request
from llm_worker_rbee.messages.inference import TextOutput
from llm_worker_rbee.messages.session import Started, TextDelta
from llm_worker_rbee.testing.asgi import asgi_request
from llm_worker_rbee.testing.inprocess import inprocess_worker


def long_script(tokens: int = 200) -> FakeScript:
    return FakeScript(reply=["x"] * tokens, step_latency=0.125)


def bare_app() -> QuartTrio:
    """The worker's app with no worker behind it: for routes added by a test."""
    return cast(QuartTrio, worker_app())


@pytest.mark.behavior("HTTP-005")
async def test_models_lists_the_served_model_with_its_context(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(worker_id="m", model_ref="hf:org/repo", ctx_size=2048, slots=2)
    async with inprocess_worker(settings) as worker:
        response = await worker.request("GET", "/v1/models")
    assert response.status == 200
    assert response.json() == {
        "object": "list",
        "data": [
            {
                "id": "fake-model",
                "object": "model",
                "created": 1_767_225_600,  # the start, on the in-process wall clock
                "owned_by": "llm-worker-rbee",
                "type": "model",
                "display_name": "fake-model",
                "created_at": "2026-01-01T00:00:00Z",
                "lifecycle": "active",
                "meta": {
                    "n_ctx": 2048,
                    "n_ctx_per_slot": 2048,  # one pool: a request may use all of it
                    "n_ctx_train": 2048,
                    "n_vocab": 259,
                    "slots": 2,
                    "model_ref": "hf:org/repo",
                    "kv_shared": True,
                    "batch_invariant": False,
                },
            }
        ],
        "has_more": False,
        "first_id": "fake-model",
        "last_id": "fake-model",
    }


@pytest.mark.behavior("HTTP-006")
async def test_slots_lists_each_slot_and_the_queue(autojump_clock: trio.testing.MockClock) -> None:
    settings = Settings(worker_id="s", slots=1)
    async with inprocess_worker(settings, long_script(8)) as worker:
        assert (await worker.request("GET", "/v1/slots")).json() == {
            "slots": [{"id": 0, "busy": False, "job_id": None}],
            "queue": [],
        }
        async with trio.open_nursery() as nursery:
            for job in ("a", "b"):
                body = {"prompt": "hi", "job_id": job, "stream": True}
                nursery.start_soon(worker.request, "POST", "/v1/inference", body)
                await trio.testing.wait_all_tasks_blocked()
            seen = (await worker.request("GET", "/v1/slots")).json()
            assert seen == {"slots": [{"id": 0, "busy": True, "job_id": "a"}], "queue": ["b"]}


@pytest.mark.behavior("HTTP-019", "ERR-007")
async def test_a_wrong_method_lists_the_allowed_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker() as worker:
        response = await worker.request("GET", "/v1/completions")
    assert response.status == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["allow"].split(", ")


@pytest.mark.behavior("HTTP-020", "ERR-009")
async def test_an_unexpected_exception_is_a_500_in_the_error_shape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = bare_app()

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("a bug with a secret in it")

    with caplog.at_level(logging.ERROR, logger="llm_worker_rbee.http.app"):
        response = await asgi_request(app, "GET", "/boom")
    assert response.status == 500
    assert response.json() == {
        "error": {
            "message": "internal error",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert b"secret" not in response.body
    assert "unhandled error on GET /boom" in caplog.text and "RuntimeError" in caplog.text


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [(ServiceUnavailable, 503, "server_error"), (Gone, 410, "invalid_request_error")],
)
@pytest.mark.behavior("ERR-007")
async def test_other_http_errors_keep_their_status(
    error: type[Exception], status: int, kind: str
) -> None:
    app = bare_app()

    @app.get("/framework")
    async def framework() -> str:
        raise error()

    response = await asgi_request(app, "GET", "/framework")
    assert response.status == status
    assert (response.json()["error"]["code"], response.json()["error"]["type"]) == (
        "http_error",
        kind,
    )


@pytest.mark.behavior("HTTP-024")
async def test_a_job_id_with_unsafe_characters_is_400(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker() as worker:
        header = await worker.request(
            "POST", "/v1/completions", {"prompt": "hi"}, {"X-Request-Id": "two words"}
        )
        body = await worker.request("POST", "/v1/inference", {"prompt": "hi", "job_id": "a/b"})
    assert header.status == 400
    assert (header.json()["error"]["code"], header.json()["error"]["param"]) == (
        "invalid_job_id",
        "X-Request-Id",
    )
    assert body.status == 400
    assert (body.json()["error"]["code"], body.json()["error"]["param"]) == (
        "invalid_value",
        "job_id",
    )


@pytest.mark.behavior("HTTP-025", "ERR-007")
async def test_a_live_duplicate_job_id_is_409(autojump_clock: trio.testing.MockClock) -> None:
    async with inprocess_worker(None, long_script(8)) as worker:
        first: list[Any] = []

        body = {"prompt": "hi", "job_id": "dup", "stream": True}

        async def run_first() -> None:
            first.append(await worker.request("POST", "/v1/inference", body))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_first)
            await trio.testing.wait_all_tasks_blocked()
            again = await worker.request("POST", "/v1/inference", body)
            assert again.status == 409
            assert again.json()["error"]["code"] == "duplicate_job_id"
    end = [e.json() for e in first[0].events if e.name == "end"]
    assert end[0]["stop_reason"] == "eos" and end[0]["tokens_out"] == 8


@pytest.mark.behavior("INF-003")
async def test_message_content_parts_are_joined(autojump_clock: trio.testing.MockClock) -> None:
    script = FakeScript(replies={"Hello": ["joined"]}, reply=["split"])
    async with inprocess_worker(None, script) as worker:
        parts = [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]
        body = {"messages": [{"role": "user", "content": parts, "name": "ignored"}]}
        response = await worker.request("POST", "/v1/chat/completions", body)
    assert response.status == 200
    assert response.json()["choices"][0]["message"]["content"] == "joined"


@pytest.mark.behavior("INF-004")
async def test_a_prompt_of_no_tokens_is_400_empty_prompt() -> None:
    class Wordless(FakeEngine):
        def tokenize(self, text: str, *, add_special: bool) -> list[int]:
            return []

    engine = Wordless()
    send, _ = trio.open_memory_channel[Any](1)
    model = ModelHandle(engine.info, engine, send, cast(ModelActor, None))
    with pytest.raises(ApiError) as caught:
        build_request(
            model, CompletionBody(prompt=""), "", job_id="j", add_special=True, max_tokens=4
        )
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400,
        "empty_prompt",
        "prompt",
    )


@pytest.mark.behavior("INF-006", "RES-023")
@pytest.mark.parametrize(("batch_invariant", "room"), [(False, 128), (True, 64)])
async def test_max_tokens_defaults_and_is_clamped_to_the_context(
    autojump_clock: trio.testing.MockClock, batch_invariant: bool, room: int
) -> None:
    # One pool of 128 cells, 64 a slot's share; or (--batch-invariant) 64 cells a slot.
    settings = Settings(worker_id="clamp", ctx_size=128, slots=2, batch_invariant=batch_invariant)
    async with inprocess_worker(settings, long_script(500)) as worker:
        completion = await worker.request("POST", "/v1/completions", {"prompt": "hi"})
        chat = await worker.request(
            "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}
        )
        rbee = await worker.request(
            "POST", "/v1/inference", {"prompt": "hi", "max_tokens": 999, "stream": True}
        )
    assert completion.json()["usage"]["completion_tokens"] == 16
    usage = chat.json()["usage"]
    assert usage["completion_tokens"] == 64 - usage["prompt_tokens"]
    end = next(e.json() for e in rbee.events if e.name == "end")
    assert (end["stop_reason"], end["tokens_in"], end["tokens_out"]) == ("max_tokens", 3, room - 3)


@pytest.mark.parametrize("key", ["abc", "259", "-1"])
@pytest.mark.behavior("INF-009")
async def test_logit_bias_keys_must_be_token_ids_in_the_vocabulary(
    autojump_clock: trio.testing.MockClock, key: str
) -> None:
    async with inprocess_worker() as worker:
        refused = await worker.request(
            "POST", "/v1/completions", {"prompt": "hi", "logit_bias": {key: 1}}
        )
        accepted = await worker.request(
            "POST", "/v1/completions", {"prompt": "hi", "logit_bias": {"258": -100}}
        )
    assert refused.status == 400 and refused.json()["error"]["param"] == "logit_bias"
    assert accepted.status == 200
    assert worker.engine.admitted[-1].logit_bias == ((258, -100.0),)


@pytest.mark.behavior("INF-022", "INF-035", "ERR-001")
async def test_more_choices_than_slots_wait_and_more_than_128_is_400(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(Settings(worker_id="n", slots=2)) as worker:
        many = await worker.request("POST", "/v1/completions", {"prompt": "hi", "n": 3})
        prompts = await worker.request("POST", "/v1/completions", {"prompt": ["a", "b", "c"]})
        too_many = await worker.request("POST", "/v1/completions", {"prompt": ["a", "b"], "n": 65})
    assert many.status == 200 and len(many.json()["choices"]) == 3
    assert prompts.status == 200 and len(prompts.json()["choices"]) == 3
    assert (too_many.status, too_many.json()["error"]["param"]) == (400, "prompt")
    assert too_many.json()["error"]["code"] == "invalid_value"


@pytest.mark.behavior("INF-022")
async def test_cancelling_the_job_cancels_every_choice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(Settings(worker_id="c", slots=2), long_script()) as worker:
        seen: list[Any] = []

        async def stream() -> None:
            body = {"prompt": "hi", "n": 2, "stream": True, "max_tokens": 100}
            headers = {"X-Request-Id": "many"}
            seen.append(await worker.request("POST", "/v1/completions", body, headers))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream)
            await trio.sleep(1)
            assert worker.services.scheduler is not None
            assert sorted(worker.services.scheduler.statistics().slot_jobs) == ["many", "many.1"]
            assert (await worker.request("DELETE", "/v1/inference/many")).status == 204
        await trio.sleep(1)
        assert worker.services.scheduler.statistics().slots_busy == 0
        assert worker.engine.active == []
    data = [e.json() for e in seen[0].events if e.data != "[DONE]"]
    assert data[-1]["error"]["code"] == "cancelled"
    assert seen[0].events[-1].data == "[DONE]"


def one_choice(sessions: list[InferenceSession]) -> tuple[ChoiceBox, ChoiceStream]:
    doorbell = trio.lowlevel.ParkingLot()
    box = ChoiceBox(0, "j", OutputMailbox(doorbell))
    return box, ChoiceStream([box], sessions, doorbell)


@pytest.mark.behavior("SSE-008")
async def test_waiting_frames_go_out_in_one_write() -> None:
    doorbell = trio.lowlevel.ParkingLot()
    boxes = [ChoiceBox(i, f"job-{i}", OutputMailbox(doorbell)) for i in range(3)]
    stream = ChoiceStream(boxes, [], doorbell)
    for box in boxes:
        box.emit(Started(box.job_id, box.index, 1))
        assert (await stream.receive())[1] == Started(box.job_id, box.index, 1)
    for box, text in zip(boxes, "abc", strict=True):
        assert box.mailbox.put(TextOutput(box.index, text, 1))

    async def frames() -> AsyncIterator[bytes]:
        async for _, event in stream:
            assert isinstance(event, TextDelta)
            yield event.text.encode()

    body = SessionBody(stream, frames())
    assert await body.__anext__() == b"abc"  # three choices' text waiting: one write
    assert boxes[0].mailbox.put(TextOutput(0, "d", 1))
    assert await body.__anext__() == b"d"
    await body.aclose()

    mailbox = OutputMailbox()
    for text in ("a", "b", "c"):
        assert mailbox.put(TextOutput(0, text, 1))
    assert await mailbox.get() == TextOutput(0, "abc", 3)  # one text delta for all three
    mailbox.close()
    assert not mailbox.put(TextOutput(0, "d", 1))  # the session is gone: dropped


def _chat_frames(stream: ChoiceStream) -> AsyncIterator[bytes]:
    services = SimpleNamespace(model_id="m", settings=Settings(worker_id="w"), wall_clock=time)
    reply = _Reply("chatcmpl", "chat.completion", cast(Services, services), "j", chat=True)
    return reply._frames(stream, False, [])


def _rbee_frames(stream: ChoiceStream) -> AsyncIterator[bytes]:
    return session_frames(stream, 15.0, [b"started"], lambda d: [d.text.encode()], lambda e: [])


@pytest.mark.behavior("SSE-008", "SSE-004", "SSE-012")
@pytest.mark.parametrize("frames_of", [_chat_frames, _rbee_frames])
async def test_an_event_without_frames_does_not_hold_the_opening_back(
    autojump_clock: trio.testing.MockClock,
    frames_of: Callable[[ChoiceStream], AsyncIterator[bytes]],
) -> None:
    """Joining takes only what is already waiting: the session's Started (no frame of its
    own) does not keep a chat stream's role chunk, or a job's `started`, until the first
    token, however long the prefill."""
    session = cast(InferenceSession, SimpleNamespace(abort=lambda reason: None))
    box, stream = one_choice([session])
    box.emit(Started("j", 0, 900))
    body = SessionBody(stream, frames_of(stream))
    opening = await body.__anext__()
    assert trio.current_time() == 0
    assert opening.startswith((b"started", b"data: {")) and opening.count(b"\n\n") <= 1
    assert box.mailbox.put(TextOutput(0, "Hi", 1))
    assert b"Hi" in await body.__anext__()
    await body.aclose()


@pytest.mark.behavior("SSE-010")
async def test_a_stream_that_loses_its_session_ends_with_an_error() -> None:
    box, stream = one_choice([])
    box.abandon()  # the session ended without its final event
    index, event = await next_choice(stream, keepalive=1.0) or (1, None)
    assert (index, event) == (0, LOST)
    assert LOST.error is not None and LOST.error.code == "internal_error"


@pytest.mark.parametrize("log_prompts", [True, False])
@pytest.mark.behavior("CFG-012")
async def test_prompts_reach_the_log_only_with_log_prompts(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, log_prompts: bool
) -> None:
    settings = Settings(worker_id="log", log_prompts=log_prompts)
    with caplog.at_level(logging.DEBUG, logger="llm_worker_rbee.http.request_context"):
        async with inprocess_worker(settings) as worker:
            await worker.request("POST", "/v1/completions", {"prompt": "very private words"})
    lines = [
        r.getMessage() for r in caplog.records if r.name == "llm_worker_rbee.http.request_context"
    ]
    if log_prompts:
        assert "prompt: 'very private words'" in lines
    else:
        assert "prompt of 18 characters" in lines
        assert not any("private" in line for line in lines)
