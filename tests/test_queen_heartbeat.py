"""rbee's worker-contract heartbeat and GET /info: the payload against rbee's serde shapes,
the HTTP client and the whole worker against a tiny queen on a real loopback socket
(port 0), and the actor's timing in virtual time. No sleeps: every wait is on an event,
under an absolute `fail_after` cap."""

from __future__ import annotations

import json
import re
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.lifecycle import LifecycleActor
from llm_worker_rbee.actors.queen_heartbeat import QueenHeartbeatActor
from llm_worker_rbee.config import Settings, SettingsError, settings_from
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.hive.queen_client import QUEEN_HEARTBEAT_PATH, HttpQueenClient, queen_reply
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.system.status import rfc3339, worker_heartbeat_payload
from llm_worker_rbee.messages.hive import HIVE_OK, HiveOutcome, HiveReply
from llm_worker_rbee.messages.lifecycle import Drain
from llm_worker_rbee.messages.session import StopReason
from llm_worker_rbee.pipeline.runner import ThreadStepRunner
from llm_worker_rbee.testing.inprocess import inprocess_worker
from llm_worker_rbee.worker import Runtime, run_worker

CAP_S = 20
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z

# rbee's worker-contract (types.rs WorkerInfo, heartbeat.rs WorkerHeartbeat) and
# shared-contract (status.rs OperationalStatus, lowercase; heartbeat.rs HeartbeatTimestamp,
# a newtype over chrono's DateTime<Utc>, so a bare RFC 3339 string).
WORKER_INFO_TYPES = {
    "id": str,
    "model_id": str,
    "device": str,
    "port": int,
    "status": str,
    "implementation": str,
    "version": str,
}
OPERATIONAL_STATUS = {"starting", "ready", "busy", "stopping", "stopped"}
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def assert_worker_info(info: dict[str, Any]) -> None:
    assert set(info) == set(WORKER_INFO_TYPES)
    for name, kind in WORKER_INFO_TYPES.items():
        assert isinstance(info[name], kind), name
    assert 0 < info["port"] < 65536  # a u16, never the 0 of --port 0
    assert info["status"] in OPERATIONAL_STATUS
    assert re.fullmatch(r"cpu:0|cuda:\d+", info["device"])


def assert_worker_heartbeat(body: dict[str, Any]) -> None:
    assert set(body) == {"worker", "timestamp"}
    assert_worker_info(body["worker"])
    assert RFC3339_UTC.fullmatch(body["timestamp"])


# -- the flags -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("queen_url", "ftp://queen"),
        ("queen_url", "http://"),
        ("advertise_url", "http://0.0.0.0:8080"),
        ("advertise_url", "http://[::]:8080"),
    ],
)
@pytest.mark.behavior("CFG-021", "CFG-025")
def test_queen_and_advertise_urls_are_checked_at_start(name: str, value: str) -> None:
    flag = "--" + name.replace("_", "-")
    with pytest.raises(SettingsError, match=rf"^{flag}: "):
        settings_from({name: value}, environ={})


@pytest.mark.behavior("CFG-021", "CFG-025")
def test_queen_and_advertise_urls_from_flags_or_the_environment() -> None:
    env = {"LLM_WORKER_QUEEN_URL": "http://localhost:7833"}
    settings = settings_from({"advertise_url": "http://worker-7:8080/"}, environ=env)
    assert (settings.queen_url, settings.advertise_url) == (
        "http://localhost:7833",
        "http://worker-7:8080",
    )


# -- the payload -----------------------------------------------------------------------------


@pytest.mark.behavior("HIVE-031")
def test_timestamps_are_rfc3339_utc_as_chrono_reads_them() -> None:
    assert rfc3339(EPOCH) == "2026-01-01T00:00:00.000Z"
    assert rfc3339(EPOCH + 2.5) == "2026-01-01T00:00:02.500Z"
    assert datetime.fromisoformat(rfc3339(EPOCH + 61.25)).timestamp() == EPOCH + 61.25


@pytest.mark.behavior("HIVE-031", "HIVE-032", "HTTP-060")
async def test_info_is_the_heartbeats_worker_and_open_without_the_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(worker_id="worker-cpu-8080", slots=1, api_key="k")  # type: ignore[arg-type]
    script = FakeScript(reply=["x"] * 8, step_latency=0.25)
    async with inprocess_worker(settings, script) as worker:
        info = await worker.request("GET", "/info")
        assert info.status == 200  # no key sent
        assert info.json() == {
            "id": "worker-cpu-8080",
            "model_id": "fake-model",
            "device": "cpu:0",
            "port": 8080,
            "status": "ready",
            "implementation": "llm-worker-rbee",
            "version": "0.1.0",
        }
        assert (await worker.request("GET", "/v1/models")).status == 401  # the rest is not open
        beat = worker_heartbeat_payload(worker.services)
        assert_worker_heartbeat(beat)
        assert beat["worker"] == info.json()
        assert beat["timestamp"] == rfc3339(EPOCH + trio.current_time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                worker.request,
                "POST",
                "/v1/inference",
                {"prompt": "hi", "stream": True},
                {"x-api-key": "k"},
            )
            await trio.sleep(0.5)  # virtual: the one slot is taken
            assert (await worker.request("GET", "/info")).json()["status"] == "busy"
        assert (await worker.request("GET", "/info")).json()["status"] == "ready"
        worker.services.lifecycle.signal(signal.SIGTERM)
        await worker.services.lifecycle.wait_stopped()
        assert worker_heartbeat_payload(worker.services)["worker"]["status"] == "stopped"


