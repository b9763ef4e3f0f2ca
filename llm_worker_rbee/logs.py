"""Logging set-up: text or JSON lines, the job id on every line a request causes."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Literal, TextIO

# The job a task works for. Trio copies context into each task it starts, so a value set in
# a session's (or a handler's) task labels everything that task logs.
current_job: contextvars.ContextVar[str] = contextvars.ContextVar("current_job", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(job_id)s]: %(message)s"


class JobIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = current_job.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; exceptions become one string field, never a multi-line dump."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "job_id": getattr(record, "job_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(
    level: str, fmt: Literal["text", "json"], stream: TextIO = sys.stderr
) -> None:
    handler = logging.StreamHandler(stream)
    handler.addFilter(JobIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
