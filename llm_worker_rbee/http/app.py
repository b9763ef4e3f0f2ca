"""The quart-trio application: route registration, error handlers, auth and CORS.

Routes take what they read from a request from `body.py` and `request_context.py`, and
start their sessions through `sessions.py`; none imports this module.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from llm_worker_rbee.http import openapi
from llm_worker_rbee.http.anthropic import routes as anthropic_routes
from llm_worker_rbee.http.errors import ApiError, error_body
from llm_worker_rbee.http.openai import routes as openai_routes
from llm_worker_rbee.http.rbee import jobs as job_routes
from llm_worker_rbee.http.rbee import routes as rbee_routes
from llm_worker_rbee.http.request_context import request_id_of
from llm_worker_rbee.http.response_end import ResponseEndShield
from llm_worker_rbee.http.responses import routes as responses_api
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sessions import SessionGuard
from llm_worker_rbee.http.system import admin as admin_routes
from llm_worker_rbee.http.system import loading as loading_routes
from llm_worker_rbee.http.system import routes as system_routes
from llm_worker_rbee.http.system import tokens as token_routes
from llm_worker_rbee.http.system import ui as ui_routes
from llm_worker_rbee.http.system.admin import require_api_key
from llm_worker_rbee.http.system.ui import is_page_path
from llm_worker_rbee.messages.errors import overloaded
from llm_worker_rbee.messages.session import Rejected

log = logging.getLogger(__name__)


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("llm_worker_rbee")
    # Quart cuts responses after 60 s by default, which would silently end long streams.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.asgi_app = SessionGuard(app.asgi_app)  # type: ignore[method-assign,assignment,arg-type]
    app.asgi_app = ResponseEndShield(app.asgi_app)  # type: ignore[method-assign,assignment,arg-type]
    app.before_request(_read_whole_body)
    _register_errors(app)
    _register_request_ids(app, services)
    _register_cors(app, services)  # before auth: a browser's preflight carries no key
    _register_auth(app, services)
    system_routes.register(app, services)
    loading_routes.register(app, services)
    openai_routes.register(app, services)
    rbee_routes.register(app, services)
    job_routes.register(app, services)
    token_routes.register(app, services)
    admin_routes.register(app, services)
    responses_api.register(app, services)
    anthropic_routes.register(app, services)
    ui_routes.register(app, services)
    openapi.register(app)
    return app


async def _read_whole_body() -> None:
    """Every answer waits for the whole request body, refusals (401, 404, 405) included.

    Hypercorn (0.18) neither reuses nor closes a keep-alive connection whose response ended
    before its request body arrived: the client's next request on it hangs. Reading the body
    first means every response ends a complete exchange (the body is cached for the route).
    """
    if request.content_length or request.headers.get("Transfer-Encoding"):
        await request.get_data(cache=True)


# Routes that take a slot, refused at once when there is none to be had.
WORK_PATHS = frozenset(
    {
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/inference",
        "/v1/jobs",
        "/v1/responses",
        "/v1/messages",
    }
)
# Probes and scrapes stay open so orchestration works without the key (`/`: where rbee's
# hive polls for readiness; `/info`: rbee's worker contract, asked without a key).
OPEN_PATHS = frozenset({"/", "/health", "/v1/ready", "/metrics", "/info"})


def _register_auth(app: QuartTrio, services: Services) -> None:
    @app.before_request
    async def _check_api_key() -> None:
        """With an API key configured, every route but the open ones needs it; the status
        page's own files (`/ui`) hold no data and are open too."""
        path = request.path
        if services.settings.api_key is not None and not (path in OPEN_PATHS or is_page_path(path)):
            require_api_key(services)

    @app.before_request
    async def _refuse_when_full() -> None:
        """Overload is answered before the body is parsed or tokenized: a worker with every
        slot busy and a full queue says 503 in the time it takes to read the request. The
        SlotScheduler still decides for every request that gets past this."""
        if request.method != "POST" or request.path not in WORK_PATHS:
            return
        scheduler = services.scheduler
        if scheduler is None:
            return
        stats = scheduler.statistics()
        if stats.full():
            error = overloaded(stats.queue_depth, stats.retry_after)
            services.metrics.observe("http:", Rejected(error))
            raise ApiError.from_info(error)


def _register_request_ids(app: QuartTrio, services: Services) -> None:
    @app.after_request
    async def _name_the_request(response: Response) -> Response:
        """Every answer, errors included, names its request in `X-Request-Id` (what the
        openai client reads as `request_id`), and on Anthropic's routes in `request-id` too
        (what the anthropic client reads): the job id, the client's own id, or a fresh one."""
        if "X-Request-Id" not in response.headers:
            response.headers["X-Request-Id"] = request_id_of(services)
        if request.path == "/v1/messages" or request.path.startswith("/v1/messages/"):
            response.headers["request-id"] = response.headers["X-Request-Id"]
        return response


# What a browser may send and read (CORS). Requested headers are allowed too: the key is
# what guards the worker, not the headers a client library adds.
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = ("Authorization", "Content-Type", "X-Api-Key", "X-Request-Id", "X-Request-Deadline")
CORS_EXPOSED = "X-Request-Id, request-id, Retry-After, x-should-retry"
CORS_MAX_AGE_S = 3600


def _register_cors(app: QuartTrio, services: Services) -> None:
    """`--cors-origins`: answers preflights (before auth) and marks answers readable."""
    allowed = services.settings.allowed_origins

    def allow_origin() -> str | None:
        origin = request.headers.get("Origin")
        if origin is None or not allowed:
            return None
        if "*" in allowed:
            return "*"
        return origin if origin in allowed else None

    @app.before_request
    async def _preflight() -> Response | None:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        origin = allow_origin()
        if origin is None:
            return None  # not ours to allow: the browser refuses the call
        asked = request.headers.get("Access-Control-Request-Headers", "")
        headers = list(CORS_HEADERS)
        for name in (part.strip() for part in asked.split(",")):
            if name and name.lower() not in (h.lower() for h in headers):
                headers.append(name)
        response = Response(b"", status=204)
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        response.headers["Access-Control-Allow-Headers"] = ", ".join(headers)
        response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
        response.headers["Vary"] = "Origin"
        return response

    @app.after_request
    async def _allow(response: Response) -> Response:
        origin = allow_origin()
        if origin is not None and "Access-Control-Allow-Origin" not in response.headers:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED
            response.headers["Vary"] = "Origin"
        return response


def _register_errors(app: QuartTrio) -> None:
    @app.errorhandler(ApiError)
    async def _api_error(error: ApiError) -> Response:
        return _json_error(error.status, error.body(), error.answer_headers())

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        kind = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        code = kind.get(status, "http_error")
        message = {
            404: f"no route {request.method} {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
            413: "the request body is too large",
        }.get(status, error.description or error.name)
        error_type = "invalid_request_error" if status < 500 else "server_error"
        headers: dict[str, str] = {}
        valid = getattr(error, "valid_methods", None)
        if status == 405 and valid:  # RFC 9110: a 405 lists what is allowed
            headers["Allow"] = ", ".join(sorted(valid))
        if status == 413:  # the rest of the body is never read: this connection is done
            headers["Connection"] = "close"
        return _json_error(status, error_body(message, error_type, code, None), headers)

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = error_body("internal error", "server_error", "internal_error", None)
        return _json_error(500, body, {})


def _json_error(status: int, body: dict[str, Any], headers: dict[str, str]) -> Response:
    response = Response(json.dumps(body), status=status, content_type="application/json")
    for name, value in headers.items():
        response.headers[name] = value
    return response
