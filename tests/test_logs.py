"""Log lines: text or JSON, labelled with the job that caused them."""

from __future__ import annotations

import io
import json
import logging

import pytest
import trio

from llm_worker_rbee.logs import configure_logging, current_job


@pytest.mark.behavior("CFG-011")
def test_json_lines_carry_the_job_id_set_in_the_task() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = logging.getLogger("llm_worker_rbee.test")

    async def one_request(job: str) -> None:
        current_job.set(job)
        log.info("working on it")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one_request, "job-a")
            nursery.start_soon(one_request, "job-b")
        log.warning("no job here")

    try:
        trio.run(main)
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(line["job_id"] for line in lines[:2]) == ["job-a", "job-b"]
    assert lines[2]["job_id"] == "-" and lines[2]["level"] == "warning"
    assert {"ts", "level", "logger", "job_id", "message"} <= set(lines[0])


@pytest.mark.behavior("CFG-011")
def test_text_lines_show_the_job_id() -> None:
    out = io.StringIO()
    configure_logging("info", "text", stream=out)
    try:
        token = current_job.set("job-7")
        logging.getLogger("llm_worker_rbee.test").info("hello")
        current_job.reset(token)
    finally:
        logging.getLogger().handlers.clear()
    assert "[job-7]: hello" in out.getvalue()
