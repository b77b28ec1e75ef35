"""Microsoft Teams (Workflows or incoming webhook): an Adaptive Card in a message."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from . import schema
from .base import Notice, Transport

TYPE = "teams"
SECRET_FIELDS = ("url",)
SPACING_SECONDS = 0.25  # Teams connectors throttle at about four messages a second


validate = schema.url_only
view = schema.url_only_view


def escape(text: str) -> str:
    """Adaptive Cards render a Markdown subset (links, emphasis, lists) and have no escape
    character: a zero-width space after every markup character keeps a name from
    becoming a link ([Sign in](https://…)) or emphasis, and shows the same text."""
    return re.sub(r"([\[\]()*_~`])", "\\1\u200b", text)


def payload(notice: Notice) -> dict[str, Any]:
    colour = {"alert": "Attention", "recovery": "Good", "blind": "Warning", "sighted": "Good"}.get(
        notice.kind, "Default"
    )
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": notice.title_for(escape), "weight": "Bolder",
             "size": "Medium", "color": colour, "wrap": True},
            {"type": "TextBlock", "text": notice.text_for(escape), "wrap": True},
        ],
    }  # fmt: skip
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


async def send(
    notice: Notice, public: Mapping[str, Any], secret: Mapping[str, Any], transport: Transport
) -> None:
    await transport.post(secret["url"], content=json.dumps(payload(notice)).encode())
