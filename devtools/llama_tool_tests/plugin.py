"""The translated harness: llama.cpp's tools/server/tests/conftest.py, replaced by this pytest
plugin, which makes each `ServerProcess` of its utils.py this worker.

`ServerProcess.start` starts `llm-worker-rbee serve` on the bundled model with the template the
test asks for (`--chat-template-file`): a template file as named, `chatml` as llama.cpp's own
CHATML_TEMPLATE_SRC (read from common/chat.cpp), and a model named by HF repo as the
published template of that model (MODEL_TEMPLATES). A worker is kept for the next test that
asks for the same one (llama.cpp starts a server per test; the worker's state between
requests does not change an answer's shape) and stopped at the session's end.
"""

from __future__ import annotations

import json
import os
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.testing.process import WorkerProcess
from llm_worker_rbee.tool_calls.family import ToolsUnsupported, detect_family

# The HF repos the slow tests load, as the published template each model has (under
# models/templates/); the bundled weights stand in for every model.
MODEL_TEMPLATES = {
    "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF": "meta-llama-Llama-3.1-8B-Instruct",
    "bartowski/gemma-2-2b-it-GGUF": "google-gemma-2-2b-it",
    "bartowski/Phi-3.5-mini-instruct-GGUF": "microsoft-Phi-3.5-mini-instruct",
    "bartowski/Qwen2.5-1.5B-Instruct-GGUF": "Qwen-Qwen2.5-7B-Instruct",
    "bartowski/Qwen2.5-Coder-3B-Instruct-GGUF": "Qwen-Qwen2.5-7B-Instruct",
    "bartowski/Qwen2.5-7B-Instruct-GGUF": "Qwen-Qwen2.5-7B-Instruct",
    "bartowski/Hermes-2-Pro-Llama-3-8B-GGUF": "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use",
    "bartowski/Hermes-3-Llama-3.1-8B-GGUF": "NousResearch-Hermes-3-Llama-3.1-8B-tool_use",
    "bartowski/Mistral-Nemo-Instruct-2407-GGUF": "mistralai-Mistral-Nemo-Instruct-2407",
    "bartowski/functionary-small-v3.2-GGUF": "meetkai-functionary-medium-v3.2",
    "bartowski/Llama-3.2-3B-Instruct-GGUF": "meta-llama-Llama-3.2-3B-Instruct",
    "bartowski/Llama-3.2-1B-Instruct-GGUF": "meta-llama-Llama-3.2-3B-Instruct",
    "bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF": "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
    "bartowski/c4ai-command-r7b-12-2024-GGUF": "CohereForAI-c4ai-command-r7b-12-2024-tool_use",
    "bartowski/Qwen_QwQ-32B-GGUF": "Qwen-QwQ-32B",
}
THREADS = os.environ.get("LLAMA_TOOL_TESTS_THREADS", "1")
RESULTS = os.environ.get("LLAMA_TOOL_TESTS_RESULTS", "results.jsonl")

_workers: dict[tuple[str, ...], WorkerProcess] = {}
# The last error the test's requests got (status, body), for the report.
_last_error: dict[str, Any] = {}
_templates: dict[str, str] = {}


def _stub_wget() -> None:
    """utils.py imports wget (for model downloads, never made here)."""
    if "wget" not in sys.modules:
        sys.modules["wget"] = types.ModuleType("wget")


def chatml_template(tree: Path) -> str:
    """llama.cpp's CHATML_TEMPLATE_SRC, the C string literals of its #define joined."""
    source = (tree / "common" / "chat.cpp").read_text()
    block = source.split("#define CHATML_TEMPLATE_SRC", 1)[1].split("\n\n", 1)[0]
    return "".join(json.loads(literal) for literal in re.findall(r'"(?:[^"\\]|\\.)*"', block))


