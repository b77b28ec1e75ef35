"""The one place every process reads its configuration: the LASTSEEN_* variables.

``Settings.from_env()`` reads every variable once, checks it, and fails with a
``SettingsError`` that names the variable and what it allows (the command line prints it
in one line and stops; no traceback, no restart loop). Each process takes what it needs
from the one object: the ingest its listener and limits, the control process its quotas
and limits, the worker and the control process the channels' settings. A variable
nobody reads is not defined here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .proxies import DEFAULT as DEFAULT_PROXIES
from .proxies import TrustedProxies

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")


class SettingsError(ValueError):
    """A variable's value is not allowed; the message names it and says what is."""


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value else None


def address(env: Mapping[str, str], name: str, default: str) -> tuple[str, int]:
    return parse_address(_text(env, name) or default, name)


def parse_address(value: str, name: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets): e.g. 127.0.0.1:8080 or [::1]:8080; `name` is where
    the value came from (a variable, an option), for the error."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise SettingsError(f"{name} must be HOST:PORT (e.g. 127.0.0.1:8080), not {value!r}")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise SettingsError(f"{name}: the port must be 0 to 65535, not {port!r}")
    return host.strip("[]"), number


def whole(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    value = _text(env, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {number}")
    return number


def seconds(env: Mapping[str, str], name: str, default: float, *, off: bool = False) -> float:
    """A positive number of seconds; with `off`, 0 too (whatever it is, switched off)."""
    value = _text(env, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {value!r}") from None
    if off and number == 0:
        return 0.0
    if not number > 0 or number == float("inf"):
        allowed = "a positive number of seconds" + (" or 0 (off)" if off else "")
        raise SettingsError(f"{name} must be {allowed}, not {value!r}")
    return number


def fraction(env: Mapping[str, str], name: str, default: float) -> float:
    """A share: more than 0, at most 1."""
    value = _text(env, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number <= 1:
        raise SettingsError(f"{name} must be a share above 0 and at most 1, not {value!r}")
    return number


def flag(env: Mapping[str, str], name: str) -> bool:
    value = (env.get(name) or "").strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise SettingsError(f"{name} must be 1 or 0 (true/false, yes/no), not {value!r}")


@dataclass(frozen=True)
class Settings:
    # Where the data is.
    database_url: str | None = None  # LASTSEEN_DATABASE_URL; None: the embedded one
    data_dir: Path = Path("./var")  # LASTSEEN_DATA_DIR
    keyring: str | None = field(default=None, repr=False)  # LASTSEEN_KEYRING (a secret)
    log_level: str = "INFO"  # LASTSEEN_LOG_LEVEL
    # Where each process listens, and who is in front.
    ingest_listen: tuple[str, int] = ("127.0.0.1", 8080)  # LASTSEEN_INGEST_LISTEN
    admin_listen: tuple[str, int] = ("127.0.0.1", 9108)  # LASTSEEN_ADMIN_LISTEN
    control_listen: tuple[str, int] = ("127.0.0.1", 8081)  # LASTSEEN_CONTROL_LISTEN
    control_upstream: tuple[str, int] | None = None  # LASTSEEN_CONTROL_UPSTREAM
    public_url: str | None = None  # LASTSEEN_PUBLIC_URL; None: http://<ingest_listen>
    trusted_proxies: TrustedProxies = field(
        default_factory=lambda: TrustedProxies.parse(DEFAULT_PROXIES)
    )
    # The ingest.
    flush_interval: float = 1.0  # LASTSEEN_FLUSH_INTERVAL_SECONDS
    poll_interval: float = 5.0  # LASTSEEN_POLL_INTERVAL_SECONDS
    lease: float = 8.0  # LASTSEEN_LEASE_SECONDS
    # How often last-seen times go to the database (the seen log); 0: at every flush.
    seen_interval: float = 10.0  # LASTSEEN_SEEN_SECONDS
    db_timeout: float = 5.0  # LASTSEEN_DB_TIMEOUT_SECONDS
    # Check-ins (ingest/checkins.py): rows of ping history kept per monitor.
    ping_history: int = 100  # LASTSEEN_PING_HISTORY
    # Plain success pings in the history too: a row per heartbeat (off: the seen log's
    # diet; on: every ping recorded, as healthchecks does, at its cost in WAL).
    ping_history_plain: bool = False  # LASTSEEN_PING_HISTORY_PLAIN
    # Blindness (ingest/sight.py): misses are held this many seconds to tell "the fleet
    # stopped" from "we stopped hearing it" (0: off, alerts at the deadline, to the
    # second); blind when at least min_late monitors are late at once and they are at
    # least `ratio` of those late plus the pings on time for the same seconds.
    blind_window: int = 10  # LASTSEEN_BLIND_WINDOW_SECONDS
    blind_ratio: float = 0.8  # LASTSEEN_BLIND_RATIO
    blind_min_late: int = 50  # LASTSEEN_BLIND_MIN_LATE
    # Connection limits of the ingest's listener (only those set; the rest its defaults).
    limits: Mapping[str, float] = field(default_factory=dict)
    # The control process.
    auth_failures_per_hour: int = 20  # LASTSEEN_AUTH_FAILURES_PER_HOUR
    subscribe_per_ip_per_hour: int = 10  # LASTSEEN_SUBSCRIBE_PER_IP_PER_HOUR
    max_monitors_per_org: int = 1_000_000  # LASTSEEN_MAX_MONITORS_PER_ORG
    max_channels_per_org: int = 1_000  # LASTSEEN_MAX_CHANNELS_PER_ORG
    max_status_pages_per_org: int = 1_000  # LASTSEEN_MAX_STATUS_PAGES_PER_ORG
    max_tokens_per_user: int = 100  # LASTSEEN_MAX_TOKENS_PER_USER
    # Alert delivery (the control process's test alerts and the worker).
    smtp_url: str | None = field(default=None, repr=False)  # LASTSEEN_SMTP_URL (a secret)
    smtp_from: str = "lastseen@localhost"  # LASTSEEN_SMTP_FROM
    telegram_api: str = "https://api.telegram.org"  # LASTSEEN_TELEGRAM_API
    allow_private_targets: bool = False  # LASTSEEN_ALLOW_PRIVATE_TARGETS
    # Retention, run by the worker (control/retention.py), in days.
    retain_events_days: int = 90  # LASTSEEN_RETAIN_EVENTS_DAYS
    retain_notifications_days: int = 30  # LASTSEEN_RETAIN_NOTIFICATIONS_DAYS
    retain_pings_days: int = 90  # LASTSEEN_RETAIN_PINGS_DAYS
    retain_audit_days: int = 400  # LASTSEEN_RETAIN_AUDIT_DAYS (at least 365)

    def effective(self) -> list[tuple[str, str]]:
        """Every setting and its value as this process uses it, secrets masked (the
        keyring, the SMTP URL, a database URL's password): for `lastseen config`."""
        out = []
        for f in fields(self):
            value: Any = getattr(self, f.name)
            if not f.repr and value is not None:
                shown = "(set, not shown)"
            elif f.name == "database_url" and value:
                parts = urlsplit(value)
                if parts.password:
                    host = parts.netloc.rsplit("@", 1)[1]
                    value = urlunsplit(parts._replace(netloc=f"{parts.username}:****@{host}"))
                shown = str(value)
            elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
                shown = f"{value[0]}:{value[1]}"
            elif isinstance(value, TrustedProxies):
                shown = ", ".join(str(n) for n in value.networks) or "(none)"
            elif isinstance(value, Mapping):
                shown = ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "(defaults)"
            else:
                shown = "(unset)" if value is None else str(value)
            out.append((f.name, shown))
        return out

    @property
    def public_origin(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = self.ingest_listen
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        level = (env.get("LASTSEEN_LOG_LEVEL") or "INFO").upper()
        if level not in LOG_LEVELS:
            raise SettingsError(f"LASTSEEN_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        try:
            proxies = TrustedProxies.from_env(env)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        upstream = address(env, "LASTSEEN_CONTROL_UPSTREAM", "") if _text(
            env, "LASTSEEN_CONTROL_UPSTREAM") else None  # fmt: skip
        # LASTSEEN_LISTEN: what `serve` read before LASTSEEN_INGEST_LISTEN; still accepted.
        listen_name = "LASTSEEN_INGEST_LISTEN" if _text(env, "LASTSEEN_INGEST_LISTEN") else (
            "LASTSEEN_LISTEN")  # fmt: skip
        limits: dict[str, float] = {}
        for key, name in LIMIT_WHOLES.items():
            if _text(env, name) is not None:
                limits[key] = whole(env, name, 0)
        for key, name in LIMIT_SECONDS.items():
            if _text(env, name) is not None:
                limits[key] = seconds(env, name, 0.0)
        return cls(
            database_url=_text(env, "LASTSEEN_DATABASE_URL"),
            data_dir=Path(_text(env, "LASTSEEN_DATA_DIR") or "./var"),
            keyring=_text(env, "LASTSEEN_KEYRING"),
            log_level=level,
            ingest_listen=address(env, listen_name, "127.0.0.1:8080"),
            admin_listen=address(env, "LASTSEEN_ADMIN_LISTEN", "127.0.0.1:9108"),
            control_listen=address(env, "LASTSEEN_CONTROL_LISTEN", "127.0.0.1:8081"),
            control_upstream=upstream,
            public_url=_text(env, "LASTSEEN_PUBLIC_URL"),
            trusted_proxies=proxies,
            flush_interval=seconds(env, "LASTSEEN_FLUSH_INTERVAL_SECONDS", 1.0),
            poll_interval=seconds(env, "LASTSEEN_POLL_INTERVAL_SECONDS", 5.0),
            lease=seconds(env, "LASTSEEN_LEASE_SECONDS", 8.0),
            seen_interval=seconds(env, "LASTSEEN_SEEN_SECONDS", 10.0, off=True),
            db_timeout=seconds(env, "LASTSEEN_DB_TIMEOUT_SECONDS", 5.0),
            ping_history=whole(env, "LASTSEEN_PING_HISTORY", 100),
            ping_history_plain=flag(env, "LASTSEEN_PING_HISTORY_PLAIN"),
            blind_window=_window(env),
            blind_ratio=fraction(env, "LASTSEEN_BLIND_RATIO", 0.8),
            blind_min_late=whole(env, "LASTSEEN_BLIND_MIN_LATE", 50),
            limits=limits,
            auth_failures_per_hour=whole(env, "LASTSEEN_AUTH_FAILURES_PER_HOUR", 20),
            subscribe_per_ip_per_hour=whole(env, "LASTSEEN_SUBSCRIBE_PER_IP_PER_HOUR", 10),
            max_monitors_per_org=whole(env, "LASTSEEN_MAX_MONITORS_PER_ORG", 1_000_000),
            max_channels_per_org=whole(env, "LASTSEEN_MAX_CHANNELS_PER_ORG", 1_000),
            max_status_pages_per_org=whole(env, "LASTSEEN_MAX_STATUS_PAGES_PER_ORG", 1_000),
            max_tokens_per_user=whole(env, "LASTSEEN_MAX_TOKENS_PER_USER", 100),
            smtp_url=_text(env, "LASTSEEN_SMTP_URL"),
            smtp_from=_text(env, "LASTSEEN_SMTP_FROM") or "lastseen@localhost",
            telegram_api=(_text(env, "LASTSEEN_TELEGRAM_API") or "https://api.telegram.org").rstrip(
                "/"
            ),
            allow_private_targets=flag(env, "LASTSEEN_ALLOW_PRIVATE_TARGETS"),
            retain_events_days=whole(env, "LASTSEEN_RETAIN_EVENTS_DAYS", 90),
            retain_notifications_days=whole(env, "LASTSEEN_RETAIN_NOTIFICATIONS_DAYS", 30),
            retain_pings_days=whole(env, "LASTSEEN_RETAIN_PINGS_DAYS", 90),
            retain_audit_days=whole(env, "LASTSEEN_RETAIN_AUDIT_DAYS", 400, minimum=365),
        )


def _window(env: Mapping[str, str]) -> int:
    name = "LASTSEEN_BLIND_WINDOW_SECONDS"
    window = whole(env, name, 10, minimum=0)
    if window > 600:
        raise SettingsError(f"{name} must be 0 (off) to 600 seconds, not {window}")
    return window


# Which process reads each variable (the README's "read by" column, checked by
# tests/core/test_settings.py: the ingest's and the channels' reads are recorded there).
# `serve` reads them all and passes them on to the processes it runs.
EVERY = "every process"
INGEST = "ingest"
CONTROL = "control"
WORKER = "worker"
READ_BY: dict[str, str] = {
    "LASTSEEN_DATABASE_URL": EVERY, "LASTSEEN_DATA_DIR": EVERY, "LASTSEEN_LOG_LEVEL": EVERY,
    "LASTSEEN_KEYRING": "control, worker", "LASTSEEN_INGEST_LISTEN": "ingest, control, worker",
    "LASTSEEN_ADMIN_LISTEN": INGEST, "LASTSEEN_CONTROL_LISTEN": CONTROL,
    "LASTSEEN_CONTROL_UPSTREAM": INGEST, "LASTSEEN_PUBLIC_URL": "control, worker",
    "LASTSEEN_TRUSTED_PROXIES": "ingest, control",
    "LASTSEEN_FLUSH_INTERVAL_SECONDS": INGEST, "LASTSEEN_POLL_INTERVAL_SECONDS": INGEST,
    "LASTSEEN_LEASE_SECONDS": "ingest, control", "LASTSEEN_SEEN_SECONDS": INGEST,
    "LASTSEEN_DB_TIMEOUT_SECONDS": INGEST, "LASTSEEN_PING_HISTORY": INGEST,
    "LASTSEEN_PING_HISTORY_PLAIN": INGEST, "LASTSEEN_BLIND_WINDOW_SECONDS": INGEST,
    "LASTSEEN_BLIND_RATIO": INGEST, "LASTSEEN_BLIND_MIN_LATE": INGEST,
    "LASTSEEN_MAX_CONNECTIONS": INGEST, "LASTSEEN_MAX_CONNECTIONS_PER_ADDRESS": INGEST,
    "LASTSEEN_MAX_REQUESTS_PER_CONNECTION": INGEST, "LASTSEEN_MAX_HEAD_BYTES": INGEST,
    "LASTSEEN_MAX_BODY_BYTES": INGEST, "LASTSEEN_HEAD_TIMEOUT_SECONDS": INGEST,
    "LASTSEEN_BODY_TIMEOUT_SECONDS": INGEST, "LASTSEEN_KEEPALIVE_TIMEOUT_SECONDS": INGEST,
    "LASTSEEN_AUTH_FAILURES_PER_HOUR": CONTROL, "LASTSEEN_SUBSCRIBE_PER_IP_PER_HOUR": CONTROL,
    "LASTSEEN_MAX_MONITORS_PER_ORG": CONTROL, "LASTSEEN_MAX_CHANNELS_PER_ORG": CONTROL,
    "LASTSEEN_MAX_STATUS_PAGES_PER_ORG": CONTROL, "LASTSEEN_MAX_TOKENS_PER_USER": CONTROL,
    "LASTSEEN_SMTP_URL": "control, worker", "LASTSEEN_SMTP_FROM": "control, worker",
    "LASTSEEN_TELEGRAM_API": "control, worker", "LASTSEEN_ALLOW_PRIVATE_TARGETS": "control, worker",
    "LASTSEEN_RETAIN_EVENTS_DAYS": WORKER, "LASTSEEN_RETAIN_NOTIFICATIONS_DAYS": WORKER,
    "LASTSEEN_RETAIN_PINGS_DAYS": WORKER, "LASTSEEN_RETAIN_AUDIT_DAYS": WORKER,
}  # fmt: skip

# The ingest listener's limits (ingest.protocol.Limits field -> variable).
LIMIT_WHOLES = {
    "max_connections": "LASTSEEN_MAX_CONNECTIONS",
    "max_connections_per_address": "LASTSEEN_MAX_CONNECTIONS_PER_ADDRESS",
    "max_requests_per_connection": "LASTSEEN_MAX_REQUESTS_PER_CONNECTION",
    "max_head_bytes": "LASTSEEN_MAX_HEAD_BYTES",
    "max_body_bytes": "LASTSEEN_MAX_BODY_BYTES",
}
LIMIT_SECONDS = {
    "head_timeout": "LASTSEEN_HEAD_TIMEOUT_SECONDS",
    "body_timeout": "LASTSEEN_BODY_TIMEOUT_SECONDS",
    "keepalive_timeout": "LASTSEEN_KEEPALIVE_TIMEOUT_SECONDS",
}
