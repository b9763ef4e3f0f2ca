"""The quart-trio application: error shape, guards, and route registration."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar, cast

import trio
from pydantic import BaseModel, ValidationError
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from llm_worker_rbee.actors.session import ChoiceStream
from llm_worker_rbee.http.admin_routes import require_api_key
from llm_worker_rbee.http.errors import CANCELLED, ApiError, bad_request, ended_error, error_body
from llm_worker_rbee.http.schemas import JOB_ID_PATTERN
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.logs import current_job
from llm_worker_rbee.messages.errors import overloaded
from llm_worker_rbee.messages.session import (
    Accepted,
    Ended,
    InferenceRequest,
    Rejected,
    SessionEvent,
)

log = logging.getLogger(__name__)

BodyT = TypeVar("BodyT", bound=BaseModel)
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
_SESSIONS_KEY = "llm_worker_rbee.sessions"


def create_app(services: Services) -> QuartTrio:
    from llm_worker_rbee.http import (
        admin_routes,
        anthropic_routes,
        job_routes,
        loading_routes,
        openai_routes,
        openapi,
        rbee_routes,
        responses_api,
        system_routes,
        token_routes,
    )

    app = QuartTrio("llm_worker_rbee")
    # Quart cuts responses after 60 s by default, which would silently end long streams.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.asgi_app = SessionGuard(app.asgi_app)  # type: ignore[method-assign,assignment,arg-type]
    app.before_request(_read_whole_body)
    _register_errors(app)
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
    openapi.register(app)
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
        owned: list[ChoiceStream] = []
        scope[_SESSIONS_KEY] = owned
        try:
            await self._app(scope, receive, send)
        finally:
            for stream in owned:
                stream.close()


def _start(
    services: Services, requests: list[InferenceRequest], *, owned: bool = True
) -> ChoiceStream:
    """Starts one session per request, owned by this HTTP request (see SessionGuard) unless
    `owned` is false (a posted job: the JobBoard, then its reader, owns it)."""
    _, sessions = services.serving()
    for inference in requests:
        if sessions.get(inference.job_id) is not None:
            raise ApiError(
                409, f"job {inference.job_id} is already running", code="duplicate_job_id"
            )
    stream = sessions.start_choices(requests)
    if owned:
        adopt(stream)
    return stream


def adopt(stream: ChoiceStream) -> None:
    """This HTTP request owns the stream: when its ASGI call ends, the sessions stop."""
    cast(dict[str, Any], request.scope)[_SESSIONS_KEY].append(stream)


def _refuse(stream: ChoiceStream, first: SessionEvent) -> None:
    """A first event that is not Accepted ends the request before a response starts.

    Raises:
        ApiError: 503 (with Retry-After) when the queue is full; 408 when the deadline had
            passed before the request was even accepted.
    """
    if isinstance(first, Rejected):
        stream.close()
        raise ApiError.from_info(first.error)  # Retry-After: the scheduler's estimate
    if isinstance(first, Ended):
        stream.close()
        raise ApiError.from_info(ended_error(first) or CANCELLED)


async def open_session(services: Services, inference: InferenceRequest) -> ChoiceStream:
    """One session; waits for its first answer before the handler chooses a status."""
    return await open_choices(services, [inference])


async def open_choices(
    services: Services, requests: list[InferenceRequest], *, owned: bool = True
) -> ChoiceStream:
    """Sessions for every choice; waits until each is accepted (or one is refused).
    `owned`: see `_start`."""
    stream = _start(services, requests, owned=owned)
    accepted = 0
    while accepted < len(requests):
        index, first = await stream.events.receive()
        _refuse(stream, first)
        if isinstance(first, Accepted):
            stream.accepted[index] = first
            accepted += 1
    return stream


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
    return job_id


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


async def parse_body(model: type[BodyT]) -> BodyT:
    """Parses and validates a JSON body.

    Raises:
        ApiError: 400 for malformed JSON, a wrong type or a missing field, naming the param.
    """
    data = await request.get_data(as_text=False)
    raw = data.encode() if isinstance(data, str) else data
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise bad_request(
            f"the body nests deeper than {MAX_JSON_DEPTH} levels", code="json_too_deep"
        )
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object", code="invalid_json")
    return validate_body(model, data)


def validate_body(model: type[BodyT], data: dict[str, Any]) -> BodyT:
    """Validates parsed JSON against a body model.

    Raises:
        ApiError: 400 for a wrong type or a missing field, naming the param.
    """
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
    # A validator's own refusal names what is not supported; pydantic prefixes it.
    message = str(error["msg"]).removeprefix("Value error, ")
    return bad_request(f"invalid '{param}': {message}", param=param)


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "function-after", "constrained-str"}


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
        """With an API key configured, every route but the open ones needs it."""
        if services.settings.api_key is not None and request.path not in OPEN_PATHS:
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
        if stats.slots_busy >= stats.slots_total and stats.queue_depth >= stats.max_queue:
            error = overloaded(stats.queue_depth, stats.retry_after())
            services.metrics.observe("http:", Rejected(error))
            raise ApiError.from_info(error)


# What a browser may send and read (CORS). Requested headers are allowed too: the key is
# what guards the worker, not the headers a client library adds.
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = ("Authorization", "Content-Type", "X-Api-Key", "X-Request-Id", "X-Request-Deadline")
CORS_EXPOSED = "X-Request-Id, Retry-After"
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


MAX_JSON_DEPTH = 32


def json_depth(raw: bytes) -> int:
    """How deeply arrays/objects nest, found without parsing (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


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
