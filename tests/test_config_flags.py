"""Every `serve` flag and its LLM_WORKER_* variable, the forms some of them take, the
switches, the secrets, and the host guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llm_worker_rbee.config import (
    FLAGS,
    SettingsError,
    env_of,
    flag_of,
    parse_serve_args,
    settings_from,
)

# field -> (a value on the command line, the setting it becomes); every flag needs one.
SAMPLES: dict[str, tuple[str, Any]] = {
    "worker_id": ("w-7", "w-7"),
    "model": ("/models/m.gguf", "/models/m.gguf"),
    "model_ref": ("hf:org/repo", "hf:org/repo"),
    "alias": ("a,b", "a,b"),
    "models_dir": ("/models", Path("/models")),
    "chat_template_file": ("/t/chat.jinja", Path("/t/chat.jinja")),
    "backend": ("cpu", "cpu"),
    "device": ("GPU-1234", "GPU-1234"),
    "gpu_layers": ("12", 12),
    "load_timeout": ("2.5", 2.5),
    "host": ("::1", "::1"),
    "port": ("9000", 9000),
    "hive_url": ("ws://hive:7000", "ws://hive:7000"),
    "ctx_size": ("8192", 8192),
    "slots": ("8", 8),
    "threads": ("3", 3),
    "batch_size": ("256", 256),
    "max_queue": ("0", 0),
    "max_queue_wait": ("2.5", 2.5),
    "drain_timeout": ("0", 0.0),
    "request_timeout": ("60", 60.0),
    "sse_keepalive": ("0.5", 0.5),
    "heartbeat_interval": ("2", 2.0),
    "log_level": ("debug", "debug"),
    "log_format": ("json", "json"),
    "reasoning_format": ("none", "none"),
    "tool_fallback": ("off", "off"),
    "log_prompts": ("true", True),
    "max_body_bytes": ("2048", 2048),
    "insecure": ("1", True),
    "queen_url": ("http://localhost:7833", "http://localhost:7833"),
    "advertise_url": ("http://gpu-7:8080", "http://gpu-7:8080"),
    "local_mode": ("1", True),
    "cuda_device": ("1", 1),
    "job_pickup_timeout": ("5", 5.0),
    "cors_origins": (
        "https://app.example,http://localhost:5173",
        "https://app.example,http://localhost:5173",
    ),
    "batch_invariant": ("true", True),
    "speculation": ("off", "off"),
}
# Flags that are another setting's second name (rbee's spellings).
SETS = {"cuda_device": "device"}


@pytest.mark.parametrize("flag", FLAGS, ids=lambda f: f.name)
@pytest.mark.behavior(
    "CFG-003",
    "CFG-004",
    "CFG-005",
    "CFG-006",
    "CFG-007",
    "CFG-008",
    "CFG-009",
    "CFG-010",
    "CFG-011",
    "CFG-013",
    "CFG-036",
    "CFG-038",
    "CFG-039",
    "CFG-045",
)
def test_every_flag_and_variable_sets_its_setting(flag: Any) -> None:
    assert flag.name in SAMPLES, f"{flag_of(flag.name)}: add a sample value to SAMPLES"
    given, expected = SAMPLES[flag.name]
    field = SETS.get(flag.name, flag.name)
    argv = [flag_of(flag.name)] if flag.switch else [flag_of(flag.name), given]
    assert getattr(parse_serve_args(argv), field) == expected
    from_env = settings_from({}, environ={env_of(flag.name): given})
    assert getattr(from_env, field) == expected


@pytest.mark.behavior("CFG-005")
def test_device_and_gpu_layers_take_their_forms() -> None:
    assert settings_from({"device": " 1 "}, environ={}).device == 1
    assert settings_from({"gpu_layers": "ALL"}, environ={}).gpu_layers == "all"
    assert settings_from({"gpu_layers": "auto", "backend": "cpu"}, environ={}).n_gpu_layers == 0
    assert settings_from({"gpu_layers": "all"}, environ={}).n_gpu_layers == -1
    for flags, message in (
        ({"device": "-1"}, "--device: should be a GPU index (0, 1, ...) or a GPU UUID"),
        ({"gpu_layers": "most"}, "--gpu-layers: should be auto, all or a number of layers"),
    ):
        with pytest.raises(SettingsError) as caught:
            settings_from(flags, environ={})
        assert str(caught.value).startswith(message)


@pytest.mark.behavior("CFG-007")
def test_a_reachable_host_needs_a_key_or_insecure() -> None:
    with pytest.raises(SettingsError, match=r"--host 0\.0\.0\.0 is reachable from other machines"):
        settings_from({"host": "0.0.0.0"}, environ={})
    assert settings_from({"host": "0.0.0.0", "insecure": "true"}, environ={}).insecure
    keyed = settings_from({"host": "0.0.0.0"}, environ={"LLM_WORKER_API_KEY": "k"})
    assert keyed.api_key is not None
    for loopback in ("localhost", "127.0.0.2", "[::1]"):
        assert settings_from({"host": loopback}, environ={}).host == loopback


@pytest.mark.behavior("CFG-014")
def test_switches_take_no_value() -> None:
    settings = parse_serve_args(["--log-prompts", "--insecure", "--port", "1"])
    assert settings.log_prompts and settings.insecure and settings.port == 1
    assert not parse_serve_args([]).log_prompts
    with pytest.raises(SettingsError, match="unrecognized arguments: yes"):
        parse_serve_args(["--insecure", "yes"])


@pytest.mark.behavior("CFG-015")
def test_the_api_key_comes_from_either_variable() -> None:
    rbee = settings_from({}, environ={"LLORCH_API_TOKEN": "from-rbee"})
    assert rbee.api_key is not None and rbee.api_key.get_secret_value() == "from-rbee"
    both = {"LLM_WORKER_API_KEY": "ours", "LLORCH_API_TOKEN": "from-rbee"}
    ours = settings_from({}, environ=both)
    assert ours.api_key is not None and ours.api_key.get_secret_value() == "ours"
    assert "ours" not in repr(ours)
    with pytest.raises(SettingsError):
        parse_serve_args(["--api-key", "k"])  # never a flag: flags show in `ps`
