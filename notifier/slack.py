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


def escape(text: str) -> str:
    """Slack's own rule: &, < and > as entities, so a name cannot become a link
    (<https://…|Sign in>) or a mention (<!channel>, <@U123>)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(notice: Notice) -> dict[str, Any]:
    title, text = notice.title_for(escape), notice.text_for(escape)
    return {
        "text": f"{title}. {text}",
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*{title}*\n{text}"},
            }
        ],
    }


async def send(
    notice: Notice, public: Mapping[str, Any], secret: Mapping[str, Any], transport: Transport
) -> None:
    await transport.post(secret["url"], content=json.dumps(payload(notice)).encode())
