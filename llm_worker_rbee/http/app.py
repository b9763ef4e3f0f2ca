"""The quart-trio application: error shape, guards, and route registration."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from llm_worker_rbee.actors.session import SessionStream
from llm_worker_rbee.http.errors import ApiError, bad_request, error_body
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.messages.session import InferenceRequest

log = logging.getLogger(__name__)

BodyT = TypeVar("BodyT", bound=BaseModel)
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
_SESSIONS_KEY = "llm_worker_rbee.sessions"


def create_app(services: Services) -> QuartTrio:
    from llm_worker_rbee.http import openai_routes, rbee_routes, system_routes

    app = QuartTrio("llm_worker_rbee")
    # Quart cuts responses after 60 s by default, which would silently end long streams.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024
    app.asgi_app = SessionGuard(app.asgi_app)  # type: ignore[method-assign,assignment,arg-type]
    _register_errors(app)
    system_routes.register(app, services)
    openai_routes.register(app, services)
    rbee_routes.register(app, services)
    return app


class SessionGuard:
    """ASGI middleware: when a request's ASGI call ends, however it ends, its sessions stop.

    Quart closes a streaming body when the client leaves, but a response cancelled before its
    body is entered would never be closed; this catches that case too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        owned: list[SessionStream] = []
        scope[_SESSIONS_KEY] = owned
        try:
            await self._app(scope, receive, send)
        finally:
            for stream in owned:
                stream.close()


def start_session(services: Services, inference: InferenceRequest) -> SessionStream:
    _, sessions = services.serving()
    if sessions.get(inference.job_id) is not None:
        raise ApiError(409, f"job {inference.job_id} is already running", code="duplicate_job_id")
    stream = sessions.start(inference)
    cast(dict[str, Any], request.scope)[_SESSIONS_KEY].append(stream)
    return stream


def job_id_for(given: str | None = None) -> str:
    return given or request.headers.get("X-Request-Id") or f"job-{uuid.uuid4().hex}"


async def parse_body(model: type[BodyT]) -> BodyT:
    """Parses and validates a JSON body.

    Raises:
        ApiError: 400 for malformed JSON, a wrong type or a missing field, naming the param.
    """
    raw = await request.get_data(as_text=False)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _validation_error(exc: ValidationError) -> ApiError:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    # Union members show up in loc as type names ("str", "list[str]"); drop them.
    param_parts = [p for p in loc if not (p[:1].islower() and ("[" in p or p in _TYPE_NAMES))]
    param = ".".join(param_parts) or None
    if error["type"] == "missing":
        return bad_request(f"'{param}' is required", param=param, code="missing_required_parameter")
    return bad_request(f"invalid '{param}': {error['msg']}", param=param)


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "function-after", "constrained-str"}


def _register_errors(app: QuartTrio) -> None:
    @app.errorhandler(ApiError)
    async def _api_error(error: ApiError) -> Response:
        return _json_error(error.status, error.body(), error.headers)

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
        return _json_error(status, error_body(message, error_type, code, None), {})

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
