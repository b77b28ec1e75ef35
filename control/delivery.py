"""Delivering one notification to one target: the library both the alert worker and the
API's test alert use (the API never imports the worker).

A target is a channel (its configuration, its secret sealed under the keyring) or a
monitor's own ``alertEmail``; ``attempt`` opens the secret, sends through the channel
within DELIVERY_SECONDS and returns the reason it failed, or None. It never raises for a
receiver's failure, nor for a bug: an unexpected exception is logged by type and
returned as a retryable error, so no notification is lost to one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.settings import Settings as Configuration
from notifier import channels
from notifier.base import Notice, Settings, Transport, TransportError

from . import subscribers
from .crypto import CHANNEL_PURPOSE, EnvelopeError, Keyring, open_envelope, seal

log = logging.getLogger(__name__)

DELIVERY_SECONDS = 30.0  # a whole attempt, SMTP dialogue included; well within the lease


def channel_settings(config: Configuration) -> Settings:
    """What the channels need of the process's configuration."""
    return Settings(
        allow_private=config.allow_private_targets,
        smtp_url=config.smtp_url,
        smtp_from=config.smtp_from,
        telegram_api=config.telegram_api,
        public_url=config.public_origin,
    )


def seal_secret(keyring: Keyring, secret: Mapping[str, Any], org_id: int, channel_id: int) -> str:
    return seal(
        keyring, json.dumps(dict(secret)).encode(), purpose=CHANNEL_PURPOSE,
        org_id=org_id, object_id=channel_id,
    )  # fmt: skip


def open_secret(keyring: Keyring, envelope: str | None, org_id: int, channel_id: int) -> Any:
    if envelope is None:
        return {}
    plain = open_envelope(
        keyring, envelope, purpose=CHANNEL_PURPOSE, org_id=org_id, object_id=channel_id
    )
    return json.loads(plain)


@dataclass(frozen=True)
class Target:
    """Where one notification goes: a channel, or a monitor's own alertEmail."""

    org_id: int
    channel_type: str
    channel_id: int | None
    config: Mapping[str, Any]
    secret_envelope: str | None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Target:
        if row["channel_id"] is None:  # the implicit email channel
            return cls(row["org_id"], "email", None, {"to": row["address"]}, None)
        config = row["config"]
        if isinstance(config, str):
            config = json.loads(config)
        return cls(
            row["org_id"], row["channel_type"], row["channel_id"], config, row["secret_envelope"]
        )


async def attempt(
    transport: Transport, keyring: Keyring, target: Target, notice: Notice
) -> TransportError | None:
    """Try one delivery; None when it landed, else the reason (never raises for a
    receiver's failure: an unexpected exception is recorded as a retryable error)."""
    try:
        secret = (
            open_secret(keyring, target.secret_envelope, target.org_id, target.channel_id)
            if target.channel_id is not None
            else {}
        )
    except (EnvelopeError, ValueError):
        return TransportError("the channel's secret cannot be opened with this keyring")
    try:
        async with asyncio.timeout(DELIVERY_SECONDS):
            await channels.send(target.channel_type, notice, target.config, secret, transport)
    except TransportError as exc:
        return exc
    except TimeoutError:
        return TransportError(f"no answer within {DELIVERY_SECONDS:g} s")
    except Exception as exc:  # a bug in a channel must not lose the notification
        # By type only: an exception's text may carry the channel's secret URL.
        log.error("delivery through %s failed unexpectedly (%s)", target.channel_type,
                  type(exc).__name__)  # fmt: skip
        return TransportError(f"internal error ({type(exc).__name__})")
    return None


async def subscriber_attempt(
    transport: Transport, keyring: Keyring, row: Mapping[str, Any], notice: Notice
) -> TransportError | None:
    """A status-page subscriber's mail: its confirmation, or an incident with an
    unsubscribe link."""
    send = subscribers.send_confirmation if row["kind"] == "confirm" else subscribers.send_incident
    try:
        async with asyncio.timeout(DELIVERY_SECONDS):
            await send(transport, keyring, row, notice)
    except TransportError as exc:
        return exc
    except TimeoutError:
        return TransportError(f"no answer within {DELIVERY_SECONDS:g} s")
    except Exception as exc:  # a bug must not lose the notification, nor loop on it
        log.error("subscriber mail failed unexpectedly (%s)", type(exc).__name__)
        return TransportError(f"internal error ({type(exc).__name__})")
    return None
