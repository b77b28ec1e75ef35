"""Data exposure across the whole suite (issue 6, scenario 16).

While the suite runs, this plugin keeps every response the tests receive (through httpx,
and through the raw-socket helpers that record themselves here), every log record at the
level production logs (INFO, with httpx and httpcore at WARNING as `lastseen` sets them),
and the output of the `lastseen` processes the tests start. It also learns the secrets as
they come into being: heartbeat tokens minted in the test process or read through
`/secrets`, channel secrets sealed or sent to `/channels`, envelope keys. At the end it
searches everything it kept for them, and for anything shaped like a personal access
token (their checksum makes that exact), and fails the session on a hit outside the
answers meant to carry a secret: `GET /monitors/{id}/secrets`, `POST /me/tokens` and the
first-run owner token that `lastseen serve` and `lastseen bootstrap` print once.

Wrapping is observation only: every wrapped function still runs and returns its result.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from typing import Any

HEX_TOKEN = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
MIN_SECRET = 12  # shorter channel secrets would match by accident


def _pat_shape() -> re.Pattern[str]:
    from control import pat

    return re.compile(rf"{pat.PREFIX}[0-9A-Za-z]{{{pat.LENGTH - len(pat.PREFIX)}}}")


# Answers meant to carry a secret: (method, path pattern).
CARRIERS = [
    ("GET", re.compile(r"/api/v1/monitors/[^/]+/secrets$")),
    ("POST", re.compile(r"/api/v1/me/tokens$")),
]


@dataclass(frozen=True)
class Leak:
    where: str
    kind: str
    secret: str

    def __str__(self) -> str:  # the report names a secret by its first characters only
        return f"{self.kind} {self.secret[:6]}… in {self.where}"


@dataclass
class Exposure:
    secrets: dict[str, str] = field(default_factory=dict)  # value -> kind
    texts: list[tuple[str, str, frozenset[str]]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def secret(self, kind: str, value: str) -> None:
        if not isinstance(value, str) or len(value) < MIN_SECRET:
            return
        origin = re.match(r"https?://[^/?#]*", value)
        if origin and len(value) - origin.end() < 8:
            return  # a URL's secret is its path and query: here too short to be one
        self.secrets.setdefault(value, kind)

    def text(self, where: str, kind: str, text: str, allowed: tuple[str, ...] = ()) -> None:
        """Keep `text` (a response, a log line, a process's output) for the final search;
        `allowed` are secrets this one text is meant to carry."""
        if text:
            self.texts.append((where, text, frozenset(allowed)))
            self.counts[kind] = self.counts.get(kind, 0) + 1

    def leaks(self) -> list[Leak]:
        found: list[Leak] = []
        pat_shape = _pat_shape()
        from control.pat import well_formed

        others = [(v, k) for v, k in self.secrets.items() if not HEX_TOKEN.fullmatch(v)]
        for where, text, allowed in self.texts:
            for m in HEX_TOKEN.finditer(text):
                kind = self.secrets.get(m.group())
                if kind is not None and m.group() not in allowed:
                    found.append(Leak(where, kind, m.group()))
            for m in pat_shape.finditer(text):
                if well_formed(m.group()) and m.group() not in allowed:
                    found.append(Leak(where, "personal access token", m.group()))
            for value, kind in others:
                if value in text and value not in allowed:
                    found.append(Leak(where, kind, value))
        return found


EXPOSURE = Exposure()


# -- what is learnt and kept while the suite runs ------------------------------------------


def _carrier(method: str, path: str) -> bool:
    return any(method == m and pattern.search(path) for m, pattern in CARRIERS)


def record_response(method: str, url: str, status: int, headers: Any, body: str) -> None:
    path = url.split("?", 1)[0]
    where = HEX_TOKEN.sub("<token>", f"{method} {path} -> {status}")  # the report is a log too
    text = f"{status}\n" + "".join(f"{k}: {v}\n" for k, v in headers) + "\n" + body
    allowed: tuple[str, ...] = ()
    if _carrier(method, path) and status < 300:
        tokens = tuple(HEX_TOKEN.findall(body))
        for token in tokens:
            EXPOSURE.secret("heartbeat token", token)
        allowed = tokens + tuple(_pat_shape().findall(body))
    EXPOSURE.text(where, "responses", text, allowed)


def record_request(method: str, path: str, body: bytes) -> None:
    """Channel secrets the tests send to `/channels`, learnt from the request."""
    if method not in ("POST", "PATCH") or "/api/v1/channels" not in path or not body:
        return
    try:
        doc = json.loads(body)
    except ValueError:
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        return
    from notifier.channels import CHANNELS

    kind = CHANNELS.get(str(doc.get("type")))
    for name in getattr(kind, "SECRET_FIELDS", ()):
        value = doc["config"].get(name)
        if isinstance(value, str):
            EXPOSURE.secret(f"channel secret ({name})", value)


class _LogCapture(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a broken record is the test's problem, not ours
            return
        EXPOSURE.text(f"log {record.name}", "log records", text)


def _wrap_httpx() -> None:
    import httpx

    def keep(request: httpx.Request, response: httpx.Response) -> None:
        record_request(request.method, request.url.path, request.content)
        try:
            body = response.text
        except httpx.ResponseNotRead:
            body = ""
        record_response(request.method, request.url.path, response.status_code,
                        response.headers.multi_items(), body)  # fmt: skip

    sync_send = httpx.Client.send
    async_send = httpx.AsyncClient.send

    @functools.wraps(sync_send)
    def send(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        response = sync_send(self, request, **kw)
        keep(request, response)
        return response

    @functools.wraps(async_send)
    async def asend(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        response = await async_send(self, request, **kw)
        keep(request, response)
        return response

    httpx.Client.send = send  # type: ignore[method-assign]
    httpx.AsyncClient.send = asend  # type: ignore[method-assign]


_WRAPPED: dict[Any, Any] = {}  # original -> wrapper


def _observe_secrets() -> None:
    from control import crypto
    from core import tokens

    original_new_token = tokens.new_token
    original_seal = crypto.seal
    original_init = crypto.Keyring.__post_init__

    @functools.wraps(original_new_token)
    def new_token() -> str:
        token = original_new_token()
        EXPOSURE.secret("heartbeat token", token)
        return token

    @functools.wraps(original_seal)
    def seal(keyring: Any, plaintext: bytes, *, purpose: str, **kw: Any) -> str:
        if purpose == "channel-secret":
            doc = json.loads(plaintext)
            for name, value in doc.items():
                EXPOSURE.secret(f"channel secret ({name})", value)
        elif purpose == "heartbeat-token":
            EXPOSURE.secret("heartbeat token", plaintext.decode())
        return original_seal(keyring, plaintext, purpose=purpose, **kw)

    def post_init(self: Any) -> None:
        original_init(self)
        for key in [*self.keys.values(), self.pat_key]:
            for form in (base64.urlsafe_b64encode(key).decode().rstrip("="),
                         base64.b64encode(key).decode().rstrip("="), key.hex()):  # fmt: skip
                EXPOSURE.secret("envelope key", form)

    tokens.new_token = new_token
    crypto.seal = seal
    crypto.Keyring.__post_init__ = post_init  # type: ignore[method-assign]
    _WRAPPED[original_new_token] = new_token
    _WRAPPED[original_seal] = seal


def rebind() -> None:
    """Point names imported with `from x import f` at the wrappers, too."""
    for module in list(sys.modules.values()):
        names = getattr(module, "__dict__", None)
        if not names:
            continue
        for name, value in list(names.items()):
            try:
                wrapper = _WRAPPED.get(value)
            except Exception:  # unhashable, or an __eq__ that refuses to compare
                continue
            if wrapper is not None and value is not wrapper:
                names[name] = wrapper


def install() -> None:
    handler = _LogCapture(logging.INFO)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    for name in ("httpx", "httpcore"):  # as `lastseen` configures them
        logging.getLogger(name).setLevel(logging.WARNING)
    _wrap_httpx()
    _observe_secrets()
    rebind()


_REPORT: dict[tuple[int, int], list[Leak]] = {}


def report() -> tuple[list[Leak], str]:
    """The leaks and a one-line summary (searched once per state of what was kept)."""
    state = (len(EXPOSURE.texts), len(EXPOSURE.secrets))
    if state not in _REPORT:
        _REPORT.clear()
        _REPORT[state] = EXPOSURE.leaks()
    leaks = _REPORT[state]
    kept = ", ".join(f"{n:,} {kind}" for kind, n in sorted(EXPOSURE.counts.items()))
    summary = (
        f"exposure: searched {kept or 'nothing'} for {len(EXPOSURE.secrets):,} secrets"
        f" and every personal-access-token shape: {len(leaks)} hit(s)"
    )
    return leaks, summary
