"""The ingest process's configuration, from the one settings seam (core.settings), with
units in the names; and the descriptor limit it needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from core.proxies import TrustedProxies
from core.settings import Settings, SettingsError

from .protocol import SECONDS, Limits
from .sight import SightConfig


@dataclass(frozen=True)
class IngestConfig:
    """Everything the ingest process can be told; units are in the names."""

    database_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9108
    flush_interval: float = 1 * SECONDS
    poll_interval: float = 5 * SECONDS
    db_timeout: float = 5 * SECONDS
    shutdown_grace: float = 2 * SECONDS
    # How long a shard's lease lasts unrenewed: a dead process's shards are taken after
    # this and one step (a quarter of it); renewed every quarter.
    lease: float = 8 * SECONDS
    # How often last-seen times are written (the seen log, core/seenlog.py); 0: at every
    # flush, into monitor_state (the write per ping the seen log replaced).
    seen_interval: float = 10 * SECONDS
    limits: Limits = field(default_factory=Limits)
    # Check-ins kept per monitor in the ping history (ingest/checkins.py).
    ping_history: int = 100
    ping_history_plain: bool = False  # plain success pings in it too
    # Blindness (ingest/sight.py): how misses are held, and when it is declared.
    sight: SightConfig = field(default_factory=SightConfig)
    # The control process, for everything that is not a heartbeat (None: 404 instead).
    upstream: tuple[str, int] | None = None
    # LASTSEEN_TRUSTED_PROXIES: whose X-Forwarded-* to believe, who may hold many connections.
    trusted_proxies: TrustedProxies = field(default_factory=lambda: Settings().trusted_proxies)
    # Share the listening port with the host's other ingest processes (SO_REUSEPORT).
    reuse_port: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> IngestConfig:
        """From the process's configuration; `overrides` (e.g. from the command line) win."""
        host, port = settings.ingest_listen
        admin_host, admin_port = settings.admin_listen
        limits: dict[str, Any] = dict(settings.limits)
        values: dict[str, Any] = {
            "host": host, "port": port, "admin_host": admin_host, "admin_port": admin_port,
            "flush_interval": settings.flush_interval,
            "poll_interval": settings.poll_interval,
            "lease": settings.lease,
            "seen_interval": settings.seen_interval,
            "db_timeout": settings.ingest_db_timeout,
            "ping_history": settings.ping_history,
            "ping_history_plain": settings.ping_history_plain,
            "sight": SightConfig(
                settings.blind_window, settings.blind_ratio, settings.blind_min_late
            ),
            "limits": replace(Limits(), **limits),
            "upstream": settings.control_upstream,
            "trusted_proxies": settings.trusted_proxies,
        }  # fmt: skip
        if settings.database_url:
            values["database_url"] = settings.database_url
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "database_url" not in values:
            raise SettingsError("no database: set LASTSEEN_DATABASE_URL")
        return cls(**values)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> IngestConfig:
        return cls.from_settings(Settings.from_env(env), **overrides)


def raise_fd_limit(wanted: int) -> None:
    """Raise RLIMIT_NOFILE towards `wanted` so the connection cap, not EMFILE, decides."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
