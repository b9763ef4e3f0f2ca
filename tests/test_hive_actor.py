"""HeartbeatActor in virtual time (MockClock, autojump): backoff, goodbye, commands, and
what GET /heartbeat says, with the whole worker on the fake engine and a scripted hive."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import count
from typing import Any

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.heartbeat import HeartbeatActor, HeartbeatHandle, backoff_delay
from llm_worker_rbee.actors.lifecycle import LifecycleActor, LifecycleHandle
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.hive.client import HiveClient, Payload
from llm_worker_rbee.hive.scripted import HiveScript, Outage, ScriptedHive, captured_log
from llm_worker_rbee.hive.vitals import Vitals
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.messages.hive import CommandAck, HiveCommand, HiveOutcome, HiveReply, Obey
from llm_worker_rbee.messages.lifecycle import Stop, WorkerState
from llm_worker_rbee.messages.session import StopReason
from llm_worker_rbee.pipeline.runner import VirtualTimeStepRunner
from llm_worker_rbee.testing.asgi import asgi_request
from llm_worker_rbee.testing.inprocess import InProcessServer
from llm_worker_rbee.worker import Runtime, run_worker

EPOCH = 1_767_225_600.0


@pytest.mark.parametrize(
    ("attempt", "cap", "random", "delay"),
    [
        (0, 10.0, 0.0, 0.5),
        (1, 10.0, 0.0, 1.0),
        (4, 10.0, 0.0, 8.0),
        (5, 10.0, 0.0, 10.0),  # capped at the heartbeat interval
        (500, 10.0, 0.0, 10.0),
        (3, 2.0, 0.0, 2.0),
        (0, 10.0, 0.5, 0.375),  # jitter shortens by up to half
        (5, 10.0, 0.999, 5.005),
    ],
)
@pytest.mark.behavior("HIVE-011")
def test_backoff_doubles_from_half_a_second_up_to_the_interval_less_jitter(
    attempt: int, cap: float, random: float, delay: float
) -> None:
    assert backoff_delay(attempt, cap, random) == pytest.approx(delay)


class NoWork:
    """Nothing to drain: a drain stops at once."""

    async def wait_empty(self) -> None:
        pass

    def abort_all(self, reason: StopReason) -> None:
        pass


@dataclass
class Reports:
    lifecycle: LifecycleHandle

    def ready(self) -> Payload:
        return {"worker_id": "w"}

    def heartbeat(self) -> Payload:
        return {"worker_id": "w", "state": self.lifecycle.state.value}

    def gone(self, reason: str) -> Payload:
        return {"worker_id": "w", "reason": reason}


@dataclass
class Running:
    actor: HeartbeatHandle
    lifecycle: LifecycleHandle
    vitals: Vitals


@asynccontextmanager
async def heartbeat_actor(
    client: HiveClient,
    *,
    interval: float = 10.0,
    cancel_job: Callable[[str], bool] = lambda job: False,
) -> AsyncIterator[Running]:
    async with trio.open_nursery() as nursery:
        lifecycle = await nursery.start(LifecycleActor(drain_timeout=1.0, handle_signals=False).run)
        vitals = Vitals()
        actor = HeartbeatActor(
            client=client,
            interval=interval,
            lifecycle=lifecycle,
            reports=Reports(lifecycle),
            cancel_job=cancel_job,
            vitals=vitals,
            wall_clock=lambda: EPOCH + trio.current_time(),
            jitter=lambda: 0.0,
            worker_id="w",
        )
        handle = await nursery.start(actor.run)
        await lifecycle.ready(NoWork())
        yield Running(handle, lifecycle, vitals)
        nursery.cancel_scope.cancel()


def lines(hive: ScriptedHive) -> list[str]:
    return [call.line() for call in hive.calls]


@pytest.mark.behavior("HIVE-004")
async def test_serving_never_waits_on_a_hanging_hive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hive = ScriptedHive(HiveScript(down=[Outage(start=0, end=100, mode="hang")]))
    async with heartbeat_actor(hive) as running:
        assert trio.current_time() == 0  # started at once
        await trio.sleep(12)
        # each ready hangs until the 5 s call timeout, then backs off 0.5 s, 1 s, ...
        assert lines(hive) == ["0.000 ready hang", "5.500 ready hang", "11.500 ready hang"]
        assert running.vitals.hive == "unreachable"


@pytest.mark.behavior("HIVE-014")
async def test_goodbye_is_bounded_to_two_seconds(autojump_clock: trio.testing.MockClock) -> None:
    hive = ScriptedHive(HiveScript(down=[Outage(start=5, end=100, mode="hang")]))
    with captured_log() as log:
        async with heartbeat_actor(hive) as running:
            await trio.sleep(6)
            running.lifecycle.request(Stop("test"))
            await running.actor.wait_goodbye()
            assert trio.current_time() == 8.0
    assert lines(hive)[-1] == "6.000 gone hang"
    assert log[-1] == "8.000 WARNING could not say goodbye to hive http://scripted-hive within 2 s"


@pytest.mark.behavior("HIVE-014")
async def test_no_goodbye_to_a_hive_that_never_acknowledged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hive = ScriptedHive(HiveScript(down=[Outage(start=0, end=100)]))
    async with heartbeat_actor(hive) as running:
        await trio.sleep(2)
        running.lifecycle.request(Stop("test"))
        await running.actor.wait_goodbye()
        assert trio.current_time() == 2.0
    assert "gone" not in " ".join(lines(hive))


class Raising(ScriptedHive):
    """A hive client with a bug: every heartbeat raises."""

    async def heartbeat(self, payload: Payload) -> HiveReply:
        self._record("heartbeat", "raised", payload, HiveOutcome.OK, "")
        raise RuntimeError("garbage from the hive")


@pytest.mark.behavior("HIVE-013")
async def test_a_client_that_raises_is_a_failure_not_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hive = Raising(HiveScript())
    with captured_log() as log:
        async with heartbeat_actor(hive) as running:
            await trio.sleep(11.6)
            assert running.vitals.hive == "unreachable"
            assert running.lifecycle.state is WorkerState.READY
    assert lines(hive) == [
        "0.000 ready ok",
        "10.000 heartbeat raised",
        "10.500 heartbeat raised",
        "11.500 heartbeat raised",
    ]
    assert log[1] == (
        "10.000 WARNING hive http://scripted-hive is unreachable (heartbeat RuntimeError: "
        "garbage from the hive): serving goes on, retrying with backoff"
    )


@pytest.mark.behavior("HIVE-018")
async def test_a_dropped_channel_is_answered_at_once_but_never_cuts_the_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hive = ScriptedHive(HiveScript(down=[Outage(start=20, end=30)]))
    async with heartbeat_actor(hive) as running:
        await trio.sleep(3)
        running.actor.on_connection_lost()  # reachable: speak up now (which reconnects)
        await trio.sleep(22)
        running.actor.on_connection_lost()  # 25, unreachable: the backoff decides
        await trio.sleep(6)
    assert lines(hive) == [
        "0.000 ready ok",
        "3.000 heartbeat ok",
        "13.000 heartbeat ok",
        "23.000 heartbeat refused",
        "23.500 heartbeat refused",
        "24.500 heartbeat refused",
        "26.500 heartbeat refused",
        "30.500 heartbeat ok",
    ]


@pytest.mark.behavior("HIVE-016")
async def test_commands_reach_the_lifecycle_and_the_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cancelled: list[str] = []

    def cancel_job(job_id: str) -> bool:
        cancelled.append(job_id)
        return job_id == "known"

    async with heartbeat_actor(ScriptedHive(HiveScript()), cancel_job=cancel_job) as running:
        actor = running.actor
        acks = [
            await actor.on_command(HiveCommand("1", "ping")),
            await actor.on_command(HiveCommand("2", "cancel", "known")),
            await actor.on_command(HiveCommand("3", "cancel", "unknown")),
        ]
        assert [(a.id, a.ok, a.detail) for a in acks] == [
            ("1", True, "pong"),
            ("2", True, "cancelled"),
            ("3", False, "no job unknown"),
        ]
        assert cancelled == ["known", "unknown"]
        assert (await actor.on_command(HiveCommand("4", "drain"))).detail == "draining"
        await running.lifecycle.wait_stopped()
        assert running.lifecycle.stop_reason == "hive: drain"


@pytest.mark.behavior("HIVE-016")
async def test_shutdown_command_stops_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with heartbeat_actor(ScriptedHive(HiveScript())) as running:
        ack = await running.actor.on_command(HiveCommand("9", "shutdown"))
        assert ack.to_json() == {
            "type": "ack",
            "id": "9",
            "command": "shutdown",
            "ok": True,
            "detail": "stopping",
        }
        await running.lifecycle.wait_stopped()
        assert running.lifecycle.stop_reason == "hive: shutdown"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"command": "ping"}, "a command needs a string 'id'"),
        ({"id": "1", "command": "reboot"}, "unknown command 'reboot'"),
        ({"id": "1", "command": "cancel"}, "'cancel' needs a string 'job_id'"),
    ],
)
@pytest.mark.behavior("HIVE-017")
def test_malformed_commands_are_refused_with_a_reason(message: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        HiveCommand.from_json(message)


# The whole worker, a scripted hive, and GET /heartbeat.


async def worker_with_hive(
    script: HiveScript, engine: FakeScript, *, task_status: trio.TaskStatus[tuple[Any, Services]]
) -> None:
    settings = Settings(worker_id="w", hive_url=script.url, slots=1, heartbeat_interval=10)
    engine.n_ctx, engine.n_slots = settings.ctx_tokens, settings.slots
    server = InProcessServer()
    ids = count(1)
    runtime = Runtime(
        runner=VirtualTimeStepRunner(lambda: engine.step_latency),
        server=server,
        handle_signals=False,
        wall_clock=lambda: EPOCH + trio.current_time(),
        new_job_id=lambda: f"job-{next(ids)}",
        hive_client=ScriptedHive(script),
        jitter=script.jitter_source(),
    )

    async def run(*, task_status: trio.TaskStatus[Services]) -> None:
        await run_worker(
            settings,
            model_id="fake",
            engine_factory=lambda: FakeEngine(engine),
            runtime=runtime,
            task_status=task_status,
        )

    async with trio.open_nursery() as nursery:
        services = await nursery.start(run)
        task_status.started((server.app, services))


async def get_heartbeat(app: Any) -> dict[str, Any]:
    exchange = await asgi_request(app, "GET", "/heartbeat")
    assert exchange.status == 200
    value = json.loads(exchange.body)
    assert isinstance(value, dict)
    return value


@pytest.mark.behavior("HTTP-004", "HIVE-011")
async def test_get_heartbeat_says_unreachable_with_the_last_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = HiveScript(down=[Outage(start=15, end=40)])
    async with trio.open_nursery() as nursery:
        app, services = await nursery.start(worker_with_hive, script, FakeScript())
        await trio.sleep(12)
        seen = await get_heartbeat(app)
        assert (seen["hive"], seen["hive_last_success"]) == ("reachable", EPOCH + 10)
        await trio.sleep(20)  # 32: the heartbeat at 20 failed, and the retries since
        seen = await get_heartbeat(app)
        assert (seen["hive"], seen["hive_last_success"]) == ("unreachable", EPOCH + 10)
        assert seen["timestamp"] == EPOCH + 32
        services.lifecycle.request(Stop("test"))


@pytest.mark.behavior("HIVE-008", "HIVE-009")
async def test_an_engine_failure_shows_as_last_error_and_degraded_until_a_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = FakeScript(reply=["x"] * 3, step_latency=0.25, fail_at_steps=frozenset({2}))
    async with trio.open_nursery() as nursery:
        app, services = await nursery.start(worker_with_hive, HiveScript(), engine)
        body = json.dumps({"prompt": "hi", "max_tokens": 3, "stream": True}).encode()
        failed = await asgi_request(app, "POST", "/v1/inference", body=body)
        assert b"engine_error" in failed.body
        seen = await get_heartbeat(app)
        assert seen["state"] == "degraded" and seen["requests_total"] == 1
        assert seen["last_error"] == {
            "code": "engine_error",
            "message": "generation failed",
            "at": EPOCH + 0.5,
        }
        await asgi_request(app, "POST", "/v1/inference", body=body)
        seen = await get_heartbeat(app)
        assert seen["state"] == "ready" and seen["requests_total"] == 2
        assert seen["last_error"]["at"] == EPOCH + 0.5  # still the last one
        services.lifecycle.request(Stop("test"))


@pytest.mark.behavior("HIVE-016")
async def test_a_client_that_stopped_waiting_for_its_ack_does_not_stop_the_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with heartbeat_actor(ScriptedHive(HiveScript())) as running:
        reply, gone = trio.open_memory_channel[CommandAck](1)
        gone.close()  # the client was cancelled while its command was in the inbox
        await running.actor._inbox.send(Obey(HiveCommand("1", "ping"), reply))
        ack = await running.actor.on_command(HiveCommand("2", "ping"))
        assert (ack.id, ack.detail) == ("2", "pong")
