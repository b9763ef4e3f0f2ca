"""A burst of openai-SDK completion streams on a worker of four slots, with the queue's
defaults: every stream completes, on a fresh worker and right after a burst of short
requests (docs/API.md, "Choices and the queue"; five runs each: docs/PERFORMANCE.md,
"Bursts")."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from bench.bursts import burst, counter
from llm_worker_rbee.testing.process import WorkerProcess

# The queue's defaults (a count of 256, a wait of 120 s): nothing about it is set here.
ARGS = ["--slots", "4", "--ctx-size", "8192", "--threads", "1"]


@pytest.fixture
def fresh_worker() -> Iterator[WorkerProcess]:
    process = WorkerProcess(ARGS).start()
    yield process
    process.stop()


@pytest.mark.behavior("RES-002", "RES-014", "OAI-005")
def test_bursts_of_64_token_streams_all_complete_fresh_and_after_short_requests(
    fresh_worker: WorkerProcess,
) -> None:
    """24 streams on the fresh worker (its pace from the warm-up), then 48 after a burst of
    4-token requests (its pace and typical length learned from those): each is queued as a
    wait well under the default 120 s, so nothing is refused and nothing retries."""
    url = fresh_worker.url
    # The SDK's defaults: two retries, each after what Retry-After says.
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600)
    assert client.max_retries == 2
    fresh = burst(client, 24, 64)
    assert all(finish == "length" and texts > 0 for finish, texts in fresh)
    assert len(fresh) == 24
    short = burst(client, 24, 4)
    assert [finish for finish, _ in short] == ["length"] * 24
    after = burst(client, 48, 64)
    assert all(finish == "length" and texts > 0 for finish, texts in after)
    assert len(after) == 48
    assert counter(url, "llm_worker:request_rejected_total") == 0
