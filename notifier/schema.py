"""Reading a channel's configuration: each field checked, with a message that names it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s.]{1,63}$|^[^@\s]{1,64}@localhost$")


class ConfigError(Exception):
    """A channel configuration is invalid; `field` is its path (e.g. config.url)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = f"config.{field}"
        self.message = message


def only(config: Mapping[str, Any], allowed: set[str]) -> None:
    for key in config:
        if key not in allowed:
            raise ConfigError(key, f"unknown field 'config.{key}'")


def text(config: Mapping[str, Any], key: str, *, required: bool = True, limit: int = 2000) -> str:
    value = config.get(key)
    if value is None:
        if required:
            raise ConfigError(key, f"config.{key} is required")
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ConfigError(key, f"config.{key} must be a non-empty string of at most {limit}")
    return value.strip()


def url(config: Mapping[str, Any], key: str = "url") -> str:
    value = text(config, key)
    try:
        parsed = httpx.URL(value)
    except httpx.InvalidURL:
        raise ConfigError(key, f"config.{key} is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(key, f"config.{key} must be an http:// or https:// URL")
    return value


def email(config: Mapping[str, Any], key: str) -> str:
    value = text(config, key, limit=320)
    if not EMAIL.match(value):
        raise ConfigError(key, f"config.{key} is not an email address")
    return value


def mask_url(value: str) -> str:
    """An URL whose path or query is a secret, shown as its origin and last 4 characters."""
    parsed = httpx.URL(value)
    origin = f"{parsed.scheme}://{parsed.netloc.decode('ascii', 'replace')}"
    return f"{origin}/…{value[-4:]}" if len(value) > len(origin) + 8 else f"{origin}/…"


def mask(value: str) -> str:
    return f"…{value[-4:]}" if len(value) >= 16 else "…"


def url_only(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The configuration of a channel that is just a secret webhook URL."""
    only(config, {"url"})
    return {}, {"url": url(config)}


def url_only_view(public: Mapping[str, Any], secret: Mapping[str, Any]) -> dict[str, Any]:
    return {"url": mask_url(secret["url"])}
