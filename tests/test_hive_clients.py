"""The HTTP and WebSocket hive clients against the stub hive, over real loopback sockets
(port 0). No sleeps: every wait is on an event, under an absolute `fail_after` cap."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import trio
import trio.testing

from llm_worker_rbee.config import SettingsError, settings_from
from llm_worker_rbee.hive.client import HiveClient
from llm_worker_rbee.hive.connect import hive_client_for
from llm_worker_rbee.hive.http_client import HttpHiveClient
from llm_worker_rbee.hive.ws_client import WebSocketHiveClient
from llm_worker_rbee.hive_stub.server import HiveEvent, HiveStub, running_stub, serve_stub
from llm_worker_rbee.messages.hive import CommandAck, HiveCommand, HiveOutcome, HiveReply

CAP_S = 20
OK = HiveReply(HiveOutcome.OK)


@dataclass
class Listener:
    commands: list[HiveCommand] = field(default_factory=list)
    lost: trio.Event = field(default_factory=trio.Event)

    async def on_command(self, command: HiveCommand) -> CommandAck:
        self.commands.append(command)
        return CommandAck(command.id, command.command, True, f"did {command.command}")

    def on_connection_lost(self) -> None:
        self.lost.set()


@asynccontextmanager
async def running(client: HiveClient, listener: Listener) -> AsyncIterator[HiveClient]:
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run, listener)
        yield client
        nursery.cancel_scope.cancel()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def seen(stub: HiveStub, *kinds: str) -> list[tuple[str, str, int | None]]:
    return [(e.transport, e.kind, e.status) for e in stub.events if e.kind in kinds]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://h:1", HttpHiveClient),
        ("https://h", HttpHiveClient),
        ("wss://h", WebSocketHiveClient),
    ],
)
@pytest.mark.behavior("HIVE-001")
def test_the_url_scheme_picks_the_transport(url: str, kind: type) -> None:
    assert isinstance(hive_client_for(settings_from({"hive_url": url}, environ={})), kind)


def test_no_hive_url_means_no_hive_client() -> None:
    assert hive_client_for(settings_from({}, environ={})) is None


@pytest.mark.parametrize("url", ["ftp://hive", "hive:7000", "http://"])
@pytest.mark.behavior("HIVE-001", "CFG-008")
def test_a_hive_url_no_client_can_use_is_refused_at_start(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^--hive-url: "):
        settings_from({"hive_url": url}, environ={})


@pytest.mark.behavior("CFG-015")
def test_secrets_come_from_the_environment_and_stay_out_of_repr() -> None:
    settings = settings_from(
        {}, environ={"LLORCH_API_TOKEN": "rbee-key", "LLM_WORKER_HIVE_TOKEN": "hive-key"}
    )
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "rbee-key"
    assert settings.hive_token is not None
    assert "rbee-key" not in repr(settings) and "hive-key" not in repr(settings)
    both = settings_from({}, environ={"LLORCH_API_TOKEN": "b", "LLM_WORKER_API_KEY": "a"})
    assert both.api_key is not None and both.api_key.get_secret_value() == "a"


@pytest.mark.behavior("HIVE-003")
async def test_http_client_registers_beats_and_says_goodbye_with_the_token() -> None:
    with trio.fail_after(CAP_S):
        stub = HiveStub(token="t")
        async with (
            running_stub(stub) as url,
            running(HttpHiveClient(url, token="t"), Listener()) as hive,
        ):
            assert await hive.heartbeat({"worker_id": "w"}) == HiveReply(
                HiveOutcome.NOT_FOUND, "HTTP 404"
            )
            assert await hive.ready({"worker_id": "w", "slots_total": 1}) == OK
            assert await hive.heartbeat({"worker_id": "w", "state": "ready"}) == OK
            assert await hive.gone({"worker_id": "w", "reason": "test"}) == OK
        assert seen(stub, "ready", "heartbeat", "gone") == [
            ("http", "heartbeat", 404),
            ("http", "ready", 200),
            ("http", "heartbeat", 200),
            ("http", "gone", 200),
        ]
        assert all(e.authorized for e in stub.events)
        assert stub.events[1].body == {"worker_id": "w", "slots_total": 1}


@pytest.mark.behavior("HIVE-019")
async def test_http_client_failures_are_replies_not_exceptions() -> None:
    with trio.fail_after(CAP_S):
        stub = HiveStub(token="t")
        async with running_stub(stub) as url:
            async with running(HttpHiveClient(url, token="wrong"), Listener()) as hive:
                assert await hive.ready({"worker_id": "w"}) == HiveReply(
                    HiveOutcome.FAILED, "HTTP 401"
                )
            stub.fail_with = 503
            async with running(HttpHiveClient(url, token="t"), Listener()) as hive:
                assert await hive.ready({"worker_id": "w"}) == HiveReply(
                    HiveOutcome.FAILED, "HTTP 503"
                )
        assert [e.authorized for e in stub.events] == [False, True]
        closed = f"http://127.0.0.1:{free_port()}"
        async with running(HttpHiveClient(closed), Listener()) as hive:
            reply = await hive.heartbeat({"worker_id": "w"})
        assert reply.outcome is HiveOutcome.FAILED
        assert reply.detail.startswith("cannot connect")


@pytest.mark.behavior("HIVE-015")
async def test_ws_client_carries_payloads_up_and_acks_commands_back() -> None:
    with trio.fail_after(CAP_S):
        stub = HiveStub(token="t")
        listener = Listener()
        async with running_stub(stub) as url:
            ws_url = url.replace("http://", "ws://")
            async with running(WebSocketHiveClient(ws_url, token="t"), listener) as hive:
                assert (await hive.heartbeat({"worker_id": "w"})).outcome is HiveOutcome.NOT_FOUND
                assert await hive.ready({"worker_id": "w"}) == OK
                assert await hive.heartbeat({"worker_id": "w", "state": "ready"}) == OK
                ack = await stub.command("w", "cancel", "job-7")
                assert ack == {
                    "type": "ack",
                    "id": ack["id"],
                    "command": "cancel",
                    "ok": True,
                    "detail": "did cancel",
                }
                assert listener.commands == [HiveCommand(ack["id"], "cancel", "job-7")]
                assert await hive.gone({"worker_id": "w", "reason": "test"}) == OK
                await stub.wait_for(lambda events: events[-1].kind == "disconnected")
        assert seen(stub, "ready", "heartbeat", "gone") == [
            ("ws", "heartbeat", 404),
            ("ws", "ready", 200),
            ("ws", "heartbeat", 200),
            ("ws", "gone", 200),
        ]
        kinds = [e.kind for e in stub.events]
        assert kinds[0] == "connected" and kinds.count("connected") == 1  # one connection
        assert not listener.lost.is_set()  # goodbye closes on purpose: no news


async def start_stub(
    nursery: trio.Nursery, stub: HiveStub, port: int = 0
) -> tuple[str, Callable[[], Awaitable[None]]]:
    """Serves the stub in `nursery`; returns its URL and a stop that waits until it is gone."""
    stop, done = trio.Event(), trio.Event()

    async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve_stub(
                stub,
                host="127.0.0.1",
                port=port,
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        finally:
            done.set()

    binds = await nursery.start(serve)

    async def stopped() -> None:
        stop.set()
        await done.wait()

    return binds[0], stopped


@pytest.mark.behavior("HIVE-018")
async def test_ws_client_hears_a_dropped_channel_and_reconnects_on_the_next_call() -> None:
    with trio.fail_after(CAP_S):
        listener = Listener()
        async with trio.open_nursery() as nursery:
            url, stop_first = await start_stub(nursery, HiveStub())
            client = WebSocketHiveClient(url.replace("http://", "ws://"))
            await nursery.start(client.run, listener)
            assert await client.ready({"worker_id": "w"}) == OK
            await stop_first()  # the hive goes away: its channels close first
            await listener.lost.wait()
            down = await client.heartbeat({"worker_id": "w"})
            assert down.outcome is HiveOutcome.FAILED and down.detail.startswith("cannot connect")
            second = HiveStub()
            _, stop_second = await start_stub(nursery, second, int(url.rsplit(":", 1)[1]))
            # a new connection, to a hive that has forgotten the worker
            forgotten = await client.heartbeat({"worker_id": "w"})
            assert forgotten == HiveReply(HiveOutcome.NOT_FOUND, "HTTP 404")
            assert await client.ready({"worker_id": "w"}) == OK
            assert [e.kind for e in second.events] == ["connected", "heartbeat", "ready"]
            await stop_second()
            nursery.cancel_scope.cancel()


@pytest.fixture
def idle_autojump() -> trio.testing.MockClock:
    """Virtual time that jumps only after 50 ms of real idleness, so loopback I/O in flight
    is not mistaken for a hang, and a 5 s timeout costs no real 5 s."""
    return trio.testing.MockClock(autojump_threshold=0.05)


@pytest.mark.behavior("HIVE-018")
async def test_ws_client_drops_a_connection_the_hive_stopped_answering_on(
    idle_autojump: trio.testing.MockClock,
) -> None:
    stub = HiveStub()
    async with running_stub(stub) as url:
        client = WebSocketHiveClient(url.replace("http://", "ws://"))
        async with running(client, Listener()) as hive:
            assert await hive.ready({"worker_id": "w"}) == OK
            stub.silent = True
            with trio.move_on_after(5) as waited:  # the HeartbeatActor's call timeout
                await hive.heartbeat({"worker_id": "w"})
            assert waited.cancelled_caught
            stub.silent = False
            assert await hive.heartbeat({"worker_id": "w"}) == OK
    assert [e.kind for e in stub.events].count("connected") == 2


@pytest.mark.behavior("HIVE-003")
async def test_ws_client_with_a_bad_token_is_refused_at_the_handshake() -> None:
    with trio.fail_after(CAP_S):
        stub = HiveStub(token="t")
        async with running_stub(stub) as url:
            client = WebSocketHiveClient(url.replace("http://", "ws://"), token="nope")
            async with running(client, Listener()) as hive:
                reply = await hive.ready({"worker_id": "w"})
        assert reply.outcome is HiveOutcome.FAILED
        assert "401" in reply.detail
        assert seen(stub, "ready") == []


@pytest.mark.behavior("HIVE-017")
async def test_ws_client_acks_a_malformed_command_with_the_reason() -> None:
    with trio.fail_after(CAP_S):
        stub = HiveStub()
        listener = Listener()
        async with running_stub(stub) as url:
            client = WebSocketHiveClient(url.replace("http://", "ws://"))
            async with running(client, listener) as hive:
                assert await hive.ready({"worker_id": "w"}) == OK
                ack = await stub.command("w", "cancel")  # no job_id
                assert (ack["ok"], ack["detail"]) == (False, "'cancel' needs a string 'job_id'")
                assert listener.commands == []


@pytest.mark.behavior("HIVE-021")
async def test_stub_http_api_lists_events_and_workers_and_sends_commands() -> None:
    with trio.fail_after(CAP_S):
        stub = HiveStub()
        async with running_stub(stub) as url, httpx.AsyncClient(base_url=url) as http:
            client = WebSocketHiveClient(url.replace("http://", "ws://"))
            async with running(client, Listener()) as hive:
                assert await hive.ready({"worker_id": "w", "slots_total": 2}) == OK
                workers = (await http.get("/v1/hive/workers")).json()["workers"]
                assert workers["w"]["channel"] is True
                assert workers["w"]["ready"] == {"worker_id": "w", "slots_total": 2}
                sent = await http.post("/v1/hive/workers/w/commands", json={"command": "ping"})
                assert sent.status_code == 200 and sent.json()["ack"]["detail"] == "did ping"
                bad = await http.post("/v1/hive/workers/w/commands", json={"command": "reboot"})
                assert bad.status_code == 400 and bad.json()["error"]["param"] == "command"
                nobody = await http.post("/v1/hive/workers/x/commands", json={"command": "ping"})
                assert nobody.status_code == 404
                assert nobody.json()["error"]["code"] == "no_channel"
            events = (await http.get("/v1/hive/events", params={"since": 1})).json()["events"]
            assert [e["kind"] for e in events][:2] == ["ready", "ack"]
            assert all(e["seq"] > 1 for e in events)
            forgotten = await http.post("/v1/workers/heartbeat", json={"worker_id": "z"})
            assert forgotten.status_code == 404
            assert set(forgotten.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.behavior("HIVE-020")
def test_hive_events_are_plain_json() -> None:
    event = HiveEvent(1, 2.0, "http", "ready", "w", 200, True, {"worker_id": "w"})
    assert event.to_json()["body"] == {"worker_id": "w"}
