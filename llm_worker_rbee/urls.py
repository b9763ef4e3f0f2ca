"""Checks on the URLs the worker is given (its hive, its queen, where it is advertised).

A leaf: the settings validate with these, and the hive clients pick their transport by the
same schemes, without either importing the other.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

HTTP_SCHEMES = ("http", "https")
WEBSOCKET_SCHEMES = ("ws", "wss")


def http_url_problem(url: str) -> str | None:
    """Why `url` cannot be an http(s) base URL, or None when it can."""
    parts = urlsplit(url)
    if parts.scheme not in HTTP_SCHEMES:
        return "should be an http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    return None


def hive_url_problem(url: str) -> str | None:
    """Why `url` cannot be a hive URL, or None when it can."""
    parts = urlsplit(url)
    if parts.scheme not in HTTP_SCHEMES + WEBSOCKET_SCHEMES:
        return "should be an http://, https://, ws:// or wss:// URL"
    if not parts.hostname:
        return "has no host"
    return None


def is_websocket_url(url: str) -> bool:
    return urlsplit(url).scheme in WEBSOCKET_SCHEMES


def unspecified_host(host: str) -> bool:
    """0.0.0.0 or :: (bracketed or not): where a server listens, not an address to reach."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False
