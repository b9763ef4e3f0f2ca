"""One real worker (the bundled model, real HTTP on loopback) shared by the end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import openai
import pytest

from llm_worker_rbee.testing.process import WorkerProcess

# litellm reads its model price list when imported, from the network unless told to use the
# copy it ships with; set here, before any test module imports it (the network is loopback).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

WORKER_ARGS = ["--slots", "2", "--ctx-size", "2048", "--threads", "2", "--alias", "my-alias"]


@pytest.fixture(scope="session")
def worker() -> Iterator[WorkerProcess]:
    process = WorkerProcess(WORKER_ARGS).start()
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
