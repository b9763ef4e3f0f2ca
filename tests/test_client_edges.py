"""What client libraries send and trip on (#16): choices beyond the slots, Retry-After from
the queue, the overflow message, one model by id, token prompts, grammars, CORS and
validation messages that say what is not supported. In-process on the fake engine, in
virtual time."""

from __future__ import annotations

import json
import re

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.scheduler import SchedulerStatistics
from llm_worker_rbee.config import Settings, SettingsError, settings_from
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.testing.inprocess import inprocess_worker

# The fake tokenizer: each byte b is token b + 3 after the BOS (1).
BOS = 1


def fake_tokens(text: str) -> list[int]:
    return [b + 3 for b in text.encode()]


@pytest.mark.behavior("INF-035")
async def test_choices_beyond_the_slots_wait_their_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(replies={f"p{i}": [f"c{i}"] for i in range(6)}, step_latency=0.125)
    async with inprocess_worker(Settings(worker_id="w", slots=2), script) as worker:
        six = await worker.request("POST", "/v1/completions", {"prompt": "p0", "n": 6})
        prompts = [f"p{i}" for i in range(6)]
        listed = await worker.request("POST", "/v1/completions", {"prompt": prompts})
        too_many = await worker.request(
            "POST", "/v1/completions", {"prompt": ["a", "b", "c"], "n": 43}
        )
        chat = await worker.request(
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "p1"}], "n": 3},
        )
    assert six.status == 200
    assert [c["index"] for c in six.json()["choices"]] == list(range(6))
    assert {c["text"] for c in six.json()["choices"]} == {"c0"}
    assert listed.status == 200
    assert [(c["index"], c["text"]) for c in listed.json()["choices"]] == [
        (i, f"c{i}") for i in range(6)
    ]
    assert listed.json()["usage"]["completion_tokens"] == 6
    assert (too_many.status, too_many.json()["error"]["param"]) == (400, "prompt")
    assert "129 choices" in too_many.json()["error"]["message"]
    assert chat.status == 200 and len(chat.json()["choices"]) == 3


