"""The details the official clients read, through the clients themselves over the in-process
app (their own httpx2, through ASGI; virtual time on the fake engine): the request id of an
answer and of an error, which errors they retry, the model list, Anthropic's words for an
overflow and its answer to `thread`, and which of OpenAI's fields are taken or refused."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import trio
import trio.testing
from anthropic.lib.tools import beta_async_tool

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.testing.inprocess import InProcessWorker, inprocess_worker

ASK: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
BASE = "http://in-process"
CHAT = "/v1/chat/completions"


def slow_script() -> FakeScript:
    """One token a second: 50 of them outlast every deadline below."""
    return FakeScript(reply=["x"] * 50, step_latency=1.0)


@dataclass
class Clients:
    worker: InProcessWorker
    openai: openai.AsyncOpenAI
    anthropic: anthropic.AsyncAnthropic
    # The requests that reached the worker (path, JSON body): a retry is one more.
    attempts: list[tuple[str, Any]] = field(default_factory=list)

    def tries(self, path: str) -> int:
        return [p for p, _ in self.attempts].count(path)


@asynccontextmanager
async def clients(
    settings: Settings | None = None, script: FakeScript | None = None
) -> AsyncIterator[Clients]:
    """Both official clients on the in-process worker, with their default retries."""
    async with inprocess_worker(settings, script) as worker:
        transport = httpx2.ASGITransport(app=worker.app)
        seen: list[tuple[str, Any]] = []

        async def count(request: httpx2.Request) -> None:
            seen.append((request.url.path, json.loads(request.content or b"null")))

        hooks = {"request": [count]}
        async with httpx2.AsyncClient(transport=transport, event_hooks=hooks) as http:
            yield Clients(
                worker,
                openai.AsyncOpenAI(base_url=f"{BASE}/v1", api_key="k", http_client=http),
                anthropic.AsyncAnthropic(base_url=BASE, api_key="k", http_client=http),
                seen,
            )


@pytest.mark.behavior("HTTP-068")
async def test_an_error_names_the_clients_request_id_or_a_fresh_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with clients() as c:
        with pytest.raises(openai.BadRequestError) as bad:
            await c.openai.chat.completions.create(
                model="fake-model",
                messages=ASK,  # type: ignore[arg-type]
                temperature=5,
                extra_headers={"X-Request-Id": "mine-1"},
            )
        assert bad.value.request_id == "mine-1"
        with pytest.raises(openai.NotFoundError) as missing:
            await c.openai.chat.completions.create(model="gpt-x", messages=ASK)  # type: ignore[arg-type]
        assert missing.value.request_id is not None and missing.value.request_id.startswith("job-")
        # An id the worker cannot take is refused, and not echoed back.
        with pytest.raises(openai.BadRequestError) as unsafe:
            await c.openai.chat.completions.create(
                model="fake-model",
                messages=ASK,  # type: ignore[arg-type]
                extra_headers={"X-Request-Id": "no spaces"},
            )
        assert unsafe.value.code == "invalid_job_id"
        assert unsafe.value.request_id is not None
        assert unsafe.value.request_id.startswith("job-")
        reply = await c.openai.chat.completions.create(
            model="fake-model",
            messages=ASK,  # type: ignore[arg-type]
            extra_headers={"X-Request-Id": "mine-2"},
        )
        assert reply._request_id == "mine-2"


@pytest.mark.behavior("HTTP-068", "ERR-032")
async def test_a_deadline_is_408_with_the_request_id_and_tried_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The client's own deadline has passed: both clients would retry a 408 twice (three
    attempts, each running past the deadline again); `x-should-retry: false` stops them."""
    async with clients(script=slow_script()) as c:
        with pytest.raises(openai.APIStatusError) as late:
            await c.openai.chat.completions.create(
                model="fake-model",
                messages=ASK,  # type: ignore[arg-type]
                extra_body={"timeout": 0.5},
                extra_headers={"X-Request-Id": "late-1"},
            )
        assert late.value.status_code == 408 and late.value.code == "request_timeout"
        assert late.value.request_id == "late-1"
        assert late.value.response.headers["x-should-retry"] == "false"
        assert c.tries(CHAT) == 1
        with pytest.raises(anthropic.APIStatusError) as slow:
            await c.anthropic.messages.create(
                model="fake-model",
                max_tokens=40,
                messages=ASK,  # type: ignore[arg-type]
                extra_body={"timeout": 0.5},
                extra_headers={"X-Request-Id": "late-2"},
            )
        assert slow.value.status_code == 408 and slow.value.type == "timeout_error"
        assert slow.value.request_id == "late-2"
        assert c.tries("/v1/messages") == 1


