"""Request bodies: camelCase on the wire, unknown fields refused."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema

from notifier.channels import TYPES as CHANNEL_TYPES
from notifier.schema import AddressError, address

from .access import Scope

Interval = Literal[30, 60, 300, 900, 1800, 3600]
INTERVALS: tuple[int, ...] = get_args(Interval)
PLAN_FLOORS = {"free": 300, "pro": 60, "business": 30}
# Our extension beyond the hosted service's intervals: any period from a minute to a year
# (weekly, monthly, yearly jobs); the plan's floor applies to it as to intervalSec.
PERIOD_MIN, PERIOD_MAX = 60, 365 * 86_400


# Optional in a PATCH, but not nullable: the schema says so, and the handler refuses null.
NotNull = SkipJsonSchema[None]
# Ids fit PostgreSQL's bigint and JavaScript's exact integers (and so every JSON reader).
MAX_ID = 2**53 - 1


def _whole_number(value: Any) -> Any:
    """An integer as JSON Schema means it: 3 or 3.0, never true, "3" or 3.5."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


# The hosted service's API docs show alertEmail as "[email protected]" (its web host
# hides addresses in pages); the docs' curl snippet must work as written, so that exact
# text means "no address", like "" and null.
DOCS_PLACEHOLDER = "[email protected]"


def _email_address(value: str | None) -> str | None:
    """alertEmail: one address (checked and normalised), or ""/null for none."""
    if value is None or not value.strip() or value.strip() == DOCS_PLACEHOLDER:
        return None
    try:
        return address(value)
    except AddressError as exc:
        raise ValueError(str(exc)) from None


AlertEmail = Annotated[str | None, Field(max_length=320), AfterValidator(_email_address)]


# Integers in a range. The range comes before the validator, or the OpenAPI document
# would not show it as minimum and maximum.
_WHOLE = BeforeValidator(_whole_number)
ObjectId = Annotated[int, Field(ge=1, le=MAX_ID), _WHOLE]
TimeoutMs = Annotated[int, Field(ge=1, le=60_000), _WHOLE]
GraceSec = Annotated[int, Field(ge=0, le=86_400), _WHOLE]
Threshold = Annotated[int, Field(ge=1, le=100), _WHOLE]
# Pings in a row, none late, that resolve an open incident (flap damping; 1: the first).
RecoveryThreshold = Annotated[int, Field(ge=1, le=100), _WHOLE]
PeriodSec = Annotated[int, Field(ge=PERIOD_MIN, le=PERIOD_MAX), _WHOLE]
# A cron expression (five fields or a macro) and its IANA time zone: checked by
# core.schedules (api/monitors.py), which says what is wrong.
CronExpression = Annotated[str, Field(min_length=1, max_length=200)]
TimeZoneName = Annotated[str, Field(min_length=1, max_length=64)]
# How long a run (a start to its success or failure) may take: a second to a year.
MaxRuntimeSec = Annotated[int, Field(ge=1, le=31_536_000), _WHOLE]
Ids = list[ObjectId]


def _storable(value: Any) -> Any:
    """PostgreSQL text holds no NUL, and UTF-8 no lone surrogate: refuse both here (422)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (no lone surrogates)") from None
    elif isinstance(value, list | tuple):
        for item in value:
            _storable(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    return value


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _text_is_storable(cls, value: Any) -> Any:
        return _storable(value)


ChannelType = Literal["email", "webhook", "slack", "discord", "teams", "telegram"]
if set(get_args(ChannelType)) != set(CHANNEL_TYPES):  # the registry is the truth
    raise RuntimeError("ChannelType does not list the channel registry's types")


class TokenCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(min_length=1)
    expires_at: datetime | None = None


class MonitorCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1, max_length=2000)
    type: Literal["heartbeat"] = "heartbeat"
    interval_sec: Interval | None = None  # one of the two is required (api/monitors.py)
    period_sec: PeriodSec | None = None
    timeout_ms: TimeoutMs = 10_000
    heartbeat_grace_sec: GraceSec = 60
    alert_threshold: Threshold = 1
    recovery_threshold: RecoveryThreshold = 1
    max_runtime_sec: MaxRuntimeSec | None = None
    schedule: CronExpression | None = None  # instead of intervalSec/periodSec
    tz: TimeZoneName | None = None  # with schedule; UTC if not given
    alert_email: AlertEmail = None
    channel_ids: Ids = Field(default_factory=list, max_length=50)


class MonitorUpdate(Body):
    """Every field optional; none may be null except alertEmail, maxRuntimeSec and
    schedule (null removes it)."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | NotNull = None
    url: Annotated[str, Field(min_length=1, max_length=2000)] | NotNull = None
    type: Literal["heartbeat"] | NotNull = None
    interval_sec: Interval | NotNull = None
    period_sec: PeriodSec | NotNull = None
    timeout_ms: TimeoutMs | NotNull = None
    heartbeat_grace_sec: GraceSec | NotNull = None
    alert_threshold: Threshold | NotNull = None
    recovery_threshold: RecoveryThreshold | NotNull = None
    max_runtime_sec: MaxRuntimeSec | None = None
    schedule: CronExpression | None = None  # null: back to its period
    tz: TimeZoneName | NotNull = None  # only with schedule
    alert_email: AlertEmail = None
    channel_ids: Annotated[Ids, Field(max_length=50)] | NotNull = None


class ChannelCreate(Body):
    type: ChannelType
    name: str = Field(min_length=1, max_length=200)
    config: dict[str, Any]
    # Also told of lastseen's own trouble (blindness: ingest/sight.py), besides owners.
    system_alerts: StrictBool = False


class ChannelUpdate(Body):
    name: Annotated[str, Field(min_length=1, max_length=200)] | NotNull = None
    config: dict[str, Any] | NotNull = None
    system_alerts: StrictBool | NotNull = None


SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"


# Monitor id (as a JSON object key) -> the name a status page shows it under.
DisplayNames = dict[
    Annotated[str, Field(pattern=r"^[1-9][0-9]{0,18}$")],
    Annotated[str, Field(min_length=1, max_length=200)],
]


class StatusPageCreate(Body):
    slug: str = Field(pattern=SLUG)
    title: str = Field(min_length=1, max_length=200)
    monitor_ids: Ids = Field(default_factory=list, max_length=200)
    display_names: DisplayNames = Field(default_factory=dict, max_length=200)
    public: StrictBool = True


class StatusPageUpdate(Body):
    slug: Annotated[str, Field(pattern=SLUG)] | NotNull = None
    title: Annotated[str, Field(min_length=1, max_length=200)] | NotNull = None
    monitor_ids: Annotated[Ids, Field(max_length=200)] | NotNull = None
    display_names: Annotated[DisplayNames, Field(max_length=200)] | NotNull = None
    public: StrictBool | NotNull = None
