"""The real workers (the bundled model, real HTTP on loopback) shared by the end-to-end tests.

Each worker start loads the model: every configuration below is started once per session, on
first use, by whichever test module needs it first. A test that changes a worker for good
(drain, shutdown, signals, keys) or tests its start starts its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from devtools.sdist import templates_folder
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.testing.process import WorkerProcess
from tests.gguf_factory import with_chat_template

# litellm reads its model price list when imported, from the network unless told to use the
# copy it ships with; set here, before any test module imports it (the network is loopback).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# One llama.cpp thread per worker: with two on two cores, the test process and the worker's
# own event loop take a core from them now and then, and llama.cpp's threads wait on each
# other. Seven short requests took 4-5 s with one thread, 8-37 s with two (2 cores, load
# average 3); the tests here decode few tokens at a time, where a second thread gains little.
# `make test` runs two test processes (pytest-xdist), each with its own session workers, so
# two one-thread workers decode at a time, one per core.
# No n-gram drafts: which a step takes depends on the worker's memory of outputs, its
# acceptance estimates and the step costs it timed, none of which a test can bring back to
# the same state, and a draft changes its step's shape (docs/API.md, "Same request, same
# text"). tests/e2e/test_speculation.py starts workers of its own with them.
WORKER_ARGS = [
    *("--slots", "2", "--ctx-size", "2048", "--threads", "1", "--alias", "my-alias"),
    *("--speculation", "off"),
]
# The exact mode (a KV stream per slot), four slots so that four requests share each step,
# and a queue of twelve: a burst of 24 overflows it (test_client_edges).
EXACT_ARGS = [
    *("--slots", "4", "--ctx-size", "2048", "--threads", "1"),
    *("--batch-invariant", "--max-queue", "12"),
]
TEMPLATES = Path(__file__).parent.parent / "templates"
# The exact mode: the tool tests compare a streamed call with the whole one, which only it
# promises whatever the slot's cache held (docs/API.md, "Same request, same text").
TEMPLATE_ARGS = ["--slots", "1", "--ctx-size", "2048", "--threads", "1", "--batch-invariant"]


@pytest.fixture(scope="session")
def worker() -> Iterator[WorkerProcess]:
    """The fast mode (one shared KV pool): a greedy or seeded reply repeats only when the same
    request meets the same state (what the cache holds, the company), so a test here that
    compares two texts makes both meet the same state; one that compares texts across cache
    states or company uses `exact_worker` (docs/API.md, "Same request, same text")."""
    process = WorkerProcess(WORKER_ARGS).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def exact_worker() -> Iterator[WorkerProcess]:
    """The exact mode: a reply does not depend on the company it keeps or on what the slots
    hold from earlier tests, so tests of that, and tests that compare two replies made in
    different cache states, share this worker."""
    process = WorkerProcess(EXACT_ARGS).start()
    yield process
    process.stop()


@pytest.fixture
def exact_http(exact_worker: WorkerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=exact_worker.url, timeout=60) as client:
        yield client


@pytest.fixture
def exact_client(exact_worker: WorkerProcess) -> Iterator[openai.OpenAI]:
    url = f"{exact_worker.url}/v1"
    with openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="session")
def published_templates() -> Path:
    """llama.cpp's copies of published chat templates (`Qwen3.5-4B.jinja`, ...), from the
    installed llama-cpp-python's sdist (fetched through pip once, then kept in the venv:
    devtools/sdist.py). A path in it is a template `serve_template` takes."""
    return templates_folder()


@pytest.fixture(scope="session")
def template_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The bundled model's weights with a published template from tests/templates/ (or a
    path, e.g. in `published_templates`) as its `tokenizer.chat_template`: each copy made
    once per session, under pytest's tmp."""
    folder = tmp_path_factory.mktemp("gguf")
    made: dict[str, Path] = {}

    def copy(template: str) -> Path:
        if template not in made:
            text = (TEMPLATES / template).read_text()
            made[template] = with_chat_template(
                bundled_model_path(), folder / f"{Path(template).stem}.gguf", text
            )
        return made[template]

    return copy


@pytest.fixture(scope="session")
def serve_template(template_model: Callable[[str], Path]) -> Callable[[str], WorkerProcess]:
    """Starts a worker on the weights under a template; the caller stops it."""

    def serve(template: str) -> WorkerProcess:
        return WorkerProcess([*TEMPLATE_ARGS, "--model", str(template_model(template))]).start()

    return serve


@pytest.fixture(scope="session")
def qwen(serve_template: Callable[[str], WorkerProcess]) -> Iterator[WorkerProcess]:
    """The weights under Qwen 2.5's template, served as `qwen2.5` (the file's stem)."""
    process = serve_template("qwen2.5.jinja")
    yield process
    process.stop()


@pytest.fixture
def http(worker: WorkerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=worker.url, timeout=60) as client:
        yield client


@pytest.fixture
def client(worker: WorkerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def model_id(http: httpx.Client) -> str:
    return str(http.get("/v1/models").json()["data"][0]["id"])


@pytest.fixture
def worker_url(worker: WorkerProcess) -> str:
    return worker.url
