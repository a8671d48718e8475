"""Matching a finding's scope and kind, for sink routes and silences.

A scope is `fleet` or `KIND=VALUE[,KIND=VALUE]` (`machine=spark02,profile=max-a`). A pattern
is `*` (anything), `fleet` (the fleet-wide findings), or `KIND=GLOB[,KIND=GLOB]`: every pair
must be in the scope, its value matching the glob (`machine=spark0*`). A kind pattern is a glob.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Final

ANY: Final = "*"
FLEET: Final = "fleet"
_KEY: Final = re.compile(r"[a-z_]{1,32}")


def scope_pairs(scope: str) -> dict[str, str]:
    if scope == FLEET:
        return {}
    pairs: dict[str, str] = {}
    for part in scope.split(","):
        key, _, value = part.partition("=")
        pairs[key.strip()] = value.strip()
    return pairs


def scope_matches(pattern: str, scope: str) -> bool:
    if pattern == ANY:
        return True
    if pattern == FLEET:
        return scope == FLEET
    have = scope_pairs(scope)
    return all(
        key in have and fnmatchcase(have[key], glob) for key, glob in scope_pairs(pattern).items()
    )


def kind_matches(pattern: str, kind: str) -> bool:
    return fnmatchcase(kind, pattern)


def scope_problem(pattern: str) -> str | None:
    """Why `pattern` is not a scope pattern, or None."""
    if pattern in (ANY, FLEET):
        return None
    for part in pattern.split(","):
        key, sep, value = part.partition("=")
        if not sep or not _KEY.fullmatch(key.strip()) or not value.strip():
            return (
                f"scope {pattern!r} is not '*', 'fleet' or KIND=VALUE[,KIND=VALUE] "
                "(e.g. machine=spark02 or machine=spark0*,agent=codex)"
            )
    return None


def kind_problem(pattern: str) -> str | None:
    if not pattern or len(pattern) > 64 or any(c.isspace() for c in pattern):
        return f"kind {pattern!r} must be a name or a glob (e.g. budget, cache_*), no spaces"
    return None
