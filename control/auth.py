"""Who is calling: bearer PAT -> token, user, organisation; and what they may do.

A malformed token (shape or checksum) is refused before any query. A well-formed one is
looked up by its keyed hash; expired and revoked tokens are refused like unknown ones.
``last_used_at`` is written at most once a minute per token.

Failed authentications count twice: per client address (an IPv6 client by its /64, the
block one host holds) and per token presented. Past 20 in an hour, that address's
failures and that token are answered 429 instead of 401; a valid token is never refused
for failures that are not its own (a colleague's stale dashboard tab with a revoked token
on the same network does not lock anyone else out). The counts live in a ``Limiter``
whose memory is bounded: the least recently seen keys are forgotten first.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from core.proxies import normalise

from . import access, pat
from .errors import ApiError

MAX_FAILURES = 20
FAILURE_WINDOW_SECONDS = 3600.0
MAX_KEYS = 50_000  # about 10 MB at most
TOO_MANY = ApiError(429, "too_many_failures", "too many failed authentications; wait")


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


class Limiter:
    """At most `limit` events per key in a fixed window of `window` seconds, for at most
    `max_keys` keys (the least recently counted are forgotten first, so a flood of one-off
    addresses costs bounded memory)."""

    def __init__(
        self,
        limit: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW_SECONDS,
        *,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> start, n

    def __len__(self) -> int:
        return len(self._counts)

    def _current(self, key: str, now: float) -> int:
        entry = self._counts.get(key)
        if entry is None:
            return 0
        if now - entry[0] >= self.window:
            del self._counts[key]
            return 0
        return entry[1]

    def exceeded(self, key: str, limit: int | None = None) -> bool:
        """Has `key` had `limit` (default: the limiter's) events in its current window?"""
        return self._current(key, self.clock()) >= (self.limit if limit is None else limit)

    def count(self, key: str) -> None:
        now = self.clock()
        n = self._current(key, now)
        start = self._counts[key][0] if n else now
        self._counts[key] = (start, n + 1)
        self._counts.move_to_end(key)
        while len(self._counts) > self.max_keys:
            self._counts.popitem(last=False)


def address_key(address: str) -> str:
    """What counts as one client: its IPv4 address, or its IPv6 /64."""
    text = normalise(address)
    if text is None:
        return address
    ip = ipaddress.ip_address(text)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return text


def _token_key(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]


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
    limiter: Limiter,
    authorization: str | None,
    address: str,
) -> Caller:
    client = "address:" + address_key(address)

    def refuse(message: str, *keys: str) -> ApiError:
        over = any(limiter.exceeded(k) for k in keys)
        for key in keys:
            limiter.count(key)
        return TOO_MANY if over else ApiError(401, "unauthenticated", message)

    if not authorization or not authorization.startswith("Bearer "):
        raise refuse("send Authorization: Bearer <personal access token>", client)
    token = authorization[len("Bearer ") :].strip()
    if not pat.well_formed(token):
        raise refuse("the access token is malformed", client)
    token_key = _token_key(token)
    if limiter.exceeded(token_key):
        raise TOO_MANY  # this very token failed too often: no need to ask the database
    row = await pool.fetchrow(_LOOKUP, pat.token_hash(pat_key, token))
    if row is None:
        raise refuse("the access token is unknown, expired or revoked", client, token_key)
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