# -- the HTTP client against a tiny queen ----------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class TinyQueen:
    """Answers every request with `status` and `content_type`; keeps what it received."""

    status: int = 200
    content_type: str = "application/json"
    received: list[Received] = field(default_factory=list)
    arrived: trio.MemorySendChannel[Received] | None = None

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some()
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        start, *lines = head.decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
        while len(body) < int(headers.get("content-length", "0")):
            body += await stream.receive_some()
        method, path, _ = start.split(" ")
        got = Received(method, path, headers, json.loads(body) if body else None)
        self.received.append(got)
        answer = b'{"status":"ok","message":"Heartbeat received"}'
        if self.content_type.startswith("text/html"):
            answer = b"<!doctype html><title>queen</title>"
        await stream.send_all(
            f"HTTP/1.1 {self.status} X\r\ncontent-type: {self.content_type}\r\n"
            f"content-length: {len(answer)}\r\nconnection: close\r\n\r\n".encode()
            + answer
        )
        if self.arrived is not None:
            await self.arrived.send(got)


@asynccontextmanager
async def serving(queen: TinyQueen) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, queen.handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running(client: HttpQueenClient) -> AsyncIterator[HttpQueenClient]:
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        yield client
        nursery.cancel_scope.cancel()


WEB_PAGE = HiveReply(HiveOutcome.NOT_FOUND, "HTTP 200 with a web page")


@pytest.mark.parametrize(
    ("status", "content_type", "reply"),
    [
        (200, "application/json", HIVE_OK),
        (204, "", HIVE_OK),
        (404, "text/plain", HiveReply(HiveOutcome.NOT_FOUND, "HTTP 404")),
        (405, "", HiveReply(HiveOutcome.NOT_FOUND, "HTTP 405")),
        # rbee's queen: its web UI answers any unknown path, POSTs included.
        (200, "text/html", WEB_PAGE),
        (200, "Text/HTML; charset=utf-8", WEB_PAGE),
        (503, "application/json", HiveReply(HiveOutcome.FAILED, "HTTP 503")),
        (422, "text/plain", HiveReply(HiveOutcome.FAILED, "HTTP 422")),
    ],
)
@pytest.mark.behavior("HIVE-033", "HIVE-034")
def test_what_a_queen_answer_means(status: int, content_type: str, reply: HiveReply) -> None:
    assert queen_reply(status, content_type) == reply


@pytest.mark.behavior("HIVE-030", "HIVE-033", "HIVE-034")
async def test_the_client_posts_json_and_reads_each_answer_over_a_real_socket() -> None:
    with trio.fail_after(CAP_S):
        queen = TinyQueen()
        async with serving(queen) as url, running(HttpQueenClient(url + "/")) as client:
            assert await client.heartbeat({"worker": {"id": "w"}}) == HIVE_OK
            queen.content_type = "text/html; charset=utf-8"
            assert (await client.heartbeat({})).outcome is HiveOutcome.NOT_FOUND
            queen.status = 500
            assert await client.heartbeat({}) == HiveReply(HiveOutcome.FAILED, "HTTP 500")
        first = queen.received[0]
        assert (first.method, first.path) == ("POST", QUEEN_HEARTBEAT_PATH)
        assert first.body == {"worker": {"id": "w"}}
        assert first.headers["content-type"] == "application/json"
        assert "authorization" not in first.headers
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with running(HttpQueenClient(closed)) as client:
            reply = await client.heartbeat({})
        assert reply.outcome is HiveOutcome.FAILED and reply.detail.startswith("cannot connect")
        assert (
            await HttpQueenClient(url).heartbeat({})
        ).detail == "the queen client is not running"


@pytest.mark.behavior("HIVE-034")
async def test_a_queen_that_hangs_up_without_answering_is_a_failed_reply() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.aclose()

    with trio.fail_after(CAP_S):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
            url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            async with running(HttpQueenClient(url)) as client:
                reply = await client.heartbeat({"worker": {}})
            assert reply.outcome is HiveOutcome.FAILED
            assert reply.detail.startswith("RemoteProtocolError")
            nursery.cancel_scope.cancel()