@pytest.mark.behavior("ERR-032")
async def test_a_cancelled_request_and_a_taken_job_id_are_not_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request someone cancelled (503 `cancelled`) must not run again on a retry, and a
    job id in use (409) stays in use; a full worker (503 `all_slots_busy`) is retried."""
    # One place in the queue, by count alone (the slow script's wait would refuse sooner).
    settings = Settings(worker_id="w", slots=1, max_queue=1, max_queue_wait=0)
    async with clients(settings, slow_script()) as c:
        refusals: list[openai.APIStatusError] = []

        async def ask(job_id: str) -> None:
            with pytest.raises(openai.APIStatusError) as refused:
                await c.openai.chat.completions.create(
                    model="fake-model",
                    messages=ASK,  # type: ignore[arg-type]
                    extra_headers={"X-Request-Id": job_id},
                )
            refusals.append(refused.value)

        async with trio.open_nursery() as nursery:
            # The client's first call reads the platform in a thread, while virtual time
            # runs on: made here, so the first ask below is in before the second is sent.
            await c.openai.models.list()
            nursery.start_soon(ask, "running")
            await trio.testing.wait_all_tasks_blocked()
            await ask("running")  # the same id while the first runs
            [taken] = refusals
            assert (taken.status_code, taken.code) == (409, "duplicate_job_id")
            assert taken.response.headers["x-should-retry"] == "false"
            assert c.tries(CHAT) == 2
            nursery.start_soon(c.worker.request, "POST", CHAT, {"messages": ASK})  # queued
            await trio.testing.wait_all_tasks_blocked()
            full = await c.worker.request("POST", CHAT, {"messages": ASK})
            assert full.status == 503 and full.json()["error"]["code"] == "all_slots_busy"
            assert "x-should-retry" not in full.headers  # a place will free: retry
            cancel = await c.worker.request("DELETE", "/v1/inference/running")
            assert cancel.status == 204
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        cancelled = refusals[1]
        assert (cancelled.status_code, cancelled.code) == (503, "cancelled")
        assert cancelled.request_id == "running"
        assert c.tries(CHAT) == 2


@pytest.mark.behavior("HTTP-068")
async def test_the_anthropic_client_reads_request_id_on_answers_and_errors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with clients() as c:
        message = await c.anthropic.messages.create(
            model="fake-model",
            max_tokens=4,
            messages=ASK,  # type: ignore[arg-type]
        )
        assert message._request_id is not None and message._request_id.startswith("job-")
        with pytest.raises(anthropic.BadRequestError) as bad:
            await c.anthropic.messages.create(
                model="fake-model",
                max_tokens=0,
                messages=ASK,  # type: ignore[arg-type]
                extra_headers={"X-Request-Id": "mine-3"},
            )
        assert bad.value.request_id == "mine-3"
        raw = await c.worker.request("POST", "/v1/messages", {"max_tokens": 2, "messages": ASK})
        assert raw.headers["request-id"] == raw.headers["x-request-id"]


QWEN = (Path(__file__).parent / "templates" / "qwen2.5.jinja").read_text()
CALL = ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>']


@beta_async_tool
async def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


@pytest.mark.behavior("OAI-028")
async def test_the_tool_runner_is_told_threads_are_unsupported_and_sends_it_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The anthropic client's tool runner asks for a server-side thread; refused with
    Anthropic's `thread_unsupported_request`, it sends the whole conversation instead, and
    every turn after that too (a `continue` would carry no history)."""
    answer: dict[str, list[str | bytes]] = {"<tool_response>\nsunny\n</tool_response>": ["Sunny."]}
    script = FakeScript(reply=CALL, replies=answer, chat_template=QWEN)
    async with clients(script=script) as c:
        runner = c.anthropic.beta.messages.tool_runner(
            model="fake-model",
            max_tokens=64,
            messages=ASK,
            tools=[get_weather],  # type: ignore[arg-type]
        )
        final = await runner.until_done()
        assert [block.type for block in final.content] == ["text"]
        assert final.content[0].text == "Sunny."  # type: ignore[union-attr]
        # The refused first turn, then the call and the answer, each with the whole history.
        sent = [body for _, body in c.attempts]
        assert ["thread" in body for body in sent] == [True, False, False]
        assert [len(body["messages"]) for body in sent] == [1, 1, 3]
        assert all(body["messages"][0] == ASK[0] for body in sent)
        thread = {"type": "continue", "previous_message_id": "msg_1"}
        refused = await c.worker.request(
            "POST",
            "/v1/messages",
            {"model": "fake-model", "max_tokens": 4, "messages": ASK, "thread": thread},
        )
        assert refused.status == 400
        error = refused.json()["error"]
        assert (error["param"], error["code"]) == ("thread", "unsupported_parameter")
        assert error["details"] == {"error_code": "thread_unsupported_request"}


