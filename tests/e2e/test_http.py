"""Raw HTTP against the real worker: the rbee stream, bad input, disconnects."""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytestmark = pytest.mark.real_model


def sse_events(lines: list[str]) -> list[tuple[str | None, str]]:
    """(event name, data) pairs from SSE lines."""
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, line.removeprefix("data: ")))
            name = None
    return events


@pytest.mark.behavior("HTTP-011", "SSE-001", "SSE-002")
def test_rbee_inference_stream(http: httpx.Client) -> None:
    body = {
        "prompt": "Once upon a time",
        "max_tokens": 6,
        "ignore_eos": True,
        "job_id": "job-e2e-1",
    }
    with http.stream(
        "POST", "/v1/inference", json=body, headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-request-id"] == "job-e2e-1"
        events = sse_events(list(response.iter_lines()))
    names = [name for name, _ in events]
    assert names[0] == "started" and names[-2:] == ["end", None]
    assert set(names[1:-2]) == {"token"}
    assert json.loads(events[0][1])["job_id"] == "job-e2e-1"
    end = json.loads(events[-2][1])
    assert end["stop_reason"] == "max_tokens" and end["tokens_out"] == 6
    assert end["tokens_in"] > 0 and end["decode_ms"] > 0
    assert events[-1][1] == "[DONE]"


@pytest.mark.parametrize(
    ("path", "content", "param", "code"),
    [
        ("/v1/completions", b"{not json", None, "invalid_json"),
        ("/v1/completions", b"[1, 2]", None, "invalid_json"),
        ("/v1/completions", b'{"prompt": 42}', "prompt", "invalid_value"),
        ("/v1/completions", b'{"max_tokens": 3}', "prompt", "missing_required_parameter"),
        ("/v1/chat/completions", b'{"messages": []}', "messages", "invalid_value"),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "robot", "content": "x"}]}',
            "messages.0.role",
            "invalid_value",
        ),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "functions": [{}]}',
            "functions",
            "unsupported_parameter",
        ),
        ("/v1/inference", b'{"prompt": "x", "max_tokens": "many"}', "max_tokens", "invalid_value"),
        ("/v1/inference", b"\xff\xfe", None, "invalid_json"),
    ],
)
@pytest.mark.behavior("HTTP-018", "HTTP-021", "ERR-002", "OAI-003")
def test_bad_input_is_400_in_the_error_shape(
    http: httpx.Client, path: str, content: bytes, param: str | None, code: str
) -> None:
    response = http.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert "Traceback" not in response.text


@pytest.mark.behavior("HTTP-019", "ERR-006")
def test_unknown_route_and_wrong_method_use_the_error_shape(http: httpx.Client) -> None:
    missing = http.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = http.get("/v1/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.behavior("INF-005")
def test_prompt_longer_than_the_context_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/completions", json={"prompt": "word " * 3000, "max_tokens": 1})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    assert "2048" in error["message"]  # the pool every request may fill


def wait_for_idle(http: httpx.Client, limit: float = 30.0) -> None:
    """Returns once /v1/slots shows every slot free; fails past `limit` (a guard against a
    hang, not a measure: how fast a slot comes free is pinned in virtual time, in
    tests/test_actors.py and scenarios/disconnect_*.toml).

    Each poll is a full HTTP round trip to the worker, which paces the loop; no sleeping.
    """
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if not any(slot["busy"] for slot in http.get("/v1/slots").json()["slots"]):
            return
    raise AssertionError(f"slots still busy after {limit} s: {http.get('/v1/slots').json()}")


def counters(http: httpx.Client) -> dict[str, float]:
    """Finished requests by stop reason, and `generated`: every token generated so far."""
    found: dict[str, float] = {}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("llm_worker:request_success_total{"):
            reason = line.split('finished_reason="', 1)[1].split('"', 1)[0]
            found[reason] = float(line.split()[-1])
        elif line.startswith("llm_worker:generation_tokens_total "):
            found["generated"] = float(line.split()[-1])
    return found


def stopped_early(before: dict[str, float], after: dict[str, float], reason: str) -> None:
    """One more request ended for `reason`, long before its 900 tokens."""
    assert after.get(reason, 0) == before.get(reason, 0) + 1, (before, after)
    assert after["generated"] - before.get("generated", 0) < 900, (before, after)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.behavior("SSE-009")
def test_client_that_disconnects_frees_its_slot(worker_url: str, stream: bool) -> None:
    body = {"prompt": "Count: 1, 2, 3,", "max_tokens": 900, "ignore_eos": True, "stream": stream}
    with httpx.Client(base_url=worker_url, timeout=60) as http:
        before = counters(http)
        if stream:
            with http.stream("POST", "/v1/completions", json=body) as response:
                lines = response.iter_lines()
                for _ in range(6):
                    next(lines)
                assert any(slot["busy"] for slot in http.get("/v1/slots").json()["slots"])
        else:
            with pytest.raises(httpx.ReadTimeout):
                http.post("/v1/completions", json=body, timeout=0.5)
        wait_for_idle(http)
        stopped_early(before, counters(http), "cancelled")
        # The next request is served at once, not queued behind a ghost.
        body = {"prompt": "Hi", "max_tokens": 2, "stream": True}
        with http.stream("POST", "/v1/inference", json=body) as nxt:
            started = json.loads(
                next(line for line in nxt.iter_lines() if line.startswith("data: "))[6:]
            )
            assert started["queue_position"] is None


@pytest.mark.behavior("ERR-008")
def test_non_streaming_request_that_times_out_leaves_the_worker_idle(worker_url: str) -> None:
    body = {"prompt": "Count: 1, 2, 3,", "max_tokens": 900, "ignore_eos": True, "timeout": 0.5}
    with httpx.Client(base_url=worker_url, timeout=60) as http:
        before = counters(http)
        response = http.post("/v1/completions", json=body)
        assert response.status_code == 408
        assert response.json()["error"]["code"] == "request_timeout"
        wait_for_idle(http)
        stopped_early(before, counters(http), "timeout")


@pytest.mark.behavior("HTTP-012")
def test_cancel_by_job_id_ends_the_stream_and_leaves_the_worker_idle(worker_url: str) -> None:
    body = {"prompt": "Count: 1, 2, 3,", "max_tokens": 900, "ignore_eos": True, "job_id": "e2e-x"}
    with httpx.Client(base_url=worker_url, timeout=60) as http:
        with http.stream(
            "POST", "/v1/inference", json=body, headers={"Accept": "text/event-stream"}
        ) as response:
            lines = response.iter_lines()
            seen = [next(lines) for _ in range(8)]
            assert http.delete("/v1/inference/e2e-x").status_code == 204
            rest = list(lines)
        events = sse_events(seen + rest)
        end = json.loads(next(data for name, data in events if name == "end"))
        assert end["stop_reason"] == "cancelled" and end["tokens_out"] < 900
        assert events[-1][1] == "[DONE]"
        wait_for_idle(http)
        assert http.delete("/v1/inference/e2e-x").status_code == 204  # idempotent
        assert http.delete("/v1/inference/never-was").status_code == 404


@pytest.mark.behavior("HTTP-023")
def test_job_id_header_on_openai_stream(http: httpx.Client) -> None:
    headers = {"X-Request-Id": "e2e-openai-1"}
    body = {"prompt": "Hi", "max_tokens": 2, "stream": True}
    with http.stream("POST", "/v1/completions", json=body, headers=headers) as response:
        assert response.headers["x-request-id"] == "e2e-openai-1"
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
