"""The errors the actors end requests with, in the one shape clients see (ErrorInfo).

The HTTP layer's own errors (a request cancelled before its response, one that ended
without a result) stay in `http/errors.py` and `http/sse.py`: no actor sends them.
"""

from __future__ import annotations

from llm_worker_rbee.messages.session import ErrorInfo

TIMEOUT_ERROR = ErrorInfo(408, "timeout", "request_timeout", "the request ran past its deadline")
ENGINE_ERROR = ErrorInfo(500, "server_error", "engine_error", "generation failed")
OUT_OF_MEMORY = ErrorInfo(
    503,
    "resource_exhausted",
    "resource_exhausted",
    "the worker ran out of memory for this request; retry later",
    retry_after=1,
)


def overloaded(queue_depth: int, retry_after: int = 1) -> ErrorInfo:
    """The 503 for a request that finds every slot busy and the queue full; `retry_after`:
    the scheduler's estimate of when a place frees (SchedulerStatistics.retry_after)."""
    return ErrorInfo(
        status=503,
        type="overloaded",
        code="all_slots_busy",
        message=f"all slots are busy and {queue_depth} requests wait",
        retry_after=retry_after,
    )
