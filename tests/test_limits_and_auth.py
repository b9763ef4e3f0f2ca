"""Limits and the API key, in-process on the fake engine."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from pydantic import SecretStr

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.http.body import json_depth
from llm_worker_rbee.testing.inprocess import inprocess_worker

KEY = "s3cret-key"


def keyed() -> Settings:
    return Settings(worker_id="auth", api_key=SecretStr(KEY))


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "missing_api_key"),
        ({"Authorization": "Bearer wrong"}, 401, "invalid_api_key"),
        ({"X-Api-Key": "wrong"}, 401, "invalid_api_key"),
        ({"Authorization": "Basic " + KEY}, 401, "missing_api_key"),
        ({"Authorization": f"Bearer {KEY}"}, 200, None),
        ({"X-Api-Key": KEY}, 200, None),
    ],
)
@pytest.mark.behavior("HTTP-017")
async def test_api_key_on_work_routes(
    autojump_clock: trio.testing.MockClock,
    headers: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    async with inprocess_worker(keyed()) as worker:
        for method, path, body in (
            ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1}),
            ("GET", "/v1/models", None),
            ("GET", "/v1/slots", None),
            ("POST", "/v1/tokenize", {"content": "x"}),
        ):
            response = await worker.request(method, path, body, headers)
            assert response.status == status, (path, response.body)
            if code is not None:
                assert response.json()["error"]["code"] == code
                assert response.json()["error"]["type"] == "authentication_error"
                assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.behavior("HTTP-017")
async def test_open_routes_need_no_key(autojump_clock: trio.testing.MockClock) -> None:
    async with inprocess_worker(keyed()) as worker:
        assert (await worker.request("GET", "/health")).status == 200
        assert (await worker.request("GET", "/metrics")).status == 200


@pytest.mark.behavior("HTTP-017")
async def test_no_key_configured_means_open(autojump_clock: trio.testing.MockClock) -> None:
    async with inprocess_worker() as worker:
        response = await worker.request("GET", "/v1/models")
        assert response.status == 200


@pytest.mark.behavior("RES-011", "CFG-013", "ERR-007")
async def test_body_too_large_is_413(autojump_clock: trio.testing.MockClock) -> None:
    settings = Settings(worker_id="limits", max_body_bytes=2048)
    async with inprocess_worker(settings) as worker:
        response = await worker.request("POST", "/v1/completions", {"prompt": "x" * 4000})
        assert response.status == 413
        assert response.json()["error"]["code"] == "request_too_large"
        ok = await worker.request("POST", "/v1/completions", {"prompt": "x" * 100})
        assert ok.status == 200


@pytest.mark.behavior("RES-011", "ERR-004")
async def test_deep_json_is_400_not_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    async with inprocess_worker() as worker:
        deep = b'{"prompt": "x", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        response = await worker.request("POST", "/v1/completions", deep)
        assert response.status == 400
        assert response.json()["error"]["code"] == "json_too_deep"


@pytest.mark.behavior("RES-011")
async def test_too_many_logit_bias_entries(autojump_clock: trio.testing.MockClock) -> None:
    async with inprocess_worker() as worker:
        bias = {str(i): 1 for i in range(1100)}
        body = {"prompt": "x", "logit_bias": bias}
        response = await worker.request("POST", "/v1/completions", body)
        assert response.status == 400 and response.json()["error"]["param"] == "logit_bias"


@pytest.mark.behavior("RES-011")
def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth(b'{"a": "[[[[{{{{", "b": [1, {"c": []}]}') == 4
    assert json_depth(b'"\\"[["') == 0


@pytest.mark.behavior("HTTP-027")
@pytest.mark.parametrize(
    ("method", "path", "key", "status"),
    [
        ("POST", "/health", None, 405),  # refused by routing
        ("POST", "/v1/nothing-here", "secret", 404),
        ("POST", "/v1/completions", "wrong", 401),  # refused by auth
        ("POST", "/v1/tokenize", "secret", 200),
    ],
)
async def test_every_answer_waits_for_the_whole_request_body(
    autojump_clock: trio.testing.MockClock, method: str, path: str, key: str | None, status: int
) -> None:
    """Hypercorn hangs a keep-alive connection whose response ends before its request body
    arrived; so no answer, refusals included, may start before the last body chunk is read."""
    chunks = [b'{"content": ', b'"hi"}']
    log: list[str] = []

    async def receive() -> dict[str, object]:
        if chunks:
            if len(chunks) == 1:  # the last chunk arrives late: once all else has settled
                await trio.testing.wait_all_tasks_blocked()
            log.append("body chunk read")
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            log.append(f"response {message['status']}")

    headers = [(b"content-type", b"application/json"), (b"content-length", b"17")]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }  # fmt: skip
    settings = Settings(worker_id="body", api_key=SecretStr("secret"))
    async with inprocess_worker(settings) as worker:
        await worker.app(scope, receive, send)
    assert log == ["body chunk read", "body chunk read", f"response {status}"]


@pytest.mark.behavior("RES-003")
async def test_a_full_worker_refuses_before_reading_the_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The 503 comes before validation (a bad body still gets 503) and is counted."""
    settings = Settings(worker_id="full", slots=1, max_queue=0)
    script = FakeScript(reply=["x"] * 50)
    async with inprocess_worker(settings, script) as worker, trio.open_nursery() as nursery:
        hold = {"prompt": "hold", "stream": True}
        nursery.start_soon(worker.request, "POST", "/v1/inference", hold)
        await trio.testing.wait_all_tasks_blocked()
        body = {"prompt": "x", "temperature": "hot"}
        refused = await worker.request("POST", "/v1/completions", body)
        assert refused.status == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "all_slots_busy"
        metrics = (await worker.request("GET", "/metrics")).body.decode()
        assert 'llm_worker:request_rejected_total{code="all_slots_busy"} 1.0' in metrics
        nursery.cancel_scope.cancel()
