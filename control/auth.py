"""Who is calling: bearer PAT -> token, user, organisation; and what they may do.

A malformed token (shape or checksum) is refused before any query. A well-formed one is
looked up by its keyed hash; expired and revoked tokens are refused like unknown ones.
``last_used_at`` is written at most once a minute per token. Every refusal from one
address counts; past 20 in an hour that address gets 429 until the hour has passed.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import asyncpg

from . import access, pat
from .errors import ApiError

MAX_FAILURES = 20
FAILURE_WINDOW_SECONDS = 3600.0


@dataclass(frozen=True)
class Caller:
    token_id: int
    token_name: str
    scopes: tuple[str, ...]
    user_id: int
    email: str
    role: str
    org_id: int
    org_name: str
    plan: str

    def allows(self, scope: str) -> bool:
        return access.allows(self.role, self.scopes, scope)

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise ApiError(403, "forbidden", f"this needs the {scope} scope and a role that has it")


class FailureLimiter:
    """Failed authentications per client address, over a sliding hour."""

    def __init__(self, limit: int = MAX_FAILURES, window: float = FAILURE_WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.setdefault(address, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def check(self, address: str) -> None:
        recent = self._recent(address, time.monotonic())
        if not recent:
            del self._failures[address]  # forget addresses with nothing recent
        elif len(recent) >= self.limit:
            raise ApiError(429, "too_many_failures", "too many failed authentications; wait")

    def fail(self, address: str) -> None:
        self._recent(address, time.monotonic()).append(time.monotonic())


_LOOKUP = """
SELECT t.id, t.name, t.scopes, t.last_used_at < now() - interval '1 minute' AS stale,
       t.last_used_at IS NULL AS never_used,
       u.id AS user_id, u.email, u.role, o.id AS org_id, o.name AS org_name, o.plan
FROM access_tokens t JOIN users u ON u.id = t.user_id JOIN orgs o ON o.id = t.org_id
WHERE t.token_hash = $1 AND t.revoked_at IS NULL
  AND (t.expires_at IS NULL OR t.expires_at > now())
"""


async def authenticate(
    pool: asyncpg.Pool,
    pat_key: bytes,
    limiter: FailureLimiter,
    authorization: str | None,
    address: str,
) -> Caller:
    limiter.check(address)
    if not authorization or not authorization.startswith("Bearer "):
        limiter.fail(address)
        raise ApiError(401, "unauthenticated", "send Authorization: Bearer <personal access token>")
    token = authorization[len("Bearer ") :].strip()
    if not pat.well_formed(token):
        limiter.fail(address)
        raise ApiError(401, "unauthenticated", "the access token is malformed")
    row = await pool.fetchrow(_LOOKUP, pat.token_hash(pat_key, token))
    if row is None:
        limiter.fail(address)
        raise ApiError(401, "unauthenticated", "the access token is unknown, expired or revoked")
    if row["stale"] or row["never_used"]:
        await pool.execute("UPDATE access_tokens SET last_used_at = now() WHERE id = $1", row["id"])
    return Caller(
        token_id=row["id"],
        token_name=row["name"],
        scopes=tuple(row["scopes"]),
        user_id=row["user_id"],
        email=row["email"],
        role=row["role"],
        org_id=row["org_id"],
        org_name=row["org_name"],
        plan=row["plan"],
    )
