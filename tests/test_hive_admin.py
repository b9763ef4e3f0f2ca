"""POST /v1/admin/shutdown and GET /heartbeat on the whole worker, in-process on the fake
engine, in virtual time."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.http.system.admin import presented_key
from llm_worker_rbee.messages.lifecycle import WorkerState
from llm_worker_rbee.testing.inprocess import inprocess_worker

KEY = "s3cret-key"
ERROR_KEYS = {"message", "type", "param", "code"}


def with_key() -> Settings:
    return Settings(worker_id="admin-test", api_key=KEY)


@pytest.mark.behavior("HTTP-016", "ERR-005")
async def test_without_a_configured_key_the_route_is_refused_and_says_why(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker() as worker:
        response = await worker.request(
            "POST", "/v1/admin/shutdown", headers={"Authorization": "Bearer anything"}
        )
        assert response.status == 403
        error = response.json()["error"]
        assert set(error) == ERROR_KEYS
        assert error["code"] == "admin_disabled" and error["type"] == "permission_error"
        assert "LLM_WORKER_API_KEY" in error["message"]
        assert worker.services.lifecycle.state is WorkerState.READY


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer "}, "missing_api_key"),
        ({"Authorization": f"Basic {KEY}"}, "missing_api_key"),
        ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
        ({"X-Api-Key": "wrong"}, "invalid_api_key"),
        ({"Authorization": f"Bearer {KEY}x"}, "invalid_api_key"),
    ],
)
@pytest.mark.behavior("HTTP-017", "ERR-005")
async def test_a_missing_or_wrong_key_is_401_in_the_error_shape(
    autojump_clock: trio.testing.MockClock, headers: dict[str, str], code: str
) -> None:
    async with inprocess_worker(with_key()) as worker:
        response = await worker.request("POST", "/v1/admin/shutdown", headers=headers)
        assert response.status == 401
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        assert set(error) == ERROR_KEYS
        assert (error["type"], error["code"]) == ("authentication_error", code)
        assert KEY not in json.dumps(error)
        assert worker.services.lifecycle.state is WorkerState.READY


@pytest.mark.behavior("HTTP-015")
async def test_the_bearer_key_drains_the_worker(autojump_clock: trio.testing.MockClock) -> None:
    async with inprocess_worker(with_key()) as worker:
        response = await worker.request(
            "POST", "/v1/admin/shutdown", headers={"Authorization": f"Bearer {KEY}"}
        )
        assert response.status == 202
        assert response.json() == {"status": "draining", "state": "ready"}
        lifecycle = worker.services.lifecycle
        await lifecycle.wait_stopped()
        assert lifecycle.stop_reason == "admin shutdown"


@pytest.mark.behavior("HTTP-015")
async def test_the_x_api_key_stops_at_once_cancelling_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(reply=["x"] * 1000, step_latency=0.25)
    async with inprocess_worker(with_key(), script) as worker:
        lifecycle = worker.services.lifecycle
        async with trio.open_nursery() as nursery:
            body = {"prompt": "hi", "max_tokens": 1000, "stream": True}
            nursery.start_soon(worker.request, "POST", "/v1/inference", body)
            await trio.sleep(1)
            response = await worker.request(
                "POST",
                "/v1/admin/shutdown",
                {"mode": "now", "reason": "maintenance"},
                headers={"X-Api-Key": KEY},
            )
            assert response.status == 202 and response.json()["status"] == "stopping"
            await lifecycle.wait_stopped()
            assert trio.current_time() == 1.0  # no waiting for the running request
        assert lifecycle.stop_reason == "admin shutdown: maintenance"


@pytest.mark.parametrize(
    ("body", "param"), [(b'{"mode": "later"}', "mode"), (b'{"force": true}', "force"), (b"{", None)]
)
@pytest.mark.behavior("HTTP-015")
async def test_a_bad_body_is_400_and_changes_nothing(
    autojump_clock: trio.testing.MockClock, body: bytes, param: str | None
) -> None:
    async with inprocess_worker(with_key()) as worker:
        response = await worker.request(
            "POST", "/v1/admin/shutdown", body, headers={"X-Api-Key": KEY}
        )
        assert response.status == 400
        assert response.json()["error"]["param"] == param
        assert worker.services.lifecycle.state is WorkerState.READY


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "key"),
    [
        ("Bearer k", None, "k"),
        ("bearer  k ", None, "k"),
        (None, "k", "k"),
        ("Bearer k", "other", "k"),  # Authorization wins
        ("Token k", None, None),
        (None, "", None),
    ],
)
@pytest.mark.behavior("HTTP-017")
def test_the_key_a_caller_presents(
    authorization: str | None, x_api_key: str | None, key: str | None
) -> None:
    assert presented_key(authorization, x_api_key) == key


@pytest.mark.behavior("HTTP-004", "HIVE-002", "HIVE-007")
async def test_heartbeat_without_a_hive_says_none(autojump_clock: trio.testing.MockClock) -> None:
    async with inprocess_worker() as worker:
        await trio.sleep(3)
        response = await worker.request("GET", "/heartbeat")
        seen = response.json()
        assert (seen["hive"], seen["hive_last_success"]) == ("none", None)
        assert (seen["state"], seen["uptime_s"], seen["requests_total"]) == ("ready", 3.0, 0)
        assert seen["vram_used_bytes"] is None and seen["last_error"] is None
