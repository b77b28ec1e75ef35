"""Generic webhook: the notice as JSON, signed, with one Idempotency-Key per notification.

``Lastseen-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` under the
channel's signing secret (generated when the channel is created, shown once). The
``Idempotency-Key`` is the same on every attempt of one (incident, channel, event), so a
receiver that saw a delivery whose answer we lost can drop the repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any

from . import schema
from .base import Notice, Transport

TYPE = "webhook"
SECRET_FIELDS = ("url", "signingSecret")


def validate(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    schema.only(config, {"url", "signingSecret"})
    secret = config.get("signingSecret")
    if secret is None:
        secret = "whsec_" + secrets.token_urlsafe(32)
    elif not isinstance(secret, str) or len(secret) < 16 or len(secret) > 200:
        raise schema.ConfigError(
            "signingSecret", "config.signingSecret must be 16 to 200 characters"
        )
    return {}, {"url": schema.url(config), "signingSecret": secret}


def view(public: Mapping[str, Any], secret: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "url": schema.mask_url(secret["url"]),
        "signingSecret": schema.mask(secret["signingSecret"]),
    }


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


async def send(
    notice: Notice, public: Mapping[str, Any], secret: Mapping[str, Any], transport: Transport
) -> None:
    body = json.dumps(notice.as_json(), separators=(",", ":")).encode()
    timestamp = int(notice.sent_at.timestamp())
    await transport.post(
        secret["url"],
        content=body,
        headers={
            "lastseen-signature": signature(secret["signingSecret"], timestamp, body),
            "idempotency-key": notice.idempotency_key,
            "lastseen-event": notice.event,
        },
    )