@pytest.mark.behavior("HIVE-030", "HIVE-031", "HIVE-032", "HIVE-035", "HTTP-060")
async def test_the_real_worker_heartbeats_a_queen_on_a_real_socket() -> None:
    """The whole worker (hypercorn on port 0, the fake engine on its engine thread) with
    --queen-url: the queen receives rbee's WorkerHeartbeat, starting then ready, with the
    port the worker actually listens on; GET /info says the same; SIGTERM is told."""
    with trio.fail_after(CAP_S):
        send, arrived = trio.open_memory_channel[Received](16)
        queen = TinyQueen(arrived=send)
        async with serving(queen) as url, trio.open_nursery() as nursery:
            settings = Settings(worker_id="worker-cpu-0", port=0, slots=1, queen_url=url)
            engine = FakeEngine(FakeScript(n_ctx=settings.ctx_tokens, n_slots=1))
            runtime = Runtime(runner=ThreadStepRunner(), handle_signals=False)
            services: Services = await nursery.start(_worker, settings, runtime, lambda: engine)
            beats = [await arrived.receive(), await arrived.receive()]
            assert [b.body["worker"]["status"] for b in beats] == ["starting", "ready"]
            port = int(services.binds[0].rsplit(":", 1)[1])
            for beat in beats:
                assert (beat.method, beat.path) == ("POST", QUEEN_HEARTBEAT_PATH)
                assert beat.headers["content-type"] == "application/json"
                assert_worker_heartbeat(beat.body)
                assert beat.body["worker"]["port"] == port
                assert beat.body["worker"]["id"] == "worker-cpu-0"
            async with httpx.AsyncClient() as http:
                info = (await http.get(f"http://127.0.0.1:{port}/info")).json()
            assert info == beats[1].body["worker"]
            services.lifecycle.signal(signal.SIGTERM)
            # Idle, the drain is over at once: `stopping` goes out only if the actor sees
            # the draining state before the stopped one.
            last = [(await arrived.receive()).body["worker"]["status"]]
            while last[-1] != "stopped":
                last.append((await arrived.receive()).body["worker"]["status"])
            assert last in (["stopped"], ["stopping", "stopped"])


async def _worker(
    settings: Settings,
    runtime: Runtime,
    factory: Any,
    *,
    task_status: trio.TaskStatus[Services],
) -> None:
    await run_worker(
        settings,
        model_id="fake-model",
        engine_factory=factory,
        runtime=runtime,
        task_status=task_status,
    )


# -- the actor in virtual time ---------------------------------------------------------------


class HangingQueen:
    url = "http://hanging-queen"

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def heartbeat(self, payload: dict[str, Any]) -> HiveReply:
        self.calls.append((trio.current_time(), payload["worker"]["status"]))
        await trio.sleep_forever()
        raise AssertionError  # never answers


class RaisingQueen(HangingQueen):
    async def heartbeat(self, payload: dict[str, Any]) -> HiveReply:
        self.calls.append((trio.current_time(), payload["worker"]["status"]))
        raise RuntimeError("a bug in the client")


@pytest.mark.behavior("HIVE-034")
async def test_a_client_that_raises_is_a_failure_on_the_same_cadence(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    queen = RaisingQueen()
    async with trio.open_nursery() as nursery:
        lifecycle = await nursery.start(LifecycleActor(drain_timeout=1, handle_signals=False).run)
        actor = QueenHeartbeatActor(
            client=queen,
            lifecycle=lifecycle,
            payload=lambda: {"worker": {"status": lifecycle.state.value}},
        )
        await nursery.start(actor.run)
        await trio.sleep(61)
        assert [t for t, _ in queen.calls] == [0.0, 30.0, 60.0]
        nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("queen_heartbeat")]
    assert warnings == [
        "queen http://hanging-queen/v1/worker-heartbeat is unreachable (RuntimeError: a bug in "
        "the client): serving goes on, the next heartbeat in 30 s"
    ]


class Abortable:
    """Work that lasts until the lifecycle aborts it."""

    def __init__(self) -> None:
        self.aborted = trio.Event()

    async def wait_empty(self) -> None:
        await self.aborted.wait()

    def abort_all(self, reason: StopReason) -> None:
        self.aborted.set()


@pytest.mark.behavior("HIVE-034", "HIVE-035")
async def test_a_hanging_queen_costs_5_s_per_heartbeat_and_2_s_at_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queen = HangingQueen()
    async with trio.open_nursery() as nursery:
        lifecycle = await nursery.start(LifecycleActor(drain_timeout=1, handle_signals=False).run)
        actor = QueenHeartbeatActor(
            client=queen,
            lifecycle=lifecycle,
            payload=lambda: {"worker": {"status": lifecycle.state.value}},
        )
        await nursery.start(actor.run)
        await lifecycle.ready(Abortable())  # during the first call: told once it ends
        await trio.sleep(61)
        # Draining is told at once; stopped (the drain timeout, 1 s) once that call gave up.
        lifecycle.request(Drain("test"))
        await actor.wait_done()
        assert [t for t, _ in queen.calls] == [0.0, 5.0, 35.0, 61.0, 66.0]
        assert [s for _, s in queen.calls] == ["starting", "ready", "ready", "draining", "stopped"]
        assert trio.current_time() == 68.0  # the last one: shielded, 2 s
        nursery.cancel_scope.cancel()
