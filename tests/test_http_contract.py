"""The HTTP contract, in-process on the fake engine (virtual time): validation of every
parameter, the error shape, tokenize/detokenize, and /openapi.json covering every route."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio
import trio.testing

from llm_worker_rbee.http.openapi import OPERATIONS
from llm_worker_rbee.testing.inprocess import inprocess_worker

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
COMPLETION = {"prompt": "hi", "max_tokens": 4}
INFERENCE = {"prompt": "hi", "max_tokens": 4}

# param -> (a wrong type, an out-of-range value or None where the type has no range)
SHARED: dict[str, tuple[Any, Any]] = {
    "max_tokens": ("many", 0),
    "temperature": ("hot", 2.5),
    "top_p": ("x", 1.5),
    "top_k": ("x", -1),
    "min_p": ("x", 1.5),
    "repeat_penalty": ("x", 0),
    "presence_penalty": ("x", 2.5),
    "frequency_penalty": ("x", -2.5),
    "seed": ("x", None),
    "stop": (5, ["a", "b", "c", "d", "e"]),
    "n": ("x", 0),
    "logit_bias": ("x", {"5": 101}),
    "ignore_eos": ("x", None),
    "user": (5, None),
    "timeout": ("x", 0),
    "model": (5, None),
    "min_tokens": ("x", -1),
    "response_format": ("json", {"type": "xml"}),
}
OPENAI_ONLY: dict[str, tuple[Any, Any]] = {
    "stream": ("yes", None),
    "stream_options": ("x", None),
}
CHAT_ONLY: dict[str, tuple[Any, Any]] = {
    "max_completion_tokens": ("x", 0),
    "logprobs": (1, None),
    "top_logprobs": ("x", 21),
}
COMPLETION_ONLY: dict[str, tuple[Any, Any]] = {"logprobs": (True, 6)}
TABLES: dict[str, dict[str, tuple[Any, Any]]] = {
    "/v1/chat/completions": {**SHARED, **OPENAI_ONLY, **CHAT_ONLY},
    "/v1/completions": {**SHARED, **OPENAI_ONLY, **COMPLETION_ONLY},
    "/v1/inference": SHARED,
}
CASES = [
    (path, base, param, kind, value)
    for path, base, table in (
        ("/v1/chat/completions", CHAT, TABLES["/v1/chat/completions"]),
        ("/v1/completions", COMPLETION, TABLES["/v1/completions"]),
        ("/v1/inference", INFERENCE, SHARED),
    )
    for param, (wrong, out_of_range) in table.items()
    for kind, value in (("wrong type", wrong), ("out of range", out_of_range))
    if not (kind == "out of range" and out_of_range is None)
]


@pytest.mark.parametrize(
    ("path", "base", "param", "kind", "value"),
    CASES,
    ids=[f"{c[0].removeprefix('/v1/')}-{c[2]}-{c[3]}" for c in CASES],
)
@pytest.mark.behavior("HTTP-018", "HTTP-021", "RES-011", "ERR-001", "OAI-001", "OAI-002")
async def test_bad_value_is_400_naming_the_param(
    autojump_clock: trio.testing.MockClock,
    path: str,
    base: dict[str, Any],
    param: str,
    kind: str,
    value: Any,
) -> None:
    async with inprocess_worker() as worker:
        response = await worker.request("POST", path, {**base, param: value})
        assert response.status == 400, response.body
        error = response.json()["error"]
        # the param, or a path inside it (logit_bias.5, messages.0.role)
        assert error["param"].split(".")[0] == param
        assert error["type"] == "invalid_request_error"
        assert set(error) == {"message", "type", "param", "code"}
        stats = worker.services.scheduler.statistics() if worker.services.scheduler else None
        assert stats is not None and stats.slots_busy == 0


@pytest.mark.parametrize(
    ("path", "base"),
    [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION), ("/v1/inference", INFERENCE)],
)
@pytest.mark.behavior("HTTP-022", "OAI-001", "OAI-004")
async def test_null_means_the_default_for_every_optional_param(
    autojump_clock: trio.testing.MockClock, path: str, base: dict[str, Any]
) -> None:
    """OpenAI accepts explicit nulls for optional parameters, and so do clients that send them."""
    nulls = dict.fromkeys(TABLES[path], None)
    async with inprocess_worker() as worker:
        response = await worker.request("POST", path, {**base, **nulls, "max_tokens": 4})
        assert response.status == 200, response.body


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": None}, "messages"),
        ("/v1/chat/completions", {"messages": "hi"}, "messages"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "messages.0.content"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "bot", "content": "x"}]},
            "messages.0.role",
        ),
        ("/v1/completions", {"prompt": None}, "prompt"),
        ("/v1/completions", {"prompt": 5}, "prompt"),
        ("/v1/completions", {}, "prompt"),
        ("/v1/inference", {"prompt": ["a"]}, "prompt"),
        ("/v1/inference", {"prompt": "x", "job_id": ""}, "job_id"),
        ("/v1/tokenize", {"content": 5}, "content"),
        ("/v1/detokenize", {"tokens": ["a"]}, "tokens.0"),
        ("/v1/detokenize", {"tokens": [10**9]}, "tokens"),
    ],
)
@pytest.mark.behavior("HTTP-014", "HTTP-021", "HTTP-024", "INF-003", "ERR-002")
async def test_required_fields(
    autojump_clock: trio.testing.MockClock, path: str, body: dict[str, Any], param: str
) -> None:
    async with inprocess_worker() as worker:
        response = await worker.request("POST", path, body)
        assert response.status == 400, response.body
        assert response.json()["error"]["param"] == param


@pytest.mark.behavior("ERR-003", "OAI-003", "OAI-004")
async def test_refused_openai_params_name_themselves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker() as worker:
        for param, value in (("tools", [{"type": "function"}]), ("suffix", "x"), ("best_of", 2)):
            response = await worker.request("POST", "/v1/completions", {**COMPLETION, param: value})
            assert response.status == 400
            assert response.json()["error"] == {
                "message": response.json()["error"]["message"],
                "type": "invalid_request_error",
                "param": param,
                "code": "unsupported_parameter",
            }
        # fields that are not OpenAI's are ignored
        response = await worker.request("POST", "/v1/completions", {**COMPLETION, "x_custom": 1})
        assert response.status == 200


@pytest.mark.behavior("HTTP-013", "HTTP-014")
async def test_tokenize_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    async with inprocess_worker() as worker:
        tokens = await worker.request(
            "POST", "/v1/tokenize", {"content": "héllo", "add_special": False, "with_pieces": True}
        )
        assert tokens.status == 200
        body = tokens.json()
        assert body["count"] == len(body["tokens"]) == 6  # the fake tokenizer is byte-level
        text = await worker.request("POST", "/v1/detokenize", {"tokens": body["tokens"]})
        assert text.json() == {"content": "héllo"}


@pytest.mark.behavior("HTTP-008")
async def test_openapi_describes_every_route(autojump_clock: trio.testing.MockClock) -> None:
    async with inprocess_worker() as worker:
        response = await worker.request("GET", "/openapi.json")
        doc = response.json()
        assert doc["openapi"].startswith("3.")
        app = worker.app
        routes = {
            (re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule), method.lower())
            for rule in app.url_map.iter_rules()  # type: ignore[attr-defined]
            for method in rule.methods
            if method not in ("HEAD", "OPTIONS") and rule.endpoint != "static"
        }
        described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
        assert routes == described
        # Every schema is named by its class, never by the module it lives in (pydantic
        # falls back to the module path when two classes share a name): moving a module
        # must not rename a part of the published document.
        assert not [name for name in doc["components"]["schemas"] if "__" in name]
    # One row per operation: a second row for a route would silently replace the first.
    assert len({(op.method, op.path) for op in OPERATIONS}) == len(OPERATIONS)
