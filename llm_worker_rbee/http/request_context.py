"""What a route takes from its request besides the body: the job id (which then names the
handler's log lines), the deadline, and how much of the prompt the log may show."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any, cast

import trio
from quart import request

from llm_worker_rbee.http.errors import bad_request
from llm_worker_rbee.http.schemas import JOB_ID_PATTERN
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.logs import current_job

log = logging.getLogger(__name__)
# Where a request keeps its job id once a route has read it (the ASGI scope: one per request).
_JOB_ID_KEY = "llm_worker_rbee.job_id"


def job_id_for(services: Services, given: str | None = None) -> str:
    """The client's job id (body, then X-Request-Id), else a fresh one."""
    header = request.headers.get("X-Request-Id")
    if given is None and header is not None and not re.fullmatch(JOB_ID_PATTERN, header):
        raise bad_request(
            "X-Request-Id must be 1-128 characters of A-Z a-z 0-9 . _ : @ + = -",
            param="X-Request-Id",
            code="invalid_job_id",
        )
    job_id = given or header or services.new_job_id()
    current_job.set(job_id)  # the handler's log lines name the job
    cast(dict[str, Any], request.scope)[_JOB_ID_KEY] = job_id
    return job_id


def request_id_of(services: Services) -> str:
    """The id an answer names: the request's job id once a route has read it, else the
    client's `X-Request-Id` where it is a valid one (an answer before the route read it: a
    bad body, a missing key, a full queue), else a fresh one."""
    job_id = cast(dict[str, Any], request.scope).get(_JOB_ID_KEY)
    if isinstance(job_id, str):
        return job_id
    header = request.headers.get("X-Request-Id")
    if header is not None and re.fullmatch(JOB_ID_PATTERN, header):
        return header
    return services.new_job_id()


def log_prompt(services: Services, prompt: str) -> None:
    """Prompt text reaches the log only with --log-prompts; otherwise just its size."""
    if services.settings.log_prompts:
        log.info("prompt: %r", prompt)
    else:
        log.debug("prompt of %d characters", len(prompt))


def deadline_for(services: Services, timeout: float | None) -> float | None:
    """The earliest of X-Request-Deadline, the body's `timeout` and --request-timeout.

    Returned in trio's clock, so waiting in the queue counts against it.

    Raises:
        ApiError: 400 for a deadline header that is neither RFC 3339 nor epoch milliseconds.
    """
    now = trio.current_time()
    candidates: list[float] = []
    if services.settings.request_timeout is not None:
        candidates.append(now + services.settings.request_timeout)
    if timeout is not None:
        candidates.append(now + timeout)
    header = request.headers.get("X-Request-Deadline")
    if header is not None:
        candidates.append(now + parse_deadline(header) - services.wall_clock())
    return min(candidates) if candidates else None


def parse_deadline(value: str) -> float:
    """RFC 3339 (with a zone) or epoch milliseconds -> epoch seconds."""
    text = value.strip()
    if text.isdigit():
        return int(text) / 1000
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise bad_request(
            f"X-Request-Deadline {value!r} is neither RFC 3339 with a time zone nor epoch ms",
            param="X-Request-Deadline",
            code="invalid_deadline",
        )
    return moment.timestamp()
