"""`POST /v1/admin/shutdown`: a hive (or an operator) asks the worker to drain or stop.

The route needs the worker's API key (`LLM_WORKER_API_KEY`, or rbee's `LLORCH_API_TOKEN`)
as `Authorization: Bearer KEY` or `X-Api-Key: KEY`, compared in constant time. A worker
started without a key refuses the route (403) rather than leaving it open.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from quart import request
from quart_trio import QuartTrio

from llm_worker_rbee.http.errors import ApiError, bad_request
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.messages.lifecycle import Drain, Stop


class ShutdownBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # drain: like SIGTERM (in-flight work may finish); now: like a second signal.
    mode: Literal["drain", "now"] = "drain"
    reason: str | None = None


class ShutdownAccepted(BaseModel):
    status: Literal["draining", "stopping"]
    state: str  # the worker's state as the request was accepted


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a caller presents: `Authorization: Bearer KEY`, else `X-Api-Key: KEY`."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return x_api_key or None


def require_api_key(services: Services) -> None:
    """Raises unless the request presents the worker's API key.

    Raises:
        ApiError: 403 when the worker has no key (the route is off), 401 for a missing or
            wrong key.
    """
    key = services.settings.api_key
    if key is None:
        raise ApiError(
            403,
            f"{request.method} {request.path} is disabled: the worker was started without an "
            "API key (set LLM_WORKER_API_KEY or LLORCH_API_TOKEN)",
            type="permission_error",
            code="admin_disabled",
        )
    given = presented_key(request.headers.get("Authorization"), request.headers.get("X-Api-Key"))
    if given is None:
        raise ApiError(
            401,
            "an API key is required: send 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'",
            type="authentication_error",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise ApiError(
            401,
            "the API key is not valid",
            type="authentication_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _shutdown_body() -> ShutdownBody:
    raw = await request.get_data(as_text=False)
    if not raw.strip():
        return ShutdownBody()
    try:
        return ShutdownBody.model_validate(json.loads(raw))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad_request("the body is not valid JSON", code="invalid_json") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(part) for part in error["loc"]) or None
        raise bad_request(f"invalid '{param}': {error['msg']}", param=param) from None


def register(app: QuartTrio, services: Services) -> None:
    @app.post("/v1/admin/shutdown")
    async def admin_shutdown() -> tuple[dict[str, Any], int]:
        """Drains (default) or stops the worker; answers 202 before it happens."""
        require_api_key(services)
        body = await _shutdown_body()
        reason = f"admin shutdown{': ' + body.reason if body.reason else ''}"
        lifecycle = services.lifecycle
        lifecycle.request(Drain(reason) if body.mode == "drain" else Stop(reason))
        status: Literal["draining", "stopping"] = "draining" if body.mode == "drain" else "stopping"
        return ShutdownAccepted(status=status, state=lifecycle.state.value).model_dump(), 202
