"""Request bodies: camelCase on the wire, unknown fields refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

INTERVALS = (30, 60, 300, 900, 1800, 3600)
PLAN_FLOORS = {"free": 300, "pro": 60, "business": 30}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class TokenCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1)
    expires_at: datetime | None = None


class MonitorCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1, max_length=2000)
    type: Literal["heartbeat"] = "heartbeat"
    interval_sec: int
    timeout_ms: int = Field(default=10_000, ge=1, le=60_000)
    heartbeat_grace_sec: int = Field(default=60, ge=0, le=86_400)
    alert_threshold: int = Field(default=1, ge=1, le=100)
    alert_email: str | None = Field(default=None, max_length=320)
    channel_ids: list[int] = Field(default_factory=list, max_length=50)


class MonitorUpdate(Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    type: Literal["heartbeat"] | None = None
    interval_sec: int | None = None
    timeout_ms: int | None = Field(default=None, ge=1, le=60_000)
    heartbeat_grace_sec: int | None = Field(default=None, ge=0, le=86_400)
    alert_threshold: int | None = Field(default=None, ge=1, le=100)
    alert_email: str | None = Field(default=None, max_length=320)
    channel_ids: list[int] | None = Field(default=None, max_length=50)


class ChannelCreate(Body):
    type: str
    name: str = Field(min_length=1, max_length=200)
    config: dict[str, Any]


class ChannelUpdate(Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    config: dict[str, Any] | None = None


SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"


class StatusPageCreate(Body):
    slug: str = Field(pattern=SLUG)
    title: str = Field(min_length=1, max_length=200)
    monitor_ids: list[int] = Field(default_factory=list, max_length=200)
    public: bool = True


class StatusPageUpdate(Body):
    slug: str | None = Field(default=None, pattern=SLUG)
    title: str | None = Field(default=None, min_length=1, max_length=200)
    monitor_ids: list[int] | None = Field(default=None, max_length=200)
    public: bool | None = None
