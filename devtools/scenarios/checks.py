"""A scenario's expectations against what was observed: each request's exchange summed up
(whatever API it used) and compared field by field, the states looked at, the cancels, the
worker's exit, the scripted hive and queen. Each failure names the request or the time and
what was expected and seen."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from devtools.scenarios.observed import Observed, rbee_type
from devtools.scenarios.spec import Scenario
from llm_worker_rbee.hive.scripted import check_hive, check_queen
from llm_worker_rbee.testing.asgi import Exchange, SseEvent


@dataclass
class _Summary:
    """What one exchange amounts to, whatever API it used."""

    status: int | None
    stop_reason: str | None = None
    finish_reason: str | None = None
    tokens: int | None = None
    text: str = ""
    error_code: str | None = None
    token_times: list[float] = field(default_factory=list)
    queue_position: int | Literal["none"] | None = None
    job_id: str | None = None
    marker: str | None = None
    choice_texts: dict[int, str] = field(default_factory=dict)
    choice_ends: dict[int, float] = field(default_factory=dict)


def _summarise(exchange: Exchange) -> _Summary:
    summary = _Summary(status=exchange.status, job_id=exchange.headers.get("x-request-id"))
    if not exchange.streaming:
        if not exchange.body:
            return summary
        body = exchange.json()
        if "error" in body:
            summary.error_code = body["error"]["code"]
            return summary
        if "sse_url" in body:  # a posted job whose stream was never read
            summary.job_id = body["job_id"]
            return summary
        for position, each in enumerate(body["choices"]):
            text = each.get("text") or each.get("message", {}).get("content") or ""
            index = each["index"]
            summary.choice_texts[position] = text if index == position else f"<index {index}>"
        choice = body["choices"][0]
        summary.finish_reason = choice["finish_reason"]
        summary.text = choice.get("text") or choice.get("message", {}).get("content") or ""
        summary.tokens = body["usage"]["completion_tokens"]
        return summary
    for event in exchange.events:
        if not event.data.startswith("{"):  # [DONE], or rbee's [CANCELLED] / [ERROR] ...
            summary.marker = event.data
            continue
        data = event.json()
        kind = event.name or rbee_type(event)
        if kind == "started" and event.name is None:  # rbee's data-only job stream
            continue
        if kind == "token" and event.name is None:
            summary.text += data["t"]
            summary.token_times.append(event.at)
        elif kind == "end" and event.name is None:
            summary.stop_reason = data["stop_reason"]
            summary.tokens = data["tokens_out"]
        elif kind == "error" and event.name is None:
            summary.error_code = data["code"]
        elif event.name == "started":
            position = data["queue_position"]
            summary.queue_position = "none" if position is None else position
        elif event.name == "token":
            summary.text += data["t"]
            summary.token_times.append(event.at)
        elif event.name in ("progress", "ready"):
            continue  # /v1/loading/progress: see `load_events`
        elif event.name == "end":
            summary.stop_reason = data["stop_reason"]
            summary.tokens = data["tokens_out"]
        elif "error" in data:
            summary.error_code = data["error"]["code"]
        elif data.get("usage") and not data.get("choices"):
            summary.tokens = data["usage"]["completion_tokens"]
        else:
            choice = data["choices"][0]
            piece = choice.get("text") or choice.get("delta", {}).get("content")
            index = choice["index"]
            summary.choice_texts[index] = summary.choice_texts.get(index, "") + (piece or "")
            if choice.get("finish_reason"):
                summary.choice_ends[index] = event.at
            if index != 0:
                continue
            if piece:
                summary.text += piece
                summary.token_times.append(event.at)
            if choice.get("finish_reason"):
                summary.finish_reason = choice["finish_reason"]
    return summary


def check(scenario: Scenario, observed: Observed) -> list[str]:
    """Every way the run differs from the scenario's `expect` (none: it passed)."""
    failures: list[str] = []
    if observed.gave_up_at is not None:
        unfinished = [r.id for r in scenario.request if r.id not in observed.exchanges]
        failures.append(
            f"scenario: still running at its time limit t={observed.gave_up_at:.3f} "
            f"(requests not finished: {', '.join(unfinished) or 'none'})"
        )
    for name, expect in scenario.expect.requests.items():
        exchange = observed.exchanges.get(name)
        if exchange is None:
            failures.append(f"request {name!r}: never ran (no such [[request]] id?)")
            continue
        if exchange.crashed is not None:
            failures.append(f"request {name!r}: the app raised {exchange.crashed}")
            continue
        summary = _summarise(exchange)
        got: dict[str, Any] = {
            "status": summary.status,
            "stop_reason": summary.stop_reason,
            "finish_reason": summary.finish_reason,
            "tokens": summary.tokens,
            "streamed_tokens": len(summary.token_times),
            "text": summary.text,
            "error_code": summary.error_code,
            "first_token_at": summary.token_times[0] if summary.token_times else None,
            "last_token_at": summary.token_times[-1] if summary.token_times else None,
            "ended_at": exchange.ended_at or exchange.disconnected_at,
            "queue_position": summary.queue_position,
            "job_id": summary.job_id,
            "retry_after": exchange.headers.get("retry-after"),
            "min_pings": len(exchange.pings),
            "load_events": [
                _load_event(event) for event in exchange.events if event.name in _LOAD_EVENTS
            ],
            "posted_status": posted.status if (posted := observed.posts.get(name)) else None,
            "marker": summary.marker,
            "data_only": not exchange.pings and all(e.name is None for e in exchange.events),
            "choices": [summary.choice_texts[i] for i in sorted(summary.choice_texts)],
            "choice_ends": [summary.choice_ends[i] for i in sorted(summary.choice_ends)],
        }
        end = got["ended_at"]
        when = "never ended" if end is None else f"ended at t={end:.3f}"
        for key, want in expect.model_dump(exclude_none=True).items():
            have = got[key]
            if key == "choice_ends":
                ok = len(have) == len(want) and all(map(_same, have, want))
            else:
                ok = have >= want if key == "min_pings" else _same(have, want)
            if not ok:
                failures.append(f"request {name!r}: expected {key}={want!r}, got {have!r} ({when})")
    for check, seen in observed.states:
        for key, want in check.model_dump(exclude_none=True).items():
            if key != "at" and seen[key] != want:
                failures.append(f"at t={check.at:.3f}: expected {key}={want!r}, got {seen[key]!r}")
    for job, want in scenario.expect.cancels.items():
        have = observed.cancel_status.get(job)
        if have != want:
            failures.append(f"cancel {job!r}: expected status {want}, got {have}")
    worker = scenario.expect
    if worker.exit_code is not None and observed.exit_code != worker.exit_code:
        failures.append(f"worker: expected exit code {worker.exit_code}, got {observed.exit_code}")
    if worker.stopped_at is not None and not _same(observed.stopped_at, worker.stopped_at):
        failures.append(
            f"worker: expected to stop at t={worker.stopped_at}, got t={observed.stopped_at}"
        )
    if worker.hive is not None:
        failures += check_hive(worker.hive, observed.hive, observed.hive_log)
    if worker.queen is not None:
        failures += check_queen(worker.queen, observed.queen, observed.queen_log)
    return failures


_LOAD_EVENTS = ("progress", "ready", "failed")


def _load_event(event: SseEvent) -> str:
    data = event.json()
    return f"{event.at:.3f} {event.name} {data.get('stage')} {data.get('progress')}"


def _same(have: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(have, int | float):
        return abs(have - want) < 1e-9
    return bool(have == want)
