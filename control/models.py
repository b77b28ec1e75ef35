"""Request bodies: camelCase on the wire, unknown fields refused."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema

INTERVALS = (30, 60, 300, 900, 1800, 3600)
PLAN_FLOORS = {"free": 300, "pro": 60, "business": 30}


# Optional in a PATCH, but not nullable: the schema says so, and the handler refuses null.
NotNull = SkipJsonSchema[None]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


Scope = Literal[
    "monitors:read", "monitors:write", "secrets:read", "tokens:write", "channels:read",
    "channels:write", "incidents:read", "audit:read", "status-pages:write", "*",
]  # fmt: skip
Interval = Literal[30, 60, 300, 900, 1800, 3600]
ChannelType = Literal["email", "webhook", "slack", "discord", "teams", "telegram"]


class TokenCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(min_length=1)
    expires_at: datetime | None = None


class MonitorCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1, max_length=2000)
    type: Literal["heartbeat"] = "heartbeat"
    interval_sec: Interval
    timeout_ms: int = Field(default=10_000, ge=1, le=60_000)
    heartbeat_grace_sec: int = Field(default=60, ge=0, le=86_400)
    alert_threshold: int = Field(default=1, ge=1, le=100)
    alert_email: str | None = Field(default=None, max_length=320)
    channel_ids: list[int] = Field(default_factory=list, max_length=50)


class MonitorUpdate(Body):
    """Every field optional; none may be null except alertEmail (null removes it)."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | NotNull = None
    url: Annotated[str, Field(min_length=1, max_length=2000)] | NotNull = None
    type: Literal["heartbeat"] | NotNull = None
    interval_sec: Interval | NotNull = None
    timeout_ms: Annotated[int, Field(ge=1, le=60_000)] | NotNull = None
    heartbeat_grace_sec: Annotated[int, Field(ge=0, le=86_400)] | NotNull = None
    alert_threshold: Annotated[int, Field(ge=1, le=100)] | NotNull = None
    alert_email: Annotated[str, Field(max_length=320)] | None = None
    channel_ids: Annotated[list[int], Field(max_length=50)] | NotNull = None


class ChannelCreate(Body):
    type: ChannelType
    name: str = Field(min_length=1, max_length=200)
    config: dict[str, Any]


class ChannelUpdate(Body):
    name: Annotated[str, Field(min_length=1, max_length=200)] | NotNull = None
    config: dict[str, Any] | NotNull = None


SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"


class StatusPageCreate(Body):
    slug: str = Field(pattern=SLUG)
    title: str = Field(min_length=1, max_length=200)
    monitor_ids: list[int] = Field(default_factory=list, max_length=200)
    public: bool = True


class StatusPageUpdate(Body):
    slug: Annotated[str, Field(pattern=SLUG)] | NotNull = None
    title: Annotated[str, Field(min_length=1, max_length=200)] | NotNull = None
    monitor_ids: Annotated[list[int], Field(max_length=200)] | NotNull = None
    public: bool | NotNull = None
