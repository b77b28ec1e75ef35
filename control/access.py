"""Roles and scopes: what a request may do is what both its user's role and its token allow.

A token holds scopes (``*`` = everything its user's role allows). A token can mint only
tokens with scopes it effectively has, so no token ever grants more than its creator.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

# Every scope a token may name (the API's schema says the same: control/models.py).
Scope = Literal[
    "monitors:read", "monitors:write", "secrets:read", "tokens:write", "channels:read",
    "channels:write", "incidents:read", "audit:read", "status-pages:write", "pings:read",
    "*",
]  # fmt: skip
WILDCARD = "*"
SCOPES: tuple[str, ...] = tuple(s for s in get_args(Scope) if s != WILDCARD)
ROLES = ("owner", "admin", "member", "viewer")

_READ = {"monitors:read", "channels:read", "incidents:read", "tokens:write"}
# Check-ins carry job output (ping bodies): members read them, viewers do not.
_WRITE = _READ | {"monitors:write", "channels:write", "status-pages:write", "pings:read"}
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "owner": frozenset(SCOPES),
    "admin": frozenset(SCOPES),
    "member": frozenset(_WRITE),
    "viewer": frozenset(_READ),
}


def effective(role: str, token_scopes: Iterable[str]) -> frozenset[str]:
    """The scopes a token really has: its own, within its user's role."""
    allowed = ROLE_SCOPES.get(role, frozenset())
    scopes = set(token_scopes)
    if WILDCARD in scopes:
        return allowed
    return allowed & scopes


def allows(role: str, token_scopes: Iterable[str], needed: str) -> bool:
    return needed in effective(role, token_scopes)


def unknown_scopes(requested: Iterable[str]) -> list[str]:
    return sorted(set(requested) - set(SCOPES) - {WILDCARD})


def can_mint(role: str, token_scopes: Iterable[str], requested: Iterable[str]) -> bool:
    """May a token with `token_scopes` create one with `requested`?"""
    requested = set(requested)
    mine = set(token_scopes)
    if WILDCARD in requested:
        return WILDCARD in mine
    return requested <= effective(role, mine)