@pytest.mark.behavior("ERR-033")
async def test_a_prompt_too_long_is_said_in_anthropics_words(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """langchain-anthropic, litellm and Claude Code know a context overflow on the Messages
    API by Anthropic's message; the numbers are the prompt's tokens and the most it may be."""
    async with clients(Settings(worker_id="w", ctx_size=256, slots=1)) as c:
        long_ask: list[anthropic.types.MessageParam] = [{"role": "user", "content": "la " * 100}]
        with pytest.raises(anthropic.BadRequestError) as overflow:
            await c.anthropic.messages.create(model="fake-model", max_tokens=8, messages=long_ask)
        said = overflow.value.api_message or ""
        match = re.fullmatch(r"prompt is too long: (\d+) tokens > (\d+) maximum", said)
        assert match is not None, said
        counted = await c.anthropic.messages.count_tokens(model="fake-model", messages=long_ask)
        capacity = (await c.openai.models.list()).data[0].model_extra["meta"]["n_ctx_per_slot"]  # type: ignore[index]
        assert (int(match[1]), int(match[2])) == (counted.input_tokens, capacity - 1)
        assert overflow.value.body["error"]["code"] == "context_length_exceeded"  # type: ignore[index]
        # The chat route keeps OpenAI's words for the same prompt.
        with pytest.raises(openai.BadRequestError) as chat:
            await c.openai.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "la " * 100}]
            )
        assert "maximum context length is" in chat.value.message


@pytest.mark.behavior("OAI-025")
async def test_include_of_encrypted_reasoning_asks_for_nothing_and_is_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Claude-style clients through litellm's proxy ask for encrypted reasoning; the worker
    makes no reasoning items, so there is nothing to include. Other values stay refused."""
    async with clients() as c:
        response = await c.openai.responses.create(
            model="fake-model", input="hi", include=["reasoning.encrypted_content"]
        )
        assert response.status == "completed"
        assert [item.type for item in response.output] == ["message"]
        with pytest.raises(openai.BadRequestError) as refused:
            await c.openai.responses.create(
                model="fake-model",
                input="hi",
                include=["reasoning.encrypted_content", "message.output_text.logprobs"],
            )
        assert (refused.value.param, refused.value.code) == ("include", "unsupported_parameter")


@pytest.mark.behavior("HTTP-005")
async def test_both_clients_read_the_model_list(autojump_clock: trio.testing.MockClock) -> None:
    """One list for both: OpenAI's `created` (when the worker started, on its wall clock)
    and Anthropic's `type`, `display_name` and `created_at` for the same moment, on a page
    that ends (`has_more` false), and the same entry by id."""
    settings = Settings(worker_id="w", alias="claude-local")
    async with clients(settings) as c:
        [listed] = (await c.openai.models.list()).data
        assert (listed.id, listed.object) == ("fake-model", "model")
        started = c.worker.services.wall_clock() - trio.current_time()
        assert listed.created == int(started) > 0
        page = await c.anthropic.models.list()
        assert not page.has_next_page()
        models = [model async for model in page]
        assert [(m.id, m.type, m.display_name) for m in models] == [
            ("fake-model", "model", "fake-model")
        ]
        assert models[0].created_at == datetime.fromtimestamp(listed.created, UTC)
        alias = await c.anthropic.models.retrieve("claude-local")
        assert (alias.id, alias.display_name) == ("claude-local", "fake-model")
        assert alias.created_at == models[0].created_at


@pytest.mark.behavior("OAI-003", "OAI-004")
async def test_chat_fields_that_change_nothing_are_accepted_and_those_that_would_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The openai client's own fields: settings that leave the answer as it is are taken;
    asking for another length than the model writes is refused by name."""
    async with clients() as c:
        create = c.openai.chat.completions.create
        reply = await create(
            model="fake-model",
            messages=ASK,  # type: ignore[arg-type]
            store=True,
            metadata={"team": "a"},
            service_tier="auto",
            prompt_cache_key="conversation-1",
            safety_identifier="user-1",
            reasoning_effort="none",
            verbosity="medium",
        )
        assert reply.choices[0].message.content == "Hello, world!"
        for name, value in (("verbosity", "low"),):
            with pytest.raises(openai.BadRequestError) as refused:
                await create(model="fake-model", messages=ASK, **{name: value})  # type: ignore[arg-type, call-overload]
            assert (refused.value.param, refused.value.code) == (name, "unsupported_parameter")
        with pytest.raises(openai.BadRequestError) as bad:
            await create(model="fake-model", messages=ASK, metadata={"n": 1})  # type: ignore[arg-type, dict-item]
        assert bad.value.param == "metadata.n"
        with pytest.raises(openai.BadRequestError) as terse:
            await c.openai.responses.create(
                model="fake-model", input="hi", text={"verbosity": "low"}
            )
        assert terse.value.param == "text.verbosity"
