"""The harness's results (one JSON line per test, from plugin.py) counted by failure reason."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

REFUSED_NO_TOOLS = "refused: the template takes no tools (needs the generic fallback)"
REFUSED_FORMAT = "refused: a tool format the worker does not parse"


def reason(record: dict[str, Any]) -> str:
    """Why a test failed, as one line: the worker's refusal, another HTTP error, a shape the
    harness's own checks (utils.py) reject, or an assertion of the test on the answer."""
    error = record.get("error") or {}
    body = error.get("body")
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        detail = body["error"]
        if detail.get("code") == "tools_not_supported":
            text = str(detail.get("message", ""))
            return REFUSED_FORMAT if "does not parse" in text else REFUSED_NO_TOOLS
        return f"HTTP {error.get('status')}: {str(detail.get('message', ''))[:80]}"
    if error:
        return f"HTTP {error.get('status')}: {str(body)[:80]}"
    message = str(record.get("message", "")).splitlines()[0] if record.get("message") else ""
    if "timed out" in message or "Timeout" in message:
        return "timed out: the answer took longer than the test waits, on this CPU"
    if "Unterminated string" in message:
        return "answer: its arguments cut by max_tokens (a string the model never ended)"
    if record.get("where") == "utils.py":
        return f"shape (harness check): {message[:90]}"
    return f"answer: {message[:90]}"


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary(records: list[dict[str, Any]]) -> str:
    passed = sum(r["outcome"] == "passed" for r in records)
    skipped = sum(r["outcome"] == "skipped" for r in records)
    failed = [r for r in records if r["outcome"] == "failed"]
    lines = [f"{len(records)} tests: {passed} passed, {len(failed)} failed, {skipped} skipped"]
    by_reason = Counter(_bucket(reason(r)) for r in failed)
    for text, count in by_reason.most_common():
        lines.append(f"  {count:4d}  {text}")
    lines.append("failures:")
    for r in sorted(failed, key=lambda r: r["test"]):
        lines.append(f"  {r['test']}  [{r['family']}]  {reason(r)}")
    return "\n".join(lines)


def _bucket(text: str) -> str:
    """The reason without the answer's own text, so that like failures count together."""
    return text.split(" in {", 1)[0].split(", got", 1)[0][:100]
