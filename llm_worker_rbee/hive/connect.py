"""The one place the worker's hive and queen clients are made from its settings."""

from __future__ import annotations

from llm_worker_rbee.config import Settings
from llm_worker_rbee.hive.client import HiveClient
from llm_worker_rbee.hive.http_client import HttpHiveClient
from llm_worker_rbee.hive.queen_client import HttpQueenClient, QueenClient
from llm_worker_rbee.hive.ws_client import WebSocketHiveClient
from llm_worker_rbee.urls import hive_url_problem, is_websocket_url


def hive_client_for(settings: Settings) -> HiveClient | None:
    """`--hive-url`'s client: HTTP POSTs for an http(s):// hive, one WebSocket control
    channel for a ws(s):// one, with `LLM_WORKER_HIVE_TOKEN`; None without a hive.

    Raises:
        ValueError: a URL no client can talk to (settings validate this first).
    """
    url = settings.hive_url
    if url is None:
        return None
    problem = hive_url_problem(url)
    if problem is not None:
        raise ValueError(f"hive URL {url!r} {problem}")
    token = settings.hive_token.get_secret_value() if settings.hive_token else None
    if is_websocket_url(url):
        return WebSocketHiveClient(url, token=token)
    return HttpHiveClient(url, token=token)


def queen_client_for(settings: Settings) -> QueenClient | None:
    """`--queen-url`'s client (rbee's worker-contract heartbeat); None without a queen."""
    return None if settings.queen_url is None else HttpQueenClient(settings.queen_url)
