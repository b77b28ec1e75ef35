"""The one place every process reads its configuration: the LASTSEEN_* variables.

``Settings`` is a pydantic-settings model: one typed field per variable, its name in
``validation_alias``, its default, and the check its value must pass. ``Settings.from_env()``
reads them once and fails with a ``SettingsError`` that names the variable and what it
allows (the command line prints it in one line and stops; no traceback, no restart loop).
Each process takes what it needs from the one object: the ingest its listener and limits,
the control process its quotas and limits, the worker and the control process the
channels' settings. A variable nobody reads is not defined here; an unset or empty one
takes its default.

``Settings()`` alone reads nothing (only the arguments it is given): the environment is
read where a process starts, through ``from_env``, so that a test's settings never depend
on the shell that runs it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .proxies import DEFAULT as DEFAULT_PROXIES
from .proxies import VARIABLE as PROXIES_VARIABLE
from .proxies import TrustedProxies

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")


class SettingsError(ValueError):
    """A variable's value is not allowed; the message names it and says what is."""


class _Bad(ValueError):
    """What a value's check says after the variable's name ("must be ...", ": the ...")."""


def parse_address(value: str, name: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets): e.g. 127.0.0.1:8080 or [::1]:8080; `name` is where
    the value came from (a variable, an option), for the error."""
    try:
        return _address(value)
    except _Bad as exc:
        raise SettingsError(f"{name}{exc}") from None


def _address(value: Any) -> tuple[str, int]:
    if isinstance(value, tuple):
        return value
    host, sep, port = str(value).rpartition(":")
    if not sep or not host:
        raise _Bad(f" must be HOST:PORT (e.g. 127.0.0.1:8080), not {value!r}")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise _Bad(f": the port must be 0 to 65535, not {port!r}")
    return host.strip("[]"), number


def _whole(minimum: int = 1, maximum: int | None = None, allowed: str = "") -> BeforeValidator:
    def check(value: Any) -> Any:
        if value is None or isinstance(value, int):
            return value
        try:
            number = int(value)
        except ValueError:
            raise _Bad(f" must be a whole number, not {value!r}") from None
        if number < minimum:
            raise _Bad(f" must be {allowed or f'at least {minimum}'}, not {number}")
        if maximum is not None and number > maximum:
            raise _Bad(f" must be {allowed}, not {number}")
        return number

    return BeforeValidator(check)


def _seconds(off: bool = False) -> BeforeValidator:
    """A positive number of seconds; with `off`, 0 too (whatever it is, switched off)."""

    def check(value: Any) -> Any:
        if value is None or not isinstance(value, str):
            return value
        try:
            number = float(value)
        except ValueError:
            raise _Bad(f" must be a number of seconds, not {value!r}") from None
        if off and number == 0:
            return 0.0
        if not number > 0 or number == float("inf"):
            allowed = "a positive number of seconds" + (" or 0 (off)" if off else "")
            raise _Bad(f" must be {allowed}, not {value!r}")
        return number

    return BeforeValidator(check)


def _share(value: Any) -> Any:
    """A share: more than 0, at most 1."""
    if not isinstance(value, str):
        return value
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number <= 1:
        raise _Bad(f" must be a share above 0 and at most 1, not {value!r}")
    return number


def _flag(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    said = value.strip().lower()
    if said in TRUE or said in FALSE:
        return said in TRUE
    raise _Bad(f" must be 1 or 0 (true/false, yes/no), not {said!r}")


def _level(value: Any) -> Any:
    level = str(value).upper()
    if level not in LOG_LEVELS:
        raise _Bad(f" must be one of {', '.join(LOG_LEVELS)}")
    return level


def _proxies(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return TrustedProxies.parse(value)
    except ValueError as exc:  # it names the variable itself
        raise _Bad(str(exc).removeprefix(PROXIES_VARIABLE)) from None


Whole = Annotated[int, _whole()]
Seconds = Annotated[float, _seconds()]
# NoDecode: a value is text to check here, never JSON for pydantic-settings to decode.
Address = Annotated[tuple[str, int], NoDecode, BeforeValidator(_address)]
Flag = Annotated[bool, BeforeValidator(_flag)]


def _var(name: str, *older: str) -> Any:
    """The variable a field is read from (and older names still accepted, in order)."""
    return AliasChoices(name, *older) if older else name


# Which process reads each variable (each field's `read_by`: the README's "read by"
# column, held by tests/core/test_settings.py to what the ingest's configuration and the
# channels' settings are made of).
# `serve` reads them all and passes them on to the processes it runs.
EVERY = "every process"
INGEST = "ingest"
CONTROL = "control"
WORKER = "worker"
BOTH = "control, worker"


def _setting(default: Any, name: str, read_by: str, *older: str, secret: bool = False) -> Any:
    return Field(
        default,
        validation_alias=_var(name, *older),
        repr=not secret,
        json_schema_extra={"variable": name, "read_by": read_by},
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",  # a misspelt field is an error, not a default
        case_sensitive=True,
        populate_by_name=True,
        validate_default=False,  # the defaults below are what is allowed, by definition
        arbitrary_types_allowed=True,
    )

    # Where the data is.
    database_url: str | None = _setting(None, "LASTSEEN_DATABASE_URL", EVERY)  # None: embedded
    data_dir: Path = _setting(Path("./var"), "LASTSEEN_DATA_DIR", EVERY)
    keyring: str | None = _setting(None, "LASTSEEN_KEYRING", BOTH, secret=True)
    log_level: Annotated[str, BeforeValidator(_level)] = _setting(
        "INFO", "LASTSEEN_LOG_LEVEL", EVERY
    )
    # Where each process listens, and who is in front. LASTSEEN_LISTEN: what `serve`
    # read before LASTSEEN_INGEST_LISTEN; still accepted.
    ingest_listen: Address = _setting(
        ("127.0.0.1", 8080), "LASTSEEN_INGEST_LISTEN", "ingest, control, worker", "LASTSEEN_LISTEN"
    )
    admin_listen: Address = _setting(("127.0.0.1", 9108), "LASTSEEN_ADMIN_LISTEN", INGEST)
    # None: 127.0.0.1:9107 for `lastseen worker`; under `serve`, the port after the
    # ingest processes' admin ports.
    worker_admin_listen: Address | None = _setting(None, "LASTSEEN_WORKER_ADMIN_LISTEN", WORKER)
    control_listen: Address = _setting(("127.0.0.1", 8081), "LASTSEEN_CONTROL_LISTEN", CONTROL)
    control_upstream: Address | None = _setting(None, "LASTSEEN_CONTROL_UPSTREAM", INGEST)
    # None: http://<ingest_listen>
    public_url: str | None = _setting(None, "LASTSEEN_PUBLIC_URL", BOTH)
    # One default instance for all: hashable, so pydantic shares it rather than copying.
    trusted_proxies: Annotated[TrustedProxies, NoDecode, BeforeValidator(_proxies)] = _setting(
        TrustedProxies.parse(DEFAULT_PROXIES), PROXIES_VARIABLE, "ingest, control"
    )
    # The ingest.
    # How many ingest processes on the port (forked by one: lastseen/children.py); None:
    # 1 for `lastseen ingest`, one per core (at most 8) under `serve`. --procs and
    # --ingest-procs win.
    ingest_procs: Annotated[int | None, _whole(1, 64, "1 to 64")] = _setting(
        None, "LASTSEEN_INGEST_PROCS", INGEST
    )
    flush_interval: Seconds = _setting(1.0, "LASTSEEN_FLUSH_INTERVAL_SECONDS", INGEST)
    poll_interval: Seconds = _setting(5.0, "LASTSEEN_POLL_INTERVAL_SECONDS", INGEST)
    lease: Seconds = _setting(8.0, "LASTSEEN_LEASE_SECONDS", "ingest, control")
    # How often last-seen times go to the database (the seen log); 0: at every flush.
    seen_interval: Annotated[float, _seconds(off=True)] = _setting(
        10.0, "LASTSEEN_SEEN_SECONDS", INGEST
    )
    # None: 5 s for the ingest (its flushes and leases are timed in seconds), 10 s for
    # control and the worker (a burst of API requests can keep an answer in their event
    # loop for seconds; tests/security/test_forward_flood.py got 503s at 5).
    db_timeout: Seconds | None = _setting(
        None, "LASTSEEN_DB_TIMEOUT_SECONDS", "ingest, control, worker"
    )
    # Check-ins (ingest/checkins.py): rows of ping history kept per monitor.
    ping_history: Whole = _setting(100, "LASTSEEN_PING_HISTORY", INGEST)
    # Plain success pings in the history too: a row per heartbeat (off: the seen log's
    # diet; on: every ping recorded, as healthchecks does, at its cost in WAL).
    ping_history_plain: Flag = _setting(False, "LASTSEEN_PING_HISTORY_PLAIN", INGEST)
    # Blindness (ingest/sight.py): misses are held this many seconds to tell "the fleet
    # stopped" from "we stopped hearing it" (0: off, alerts at the deadline, to the
    # second); blind when at least min_late monitors are late at once and they are at
    # least `ratio` of those late plus the pings on time for the same seconds.
    blind_window: Annotated[int, _whole(0, 600, "0 (off) to 600 seconds")] = _setting(
        10, "LASTSEEN_BLIND_WINDOW_SECONDS", INGEST
    )
    blind_ratio: Annotated[float, BeforeValidator(_share)] = _setting(
        0.8, "LASTSEEN_BLIND_RATIO", INGEST
    )
    blind_min_late: Whole = _setting(50, "LASTSEEN_BLIND_MIN_LATE", INGEST)
    # The ingest listener's limits (ingest.protocol.Limits); None: its own default.
    max_connections: Whole | None = _setting(None, "LASTSEEN_MAX_CONNECTIONS", INGEST)
    max_connections_per_address: Whole | None = _setting(
        None, "LASTSEEN_MAX_CONNECTIONS_PER_ADDRESS", INGEST
    )
    max_requests_per_connection: Whole | None = _setting(
        None, "LASTSEEN_MAX_REQUESTS_PER_CONNECTION", INGEST
    )
    max_head_bytes: Whole | None = _setting(None, "LASTSEEN_MAX_HEAD_BYTES", INGEST)
    max_body_bytes: Whole | None = _setting(None, "LASTSEEN_MAX_BODY_BYTES", INGEST)
    head_timeout: Seconds | None = _setting(None, "LASTSEEN_HEAD_TIMEOUT_SECONDS", INGEST)
    body_timeout: Seconds | None = _setting(None, "LASTSEEN_BODY_TIMEOUT_SECONDS", INGEST)
    keepalive_timeout: Seconds | None = _setting(None, "LASTSEEN_KEEPALIVE_TIMEOUT_SECONDS", INGEST)
    # The control process.
    auth_failures_per_hour: Whole = _setting(20, "LASTSEEN_AUTH_FAILURES_PER_HOUR", CONTROL)
    subscribe_per_ip_per_hour: Whole = _setting(10, "LASTSEEN_SUBSCRIBE_PER_IP_PER_HOUR", CONTROL)
    max_monitors_per_org: Whole = _setting(1_000_000, "LASTSEEN_MAX_MONITORS_PER_ORG", CONTROL)
    max_channels_per_org: Whole = _setting(1_000, "LASTSEEN_MAX_CHANNELS_PER_ORG", CONTROL)
    max_status_pages_per_org: Whole = _setting(1_000, "LASTSEEN_MAX_STATUS_PAGES_PER_ORG", CONTROL)
    max_tokens_per_user: Whole = _setting(100, "LASTSEEN_MAX_TOKENS_PER_USER", CONTROL)
    # Alert delivery (the control process's test alerts and the worker).
    smtp_url: str | None = _setting(None, "LASTSEEN_SMTP_URL", BOTH, secret=True)
    smtp_from: str = _setting("lastseen@localhost", "LASTSEEN_SMTP_FROM", BOTH)
    telegram_api: Annotated[str, AfterValidator(lambda url: url.rstrip("/"))] = _setting(
        "https://api.telegram.org", "LASTSEEN_TELEGRAM_API", BOTH
    )
    allow_private_targets: Flag = _setting(False, "LASTSEEN_ALLOW_PRIVATE_TARGETS", BOTH)
    # Retention, run by the worker (control/retention.py), in days.
    retain_events_days: Whole = _setting(90, "LASTSEEN_RETAIN_EVENTS_DAYS", WORKER)
    retain_notifications_days: Whole = _setting(30, "LASTSEEN_RETAIN_NOTIFICATIONS_DAYS", WORKER)
    retain_pings_days: Whole = _setting(90, "LASTSEEN_RETAIN_PINGS_DAYS", WORKER)
    # At least a year: an audit log that forgets sooner answers no auditor.
    retain_audit_days: Annotated[int, _whole(365)] = _setting(
        400, "LASTSEEN_RETAIN_AUDIT_DAYS", WORKER
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment only through from_env

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        try:
            return cls(**_Environment(cls, env)())
        except ValidationError as exc:
            error = exc.errors()[0]
            name = _given_name(str(error["loc"][0]) if error["loc"] else "LASTSEEN_*", env)
            cause = (error.get("ctx") or {}).get("error")
            said = str(cause) if isinstance(cause, _Bad) else f": {error['msg']}"
            raise SettingsError(f"{name}{said}") from None

    @property
    def limits(self) -> dict[str, float]:
        """The ingest listener's limits that are set (the rest keep Limits' defaults)."""
        return {key: value for key in LIMITS if (value := getattr(self, key)) is not None}

    @property
    def ingest_db_timeout(self) -> float:
        return self.db_timeout or 5.0

    @property
    def control_db_timeout(self) -> float:
        """The control process's and the worker's."""
        return self.db_timeout or 10.0

    @property
    def public_origin(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = self.ingest_listen
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def effective(self) -> list[tuple[str, str]]:
        """Every setting and its value as this process uses it, secrets masked (the
        keyring, the SMTP URL, a database URL's password): for `lastseen config`."""
        out = []
        for name, info in type(self).model_fields.items():
            value: Any = getattr(self, name)
            if not info.repr and value is not None:
                shown = "(set, not shown)"
            elif name == "database_url" and value:
                parts = urlsplit(value)
                if parts.password:
                    host = parts.netloc.rsplit("@", 1)[1]
                    value = urlunsplit(parts._replace(netloc=f"{parts.username}:****@{host}"))
                shown = str(value)
            elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
                shown = f"{value[0]}:{value[1]}"
            elif isinstance(value, TrustedProxies):
                shown = ", ".join(str(n) for n in value.networks) or "(none)"
            elif value is None and name == "db_timeout":
                shown = (f"(ingest {self.ingest_db_timeout}, control and worker "
                         f"{self.control_db_timeout})")  # fmt: skip
            elif value is None and name in LIMITS:
                shown = "(the listener's default)"
            else:
                shown = "(unset)" if value is None else str(value)
            out.append((name, shown))
        return out


class _Environment(EnvSettingsSource):
    """pydantic-settings' own reading of the variables (aliases, older names, in order),
    from the mapping given instead of always os.environ; an empty value is unset."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._given = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name: value for name, value in self._given.items() if value}


def _given_name(name: str, env: Mapping[str, str]) -> str:
    """The variable that carried a bad value: an older name's when only it was set."""
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and alias.choices[0] == name:
            return next((str(c) for c in alias.choices if env.get(str(c))), name)
    return name


LIMITS = (
    "max_connections", "max_connections_per_address", "max_requests_per_connection",
    "max_head_bytes", "max_body_bytes", "head_timeout", "body_timeout", "keepalive_timeout",
)  # fmt: skip


def _read_by() -> dict[str, str]:
    out: dict[str, str] = {}
    for info in Settings.model_fields.values():
        extra = info.json_schema_extra
        assert isinstance(extra, dict)
        out[str(extra["variable"])] = str(extra["read_by"])
    return out


# Every variable and which processes read it: the README's table, checked by a test.
READ_BY: dict[str, str] = _read_by()
