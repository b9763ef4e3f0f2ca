"""Settings: flags over environment over defaults, and one clear line for a bad value."""

from __future__ import annotations

import pytest

from llm_worker_rbee.config import SettingsError, parse_serve_args, settings_from


@pytest.mark.behavior("CFG-001", "CFG-009", "CFG-010")
def test_defaults() -> None:
    settings = settings_from({}, environ={})
    assert (settings.host, settings.port, settings.slots, settings.ctx_size) == (
        "127.0.0.1",
        8080,
        4,
        None,  # auto: the model's trained context, resolved before the load
    )
    assert (settings.max_queue, settings.queue_wait_s) == (256, 120.0)
    assert settings.ctx_tokens == 4096 and not settings.batch_invariant
    assert settings.model is None and settings.hive_url is None


@pytest.mark.behavior("CFG-001")
def test_flag_beats_environment_beats_default() -> None:
    env = {"LLM_WORKER_SLOTS": "3", "LLM_WORKER_PORT": "9001"}
    settings = settings_from({"slots": "5"}, environ=env)
    assert settings.slots == 5  # flag
    assert settings.port == 9001  # environment
    assert settings.ctx_size is None  # default: auto


@pytest.mark.behavior("CFG-001", "CFG-003")
def test_serve_flags_parse() -> None:
    settings = parse_serve_args(
        [
            "--worker-id",
            "w1",
            "--model-ref",
            "hf:x/y",
            "--backend",
            "cuda",
            "--device",
            "1",
            "--hive-url",
            "http://hive:7000",
            "--batch-size",
            "256",
            "--threads",
            "3",
        ]
    )
    assert settings.worker_id == "w1" and settings.backend == "cuda" and settings.device == 1
    assert settings.batch_size == 256 and settings.threads == 3


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"slots": "0"}, {}, "--slots: Input should be greater than or equal to 1 (got '0')"),
        (
            {},
            {"LLM_WORKER_PORT": "70000"},
            "LLM_WORKER_PORT: Input should be less than or equal to 65535 (got '70000')",
        ),
        ({"backend": "tpu"}, {}, "--backend: Input should be 'auto', 'cpu' or 'cuda' (got 'tpu')"),
        (
            {"ctx_size": "64", "slots": "8"},
            {},
            "settings: --ctx-size 64 leaves under 16 tokens per slot",
        ),
    ],
)
@pytest.mark.behavior("CFG-002", "CFG-005", "CFG-009")
def test_bad_values_name_the_flag(flags: dict[str, str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from(flags, environ=env)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


@pytest.mark.behavior("CFG-002")
def test_unknown_flag_is_one_line() -> None:
    with pytest.raises(SettingsError, match="unrecognized arguments: --nope"):
        parse_serve_args(["--nope"])