def _template_file(server: Any, tests_dir: Path) -> Path | None:
    """The template file the worker gets for `server` (None: the bundled model's own)."""
    tree = tests_dir.parents[2]
    if server.chat_template_file:
        return Path(tests_dir / str(server.chat_template_file)).resolve()
    if server.chat_template == "chatml":
        path = tests_dir / "tmp" / "chatml.jinja"
        path.parent.mkdir(exist_ok=True)
        path.write_text(chatml_template(tree))
        return path
    if server.chat_template:
        raise NotImplementedError(f"chat template {server.chat_template!r}")
    repo = (server.model_hf_repo or "").split(":")[0]
    if repo in MODEL_TEMPLATES:
        return tree / "models" / "templates" / f"{MODEL_TEMPLATES[repo]}.jinja"
    return None


def _start(server: Any, timeout_seconds: int = 60) -> None:
    tests_dir = Path.cwd()
    template = _template_file(server, tests_dir)
    args = ["--model", str(bundled_model_path()), "--threads", THREADS]
    args += ["--slots", str(server.n_slots or 1), "--ctx-size", str(server.n_ctx or 4096)]
    if template is not None:
        args += ["--chat-template-file", str(template)]
        _templates["current"] = template.read_text()
    else:
        _templates.pop("current", None)
    if server.reasoning_format is not None:
        args += ["--reasoning-format", server.reasoning_format]
    key = tuple(args)
    if key not in _workers:
        _workers[key] = WorkerProcess(args).start(timeout=max(timeout_seconds, 120))
    worker = _workers[key]
    server.server_port = int(worker.url.rsplit(":", 1)[1].split("/")[0])
    server.server_host = "127.0.0.1"


def _stop(server: Any) -> None:
    """Kept for the next test asking for the same worker (see the module docstring)."""


def _defaults(server: Any, data: dict[str, Any] | None) -> dict[str, Any] | None:
    """llama-server's server-wide sampling and length defaults (--temp, --seed, --n-predict),
    which the worker takes per request: added where the request leaves them out."""
    if data is None:
        return None
    data = dict(data)
    data.setdefault("temperature", server.temperature)
    data.setdefault("seed", server.seed)
    if server.n_predict and data.get("max_tokens") is None:
        data["max_tokens"] = server.n_predict
    return {k: v for k, v in data.items() if v is not None}


def _role_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """A stream's first delta is OpenAI's `{"role": "assistant", "content": ""}`, where
    llama-server sends no content; utils.py takes any content for a text delta and refuses an
    empty one, so the empty content of the role's delta is left out."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if "role" in delta and delta.get("content") == "":
            del delta["content"]
    return chunk


def install(utils: Any) -> None:
    """Patches utils.ServerProcess (start, stop, the request body's server defaults)."""
    process = utils.ServerProcess
    make_request = process.make_request
    make_stream_request = process.make_stream_request

    def request(self: Any, method: str, path: str, data: Any = None, *a: Any, **k: Any) -> Any:
        response = make_request(self, method, path, _defaults(self, data), *a, **k)
        if response.status_code != 200:
            _last_error.update(status=response.status_code, body=response.body)
        return response

    def stream(self: Any, method: str, path: str, data: Any = None, *a: Any, **k: Any) -> Any:
        try:
            for chunk in make_stream_request(self, method, path, _defaults(self, data), *a, **k):
                yield _role_chunk(chunk)
        except utils.ServerError as error:
            _last_error.update(status=error.code, body=error.body)
            raise

    process.start = _start
    process.stop = _stop
    process.make_request = request
    process.make_stream_request = stream


def _family() -> str:
    template = _templates.get("current")
    if template is None:
        return "bundled"
    try:
        return detect_family(template).value
    except ToolsUnsupported:
        return "refused"


@pytest.fixture(autouse=True)
def _forget_last_error() -> None:
    _last_error.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" and not (report.when == "setup" and report.failed):
        return
    crash = getattr(report.longrepr, "reprcrash", None)
    record = {
        "test": item.nodeid,
        "outcome": report.outcome,
        "family": _family(),
        "message": crash.message if crash is not None else "",
        "where": Path(crash.path).name if crash is not None else "",
        "error": dict(_last_error),
    }
    with open(RESULTS, "a") as out:
        out.write(json.dumps(record) + "\n")


def pytest_sessionfinish() -> None:
    for worker in _workers.values():
        worker.stop()
    _workers.clear()


_stub_wget()
