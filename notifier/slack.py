"""Slack incoming webhook: text plus a section block. Slack answers errors in plain text
(``no_service``, ``invalid_payload``), which is the message we record."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import schema
from .base import Notice, Transport

TYPE = "slack"
SECRET_FIELDS = ("url",)
SPACING_SECONDS = 1.0  # Slack allows about one message per second per webhook


validate = schema.url_only
view = schema.url_only_view


def payload(notice: Notice) -> dict[str, Any]:
    return {
        "text": f"{notice.title}. {notice.text}",
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*{notice.title}*\n{notice.text}"},
            }
        ],
    }


async def send(
    notice: Notice, public: Mapping[str, Any], secret: Mapping[str, Any], transport: Transport
) -> None:
    await transport.post(secret["url"], content=json.dumps(payload(notice)).encode())
