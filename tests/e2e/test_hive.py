"""The real worker and the stub hive on loopback, over real HTTP and a real WebSocket.

Two worker starts in all (each costs seconds): one worker talks HTTP to its hive, one the
WebSocket control channel. Each goes through registration, heartbeats, a hive restart
(404, then a new registration) and a shutdown ordered by the hive side.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

from llm_worker_rbee.hive_stub.server import HiveEvent, HiveStub, running_stub
from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

TOKEN = "hive-secret"
API_KEY = "worker-secret"
AUTH = {"Authorization": f"Bearer {API_KEY}"}  # with a key set, every route but /health needs it
BASE_ARGS = ["--slots", "2", "--ctx-size", "1024", "--threads", "2", "--heartbeat-interval", "0.25"]
HEARTBEAT_FIELDS = {
    "worker_id",
    "timestamp",
    "state",
    "slots_total",
    "slots_busy",
    "queue_depth",
    "model_ref",
    "device",
    "device_uuid",
    "vram_used_bytes",
    "vram_total_bytes",
    "vram_process_bytes",
    "tokens_generated_total",
    "requests_total",
    "uptime_s",
    "last_error",
    "load_progress",
    "hive",
    "hive_last_success",
}


async def start_worker(worker_id: str, hive_url: str) -> WorkerProcess:
    args = [*BASE_ARGS, "--worker-id", worker_id, "--hive-url", hive_url]
    env = {"LLM_WORKER_HIVE_TOKEN": TOKEN, "LLM_WORKER_API_KEY": API_KEY}
    return await trio.to_thread.run_sync(WorkerProcess(args, env=env).start)


def kinds(events: list[HiveEvent], *wanted: str) -> list[HiveEvent]:
    return [e for e in events if e.kind in wanted]


def has(kind: str, n: int = 1, status: int | None = 200) -> Callable[[list[HiveEvent]], bool]:
    return lambda events: sum(e.kind == kind and e.status == status for e in events) >= n


def check_registration(stub: HiveStub, worker: WorkerProcess, worker_id: str) -> None:
    ready = kinds(stub.events, "ready")[0]
    assert ready.authorized and ready.status == 200
    assert ready.body == {
        "worker_id": worker_id,
        "url": worker.url,
        "model_ref": "gemma-3-270m-q4_k_m",
        "backend": "cpu",
        "device": 0,
        "device_uuid": None,
        "slots_total": 2,
        "ctx_size": 1024,
        "version": "0.1.0",
    }
    beats = kinds(stub.events, "heartbeat")
    assert all(b.authorized and b.status == 200 for b in beats)
    first = beats[0].body
    assert set(first) == HEARTBEAT_FIELDS
    assert first["worker_id"] == worker_id and first["state"] == "ready"
    assert (first["slots_total"], first["slots_busy"], first["queue_depth"]) == (2, 0, 0)
    assert first["vram_used_bytes"] is None and first["vram_total_bytes"] is None  # CPU
    assert first["hive"] == "reachable" and first["last_error"] is None
    assert [b.body["uptime_s"] for b in beats] == sorted(b.body["uptime_s"] for b in beats)


@pytest.mark.behavior("HIVE-019")
async def test_http_hive_registration_heartbeats_restart_and_admin_shutdown() -> None:
    with trio.fail_after(120):
        first = HiveStub(token=TOKEN)
        async with running_stub(first) as hive_url:
            port = int(hive_url.rsplit(":", 1)[1])
            worker = await start_worker("e2e-http", hive_url)
            try:
                await first.wait_for(has("heartbeat", 3))
                check_registration(first, worker, "e2e-http")
                async with httpx.AsyncClient(base_url=worker.url, headers=AUTH, timeout=30) as http:
                    pulled = (await http.get("/heartbeat")).json()
                    assert set(pulled) == HEARTBEAT_FIELDS and pulled["worker_id"] == "e2e-http"
                    # The hive fails (503): the worker keeps serving and says so on
                    # /heartbeat (a second failure is only sent once the first was noted).
                    first.fail_with = 503
                    await first.wait_for(has("heartbeat", 2, status=503))
                    assert (await http.get("/health")).status_code == 200
                    pulled = (await http.get("/heartbeat")).json()
                    assert pulled["hive"] == "unreachable"
                    assert pulled["hive_last_success"] <= pulled["timestamp"]
            except BaseException:
                worker.stop()
                raise
        try:
            async with httpx.AsyncClient(base_url=worker.url, headers=AUTH, timeout=30) as http:
                # The hive restarts on the same port and has forgotten the worker.
                second = HiveStub(token=TOKEN)
                async with running_stub(second, port):
                    await second.wait_for(has("ready"))
                    assert kinds(second.events, "heartbeat", "ready")[0].status == 404
                    await second.wait_for(has("heartbeat", 1))
                    # The admin route: the worker's key, nothing else.
                    async with httpx.AsyncClient(base_url=worker.url, timeout=30) as stranger:
                        anonymous = await stranger.post("/v1/admin/shutdown")
                        assert anonymous.status_code == 401
                        assert anonymous.json()["error"]["code"] == "missing_api_key"
                        wrong = await stranger.post(
                            "/v1/admin/shutdown", headers={"X-Api-Key": "not-the-key"}
                        )
                        assert wrong.status_code == 401
                        assert wrong.json()["error"]["code"] == "invalid_api_key"
                    accepted = await http.post("/v1/admin/shutdown", json={"reason": "e2e"})
                    assert accepted.status_code == 202
                    assert accepted.json() == {"status": "draining", "state": "ready"}
                    await http.aclose()  # an idle keep-alive connection would hold up the exit
                    code = await trio.to_thread.run_sync(worker.wait, 20)
                    gone = kinds(second.events, "gone")
                assert code == 0, worker.log()
                assert [g.body["reason"] for g in gone] == ["admin shutdown: e2e"]
                assert "Traceback" not in worker.log()
                # one line per transition: unreachable once, registered twice
                assert worker.log().count("is unreachable") == 1
                assert worker.log().count("registered with hive") == 2
        finally:
            worker.stop()


async def stream_events(
    http: httpx.AsyncClient, body: dict[str, Any], started: trio.Event, out: list[dict[str, Any]]
) -> None:
    """Reads a /v1/inference stream into `out`; `started` is set at the first token."""
    async with http.stream(
        "POST", "/v1/inference", json=body, headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and line != "data: [DONE]":
                out.append({"event": name, **json.loads(line.removeprefix("data: "))})
                if name == "token":
                    started.set()


@pytest.mark.behavior("HIVE-016")
async def test_websocket_hive_commands_restart_and_drain() -> None:
    with trio.fail_after(120):
        first = HiveStub(token=TOKEN)
        async with running_stub(first) as http_url:
            port = int(http_url.rsplit(":", 1)[1])
            hive_url = http_url.replace("http://", "ws://")
            worker = await start_worker("e2e-ws", hive_url)
            try:
                await first.wait_for(has("heartbeat", 2))
                check_registration(first, worker, "e2e-ws")
                assert {e.transport for e in kinds(first.events, "ready", "heartbeat")} == {"ws"}
                assert (await first.command("e2e-ws", "ping"))["detail"] == "pong"
                # A cancel command ends a running request with a final cancelled event.
                async with httpx.AsyncClient(base_url=worker.url, headers=AUTH, timeout=30) as http:
                    body = {
                        "prompt": "Count to a thousand:",
                        "max_tokens": 1500,
                        "ignore_eos": True,
                        "job_id": "e2e-victim",
                    }
                    events: list[dict[str, Any]] = []
                    started = trio.Event()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(stream_events, http, body, started, events)
                        await started.wait()
                        ack = await first.command("e2e-ws", "cancel", "e2e-victim")
                    assert ack == {
                        "type": "ack",
                        "id": ack["id"],
                        "command": "cancel",
                        "ok": True,
                        "detail": "cancelled",
                    }
                    end = events[-1]
                    assert end["event"] == "end" and end["stop_reason"] == "cancelled"
                    assert end["tokens_out"] < 1500
            except BaseException:
                worker.stop()
                raise
        # The hive goes away (closing the channel) and comes back having forgotten us.
        try:
            second = HiveStub(token=TOKEN)
            async with running_stub(second, port):
                await second.wait_for(has("ready"))
                assert kinds(second.events, "heartbeat", "ready")[0].status == 404
                # Drain with a request in flight: the hive hears `draining` at once, the
                # request finishes, then goodbye and a clean exit.
                async with httpx.AsyncClient(base_url=worker.url, headers=AUTH, timeout=30) as http:
                    body = {"prompt": "Once upon a time", "max_tokens": 16, "ignore_eos": True}
                    events = []
                    started = trio.Event()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(stream_events, http, body, started, events)
                        await started.wait()
                        ack = await second.command("e2e-ws", "drain")
                        assert (ack["ok"], ack["detail"]) == (True, "draining")
                        await second.wait_for(
                            lambda ev: any(e.body.get("state") == "draining" for e in ev)
                        )
                code = await trio.to_thread.run_sync(worker.wait, 20)
                assert events[-1]["stop_reason"] == "max_tokens"
                assert events[-1]["tokens_out"] == 16
                gone = kinds(second.events, "gone")
                assert [g.body["reason"] for g in gone] == ["hive: drain"]
                draining = next(e for e in second.events if e.body.get("state") == "draining")
                assert draining.seq < gone[0].seq
            assert code == 0, worker.log()
            assert "Traceback" not in worker.log()
            assert worker.log().count("registered with hive") == 2
        finally:
            worker.stop()
