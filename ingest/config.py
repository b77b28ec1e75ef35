"""The ingest process's configuration: the LASTSEEN_* variables it reads, with their units
in the names, and the descriptor limit it needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from core.proxies import TrustedProxies

from .protocol import SECONDS, Limits


def parse_address(value: str, default_port: int) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host:
        return value, default_port
    return host.strip("[]"), int(port)


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
    limits: Limits = field(default_factory=Limits)
    # The control process, for everything that is not a heartbeat (None: 404 instead).
    upstream: tuple[str, int] | None = None
    # LASTSEEN_TRUSTED_PROXIES: whose X-Forwarded-* to believe, who may hold many connections.
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies.from_env)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> IngestConfig:
        """Read LASTSEEN_* variables; `overrides` (e.g. from the command line) win."""
        values: dict[str, Any] = {}
        if "LASTSEEN_DATABASE_URL" in env:
            values["database_url"] = env["LASTSEEN_DATABASE_URL"]
        if "LASTSEEN_INGEST_LISTEN" in env:
            values["host"], values["port"] = parse_address(env["LASTSEEN_INGEST_LISTEN"], 8080)
        values["trusted_proxies"] = TrustedProxies.from_env(env)
        if env.get("LASTSEEN_CONTROL_UPSTREAM"):
            values["upstream"] = parse_address(env["LASTSEEN_CONTROL_UPSTREAM"], 8081)
        if "LASTSEEN_ADMIN_LISTEN" in env:
            values["admin_host"], values["admin_port"] = parse_address(
                env["LASTSEEN_ADMIN_LISTEN"], 9108
            )
        for name, var in [
            ("flush_interval", "LASTSEEN_FLUSH_INTERVAL_SECONDS"),
            ("poll_interval", "LASTSEEN_POLL_INTERVAL_SECONDS"),
            ("db_timeout", "LASTSEEN_DB_TIMEOUT_SECONDS"),
        ]:
            if var in env:
                values[name] = float(env[var])
        limit_values: dict[str, Any] = {}
        for name, var in [
            ("max_connections", "LASTSEEN_MAX_CONNECTIONS"),
            ("max_connections_per_address", "LASTSEEN_MAX_CONNECTIONS_PER_ADDRESS"),
            ("max_requests_per_connection", "LASTSEEN_MAX_REQUESTS_PER_CONNECTION"),
            ("max_head_bytes", "LASTSEEN_MAX_HEAD_BYTES"),
            ("max_body_bytes", "LASTSEEN_MAX_BODY_BYTES"),
        ]:
            if var in env:
                limit_values[name] = int(env[var])
        for name, var in [
            ("head_timeout", "LASTSEEN_HEAD_TIMEOUT_SECONDS"),
            ("body_timeout", "LASTSEEN_BODY_TIMEOUT_SECONDS"),
            ("keepalive_timeout", "LASTSEEN_KEEPALIVE_TIMEOUT_SECONDS"),
        ]:
            if var in env:
                limit_values[name] = float(env[var])
        values["limits"] = replace(Limits(), **limit_values)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "database_url" not in values:
            raise ValueError("no database: set LASTSEEN_DATABASE_URL")
        return cls(**values)


def raise_fd_limit(wanted: int) -> None:
    """Raise RLIMIT_NOFILE towards `wanted` so the connection cap, not EMFILE, decides."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