@pytest.mark.behavior("INF-035")
async def test_a_choice_that_ends_before_the_last_is_accepted_keeps_its_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Steps that take no time (as the fuzzer's fake worker runs them): the first four of
    128 one-token choices end before the last is accepted. Their events wait for the answer;
    they once ended the whole request as 503 `cancelled` (make fuzz, seed 1)."""
    script = FakeScript(reply=[" w0", " w1"], step_latency=0.0, n_slots=4, n_ctx=1024)
    settings = Settings(worker_id="w", slots=4, ctx_size=1024)
    body = {"prompt": [[0]] * 128, "max_tokens": 1}
    async with inprocess_worker(settings, script) as worker:
        whole = await worker.request("POST", "/v1/completions", body)
        streamed = await worker.request("POST", "/v1/completions", {**body, "stream": True})
    assert whole.status == 200, whole.body
    assert [(c["index"], c["text"]) for c in whole.json()["choices"]] == [
        (i, " w0") for i in range(128)
    ]
    assert streamed.status == 200
    chunks = [json.loads(e.data) for e in streamed.events if e.data != "[DONE]"]
    finished = sorted(c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"])
    assert finished == list(range(128))


@pytest.mark.behavior("INF-035")
async def test_without_a_queue_choices_beyond_the_slots_can_never_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(Settings(worker_id="w", slots=2, max_queue=0)) as worker:
        refused = await worker.request("POST", "/v1/completions", {"prompt": "hi", "n": 3})
        fits = await worker.request("POST", "/v1/completions", {"prompt": "hi", "n": 2})
    assert (refused.status, refused.json()["error"]["param"]) == (400, "n")
    assert "--max-queue 0" in refused.json()["error"]["message"]
    assert fits.status == 200


@pytest.mark.behavior("RES-003")
def test_a_request_is_refused_early_only_when_the_queue_has_no_place() -> None:
    def stats(busy: int, depth: int, wait: float | None) -> SchedulerStatistics:
        return SchedulerStatistics(
            slots_total=4,
            slots_busy=busy,
            queue_depth=depth,
            max_queue=8,
            slot_jobs=("a",) * busy + (None,) * (4 - busy),
            queued_jobs=tuple(f"q{i}" for i in range(depth)),
            rejected_total=0,
            wait_s=wait,
            max_wait_s=60.0,
        )

    assert not stats(3, 8, 100.0).full()  # a slot is free
    assert stats(4, 8, 1.0).full()  # the count
    assert stats(4, 2, 61.0).full()  # the wait
    assert not stats(4, 2, 60.0).full()
    assert not stats(4, 7, None).full()  # no pace yet: the count alone


@pytest.mark.behavior("ERR-030")
async def test_a_prompt_too_long_is_worded_as_openai_words_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Per-slot streams (--batch-invariant): 64 tokens a sequence.
    settings = Settings(worker_id="w", ctx_size=256, slots=4, batch_invariant=True)
    async with inprocess_worker(settings) as worker:
        chat = await worker.request(
            "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 80}]}
        )
        completion = await worker.request("POST", "/v1/completions", {"prompt": "y" * 70})
    error = chat.json()["error"]
    assert (chat.status, error["code"], error["param"]) == (
        400,
        "context_length_exceeded",
        "messages",
    )
    # 80 bytes, "User: " and "\nAssistant:" and the BOS: 98 fake tokens against 64 a slot.
    assert error["message"].startswith(
        "This model's maximum context length is 64 tokens. However, your messages resulted "
        "in 98 tokens. Please reduce the length of the messages."
    )
    error = completion.json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "prompt")
    assert re.match(
        r"This model's maximum context length is 64 tokens\. However, your prompt "
        r"resulted in 71 tokens\.",
        error["message"],
    )


@pytest.mark.behavior("HTTP-050")
async def test_one_model_by_its_id_or_an_alias(autojump_clock: trio.testing.MockClock) -> None:
    settings = Settings(worker_id="w", alias="mine, ours", model_ref="hf:org/repo/m.gguf")
    async with inprocess_worker(settings) as worker:
        by_id = await worker.request("GET", "/v1/models/fake-model")
        by_alias = await worker.request("GET", "/v1/models/ours")
        by_ref = await worker.request("GET", "/v1/models/hf:org/repo/m.gguf")
        other = await worker.request("GET", "/v1/models/gpt-4o")
    assert by_id.status == 200
    assert {k: by_id.json()[k] for k in ("id", "object", "owned_by")} == {
        "id": "fake-model",
        "object": "model",
        "owned_by": "llm-worker-rbee",
    }
    assert by_id.json()["meta"]["slots"] == 4
    assert (by_alias.status, by_alias.json()["id"]) == (200, "ours")
    assert (by_ref.status, by_ref.json()["id"]) == (200, "hf:org/repo/m.gguf")
    assert other.status == 404
    assert other.json()["error"]["code"] == "model_not_found"


@pytest.mark.behavior("OAI-030")
async def test_the_four_prompt_forms(autojump_clock: trio.testing.MockClock) -> None:
    script = FakeScript(replies={"one": ["1"], "two": ["2"]})
    async with inprocess_worker(Settings(worker_id="w"), script) as worker:

        async def complete(prompt: object, **extra: object) -> dict[str, object]:
            body = {"prompt": prompt, "echo": True, **extra}
            response = await worker.request("POST", "/v1/completions", body)
            assert response.status == 200, response.json()
            return dict(response.json())

        text = await complete("one")
        texts = await complete(["one", "two"])
        tokens = await complete([BOS, *fake_tokens("one")])
        token_lists = await complete([fake_tokens("one"), fake_tokens("two")])
        out_of_vocabulary = await worker.request(
            "POST", "/v1/completions", {"prompt": [[5, 6], [7, 100_000]]}
        )
        mixed = await worker.request("POST", "/v1/completions", {"prompt": ["a", 5]})
        empty = await worker.request("POST", "/v1/completions", {"prompt": [[]]})

    def texts_of(reply: dict[str, object]) -> list[str]:
        return [c["text"] for c in reply["choices"]]  # type: ignore[attr-defined]

    assert texts_of(text) == ["one1"]
    assert texts_of(texts) == ["one1", "two2"]
    assert texts_of(tokens) == ["one1"]  # the BOS has no text
    assert texts_of(token_lists) == ["one1", "two2"]
    # Token ids are taken as they are: no BOS is added to them.
    assert text["usage"] == tokens["usage"]
    assert token_lists["usage"]["prompt_tokens"] == 6  # type: ignore[index]
    error = out_of_vocabulary.json()["error"]
    assert (out_of_vocabulary.status, error["param"]) == (400, "prompt")
    assert "token 100000 is outside the vocabulary" in error["message"]
    assert (mixed.status, mixed.json()["error"]["param"]) == (400, "prompt")
    assert "a list of lists of token ids" in mixed.json()["error"]["message"]
    assert empty.status == 400


GRAMMAR = 'root ::= "yes" | "no"'


@pytest.mark.behavior("OAI-031")
async def test_grammar_and_json_schema_constrain_every_api(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(Settings(worker_id="w")) as worker:
        chat_body = {"messages": [{"role": "user", "content": "hi"}]}
        sent = [
            ("/v1/chat/completions", {**chat_body, "grammar": GRAMMAR}),
            ("/v1/completions", {"prompt": "hi", "grammar": GRAMMAR}),
            ("/v1/inference", {"prompt": "hi", "grammar": GRAMMAR, "stream": True}),
        ]
        for path, body in sent:
            response = await worker.request("POST", path, body)
            assert response.status == 200, path
            assert worker.engine.admitted[-1].grammar == GRAMMAR, path
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        response = await worker.request(
            "POST", "/v1/inference", {"prompt": "hi", "json_schema": schema, "stream": True}
        )
        assert response.status == 200
        made = worker.engine.admitted[-1].grammar
        assert made is not None and '"\\"ok\\""' in made
        bad = await worker.request("POST", "/v1/completions", {"prompt": "hi", "grammar": "x"})
        bad_schema = await worker.request(
            "POST", "/v1/completions", {"prompt": "hi", "json_schema": {"type": "nonsense"}}
        )
        both = await worker.request(
            "POST",
            "/v1/chat/completions",
            {**chat_body, "grammar": GRAMMAR, "response_format": {"type": "json_object"}},
        )
    assert (bad.status, bad.json()["error"]["param"]) == (400, "grammar")
    assert (bad_schema.status, bad_schema.json()["error"]["param"]) == (400, "json_schema")
    assert (both.status, both.json()["error"]["param"]) == (400, "grammar")
    assert "response_format and grammar" in both.json()["error"]["message"]


PREFLIGHT = {
    "Origin": "https://app.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
}


@pytest.mark.behavior("HTTP-051", "CFG-030")
async def test_cors_preflight_is_answered_before_auth(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(worker_id="w", api_key="k", cors_origins="https://app.example")
    async with inprocess_worker(settings) as worker:
        preflight = await worker.request("OPTIONS", "/v1/chat/completions", None, PREFLIGHT)
        stranger = await worker.request(
            "OPTIONS", "/v1/chat/completions", None, {**PREFLIGHT, "Origin": "https://evil.example"}
        )
        call = await worker.request(
            "POST",
            "/v1/completions",
            {"prompt": "hi"},
            {"Origin": "https://app.example", "Authorization": "Bearer k"},
        )
        refused = await worker.request(
            "POST", "/v1/completions", {"prompt": "hi"}, {"Origin": "https://app.example"}
        )
    assert preflight.status == 204
    headers = preflight.headers
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in headers["access-control-allow-methods"]
    allowed = [h.strip().lower() for h in headers["access-control-allow-headers"].split(",")]
    for name in ("authorization", "content-type", "x-api-key", "x-request-id", "x-stainless-os"):
        assert name in allowed
    assert int(headers["access-control-max-age"]) > 0
    assert stranger.status == 401 and "access-control-allow-origin" not in stranger.headers
    assert call.status == 200
    assert call.headers["access-control-allow-origin"] == "https://app.example"
    assert "X-Request-Id" in call.headers["access-control-expose-headers"]
    # A refusal is readable too, so the page can say why.
    assert refused.status == 401
    assert refused.headers["access-control-allow-origin"] == "https://app.example"


@pytest.mark.behavior("HTTP-051", "CFG-030")
async def test_cors_is_off_by_default_and_star_allows_any_origin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(Settings(worker_id="w")) as worker:
        plain = await worker.request("GET", "/v1/models", None, {"Origin": "https://a.example"})
    assert "access-control-allow-origin" not in plain.headers
    async with inprocess_worker(Settings(worker_id="w", cors_origins="*")) as worker:
        any_origin = await worker.request("OPTIONS", "/v1/models", None, PREFLIGHT)
    assert any_origin.status == 204
    assert any_origin.headers["access-control-allow-origin"] == "*"
    with pytest.raises(SettingsError, match="--cors-origins"):
        settings_from({"cors_origins": "app.example"}, environ={})


@pytest.mark.behavior("ERR-031")
async def test_refusals_name_what_is_not_supported(autojump_clock: trio.testing.MockClock) -> None:
    image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                ],
            }
        ]
    }
    five_stops = {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}
    role = {"messages": [{"role": "narrator", "content": "hi"}]}
    async with inprocess_worker(Settings(worker_id="w")) as worker:
        answers = [
            await worker.request("POST", "/v1/chat/completions", image),
            await worker.request("POST", "/v1/completions", five_stops),
            await worker.request("POST", "/v1/chat/completions", role),
        ]
    errors = [a.json()["error"] for a in answers]
    assert [a.status for a in answers] == [400, 400, 400]
    assert errors[0]["param"] == "messages.0.content"
    assert (
        "image content parts are not supported by this worker (text only)" in errors[0]["message"]
    )
    assert errors[1]["param"] == "stop"
    assert "at most 4 stop strings" in errors[1]["message"]
    assert errors[2]["param"] == "messages.0.role"
    assert "the role 'narrator' is not supported" in errors[2]["message"]
    assert "user" in errors[2]["message"]
    assert not any("valid string" in e["message"] for e in errors)
