"""The channel registry: type name -> module, and the calls every caller makes."""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import httpx

from . import discord, email, slack, teams, telegram, webhook
from .base import Notice, Transport, TransportError
from .schema import ConfigError

CHANNELS: dict[str, ModuleType] = {
    m.TYPE: m for m in (email, webhook, slack, discord, teams, telegram)
}
TYPES = tuple(CHANNELS)


def module(kind: str) -> ModuleType:
    try:
        return CHANNELS[kind]
    except KeyError:
        raise ConfigError("type", f"type must be one of {', '.join(TYPES)}") from None


def validate(kind: str, config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a channel's configuration into (what may be shown, what is secret)."""
    if not isinstance(config, Mapping):
        raise ConfigError("", "config must be an object")
    public, secret = module(kind).validate(config)
    return public, secret


def view(kind: str, public: Mapping[str, Any], secret: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration as the API shows it: secrets masked."""
    shown: dict[str, Any] = module(kind).view(public, secret)
    return shown


def receiver(kind: str, public: Mapping[str, Any], secret: Mapping[str, Any]) -> str:
    """Who receives a channel's messages, for the per-receiver limit on deliveries in
    flight: the host of its URL (lower case), else its type (every email goes through the
    one SMTP server, every Telegram message to the Bot API)."""
    url = secret.get("url") or public.get("url")
    if isinstance(url, str):
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL:
            host = ""
        if host:
            return host.lower()
    return kind


def spacing(kind: str) -> float:
    """Seconds between two messages to one channel of this type (its rate limit)."""
    return float(getattr(module(kind), "SPACING_SECONDS", 0.0))


async def send(
    kind: str,
    notice: Notice,
    public: Mapping[str, Any],
    secret: Mapping[str, Any],
    transport: Transport,
) -> None:
    """Deliver `notice`; raises TransportError (every other exception is a bug)."""
    await module(kind).send(notice, public, secret, transport)


__all__ = ["CHANNELS", "TYPES", "ConfigError", "Notice", "Transport", "TransportError"]
