"""The streaming load: N requests, `concurrency` at a time, timed per token on the client."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from bench.common import MAX_TOKENS, SAMPLING, percentile, prompt_for


@dataclass
class StreamResult:
    sent_at: float
    first_at: float | None = None
    last_at: float | None = None
    chunks: int = 0
    finish_reason: str | None = None
    error: str | None = None

    @property
    def tokens(self) -> int:
        # Every stream asks for MAX_TOKENS with end-of-generation banned: "length" means all of
        # them came (a chunk can carry more than one token when UTF-8 is split across tokens).
        return MAX_TOKENS if self.finish_reason == "length" else self.chunks

    @property
    def ttft(self) -> float | None:
        return None if self.first_at is None else self.first_at - self.sent_at

    @property
    def decode_tps(self) -> float | None:
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return None
        return (self.tokens - 1) / (self.last_at - self.first_at)


@dataclass
class LoadResult:
    concurrency: int
    wall_s: float
    streams: list[StreamResult] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.streams)

    @property
    def complete(self) -> int:
        return sum(s.finish_reason == "length" for s in self.streams)

    @property
    def aggregate_tps(self) -> float:
        return self.tokens / self.wall_s

    def ttft_ms(self, q: float) -> float:
        return 1000 * percentile([s.ttft for s in self.streams if s.ttft is not None], q)

    @property
    def decode_tps(self) -> float:
        """Per stream, the median over streams."""
        return percentile([s.decode_tps for s in self.streams if s.decode_tps is not None], 50)


def completion_body(index: int, *, eog: list[int]) -> dict[str, Any]:
    return {
        "prompt": prompt_for(index),
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "seed": 1000 + index,
        # Banned end-of-generation tokens, the OpenAI way every server understands, so each
        # stream generates all MAX_TOKENS.
        "logit_bias": {str(token): -100 for token in eog},
        **SAMPLING,
    }


def _data_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The `data:` payloads of the complete events in `buffer`, and the incomplete rest."""
    *events, rest = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
    data = [line[6:] for event in events for line in event.split(b"\n") if line[:6] == b"data: "]
    return data, rest


async def _stream(client: httpx.AsyncClient, body: dict[str, Any]) -> StreamResult:
    # Raw bytes split into events here, not httpx's text and line decoders: the client shares
    # the cores with the server, and the lighter it is the less it takes from any contender.
    result = StreamResult(sent_at=time.perf_counter())
    try:
        async with client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return result
            rest = b""
            async for chunk in response.aiter_raw():
                now = time.perf_counter()
                payloads, rest = _data_lines(rest + chunk)
                for payload in payloads:
                    if payload == b"[DONE]":
                        continue
                    choices = json.loads(payload).get("choices") or []
                    if not choices:
                        continue
                    if choices[0].get("text"):
                        if result.first_at is None:
                            result.first_at = now
                        result.last_at = now
                        result.chunks += 1
                    if choices[0].get("finish_reason"):
                        result.finish_reason = choices[0]["finish_reason"]
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def run_load(
    url: str, concurrency: int, requests: int, *, eog: list[int], first_index: int = 0
) -> LoadResult:
    """`requests` streaming completions, at most `concurrency` at once (a closed loop)."""
    results: list[StreamResult] = []
    todo = iter(range(first_index, first_index + requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def user() -> None:
            for index in todo:
                results.append(await _stream(client, completion_body(index, eog=eog)))

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(user)
        wall = time.perf_counter() - started
    return LoadResult(concurrency, wall, results)


async def warm_up(url: str, *, eog: list[int]) -> None:
    """One short request, so model pages and first-call costs are not in the figures. Its
    prompt is one no measured request has (they count up from 0 in each round), so none of
    them finds its prompt in a slot's cache."""
    body = {**completion_body(-1, eog=eog), "max_tokens": 8}
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await _stream(client, body)
