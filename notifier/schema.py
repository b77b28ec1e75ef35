"""Reading a channel's configuration: each field checked, with a message that names it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import email_validator
import httpx


class AddressError(ValueError):
    """Not one email address; the message says why."""


def address(value: str) -> str:
    """One email address, checked by email-validator and normalised (the domain in lower
    case and IDNA form; the local part as given): no display name, no second recipient,
    no quoted local part, no line break or other control character. Special-use domains
    are refused except ``.test`` and ``localhost`` (a self-hosted server may mail its
    own host). ``address(a).casefold()`` is what counts as the same address."""
    value = value.strip()
    local, _, domain = value.rpartition("@")
    localhost = domain.lower() == "localhost"
    checked = f"{local}@localhost.test" if localhost else value
    try:
        result = email_validator.validate_email(
            checked, check_deliverability=False, globally_deliverable=False,
            test_environment=True, allow_display_name=False, allow_quoted_local=False,
            allow_domain_literal=False, allow_smtputf8=True,
        )  # fmt: skip
    except email_validator.EmailNotValidError as exc:
        raise AddressError(f"not one email address: {exc}") from None
    if localhost:
        return f"{result.local_part}@localhost"
    return str(result.normalized)


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
    try:
        return address(value)
    except AddressError as exc:
        raise ConfigError(key, f"config.{key} is {exc}") from None


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
