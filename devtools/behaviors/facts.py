"""A fact: something the code has (a route, a flag, an error code...) that some behaviour
in the inventory must name, with the pattern that finds it in a behaviour's sentence."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    """Something the code has that some behaviour must name.

    `pattern` is searched in the behaviour sentences; with `context`, the same row must
    also contain it (a flag of one subcommand is named with the subcommand).
    """

    kind: str
    name: str
    origin: str
    pattern: str
    context: str | None = None

    def found_in(self, texts: Sequence[str]) -> bool:
        regex = re.compile(self.pattern)
        return any(
            regex.search(text) and (self.context is None or self.context in text) for text in texts
        )


def backticked(kind: str, name: str, origin: str) -> Fact:
    return Fact(kind, name, origin, re.escape(f"`{name}`"))


def route_fact(route: str, origin: str) -> Fact:
    return Fact("route", route, origin, re.escape(route) + r"(?![\w/{}.-])")


def flag_fact(flag: str, origin: str, context: str | None = None) -> Fact:
    return Fact("flag", flag, origin, r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])", context)


def env_fact(name: str, origin: str) -> Fact:
    return Fact("environment variable", name, origin, rf"(?<![A-Z0-9_]){name}(?![A-Z0-9_])")
