"""GET /ui (the status page and playground, files shipped in the package) and GET /v1/status
(what the page polls).

The page's own files are open without the API key: they hold no data. Everything they show
comes from /v1/status and the inference routes, which need the key when one is set; the page
asks for it once and sends it as a bearer. Nothing is fetched from elsewhere, which the
Content-Security-Policy below enforces in the browser.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from llm_worker_rbee.http.errors import ApiError
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.system.page_status import worker_status

PAGE_PATH = "/ui"
# The files under llm_worker_rbee/ui/ the page is made of, and their media types.
PAGE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
PAGE_HEADERS = {
    # The page's scripts, styles and calls go to this worker only.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load, so a newer worker's page is never mixed with an old one.
    "Cache-Control": "no-cache",
}


def is_page_path(path: str) -> bool:
    """The page's own files: open without the API key (they hold no data)."""
    return path == PAGE_PATH or path.startswith(PAGE_PATH + "/")


def page_files() -> dict[str, bytes]:
    """The page's files, read once from the installed package."""
    folder = resources.files("llm_worker_rbee").joinpath("ui")
    return {name: folder.joinpath(name).read_bytes() for name in PAGE_FILES}


def register(app: QuartTrio, services: Services) -> None:
    files = page_files()

    def serve(name: str) -> Response:
        response = Response(files[name], content_type=PAGE_FILES[name])
        for header, value in PAGE_HEADERS.items():
            response.headers[header] = value
        return response

    @app.get(PAGE_PATH)
    async def page() -> Response:
        """The status page and playground."""
        return serve("index.html")

    @app.get(f"{PAGE_PATH}/<name>")
    async def page_file(name: str) -> Response:
        if name not in files:
            raise ApiError(404, f"no file {name!r} in the page", code="not_found")
        return serve(name)

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        """Everything the page shows; `?since=N`: only the history samples after the Nth."""
        since = request.args.get("since", "0")
        if not since.isascii() or not since.isdigit() or len(since) > 18:
            raise ApiError(
                400,
                f"since must be a sample number (0 or more), got {since!r}",
                param="since",
                code="invalid_value",
            )
        return worker_status(services, int(since)).model_dump()
