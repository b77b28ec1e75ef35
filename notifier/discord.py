"""Discord webhook: content plus an embed. A 429 carries ``retry_after`` (seconds) in
its JSON body; errors carry ``message``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import httpx

from . import schema
from .base import Notice, Transport, clamp_retry_after, excerpt, json_body

TYPE = "discord"
SECRET_FIELDS = ("url",)
SPACING_SECONDS = 1.0  # 5 requests per 5 s per webhook

COLOURS = {
    "alert": 0xD93025, "recovery": 0x188038, "closed": 0x5F6368, "test": 0x5F6368,
    "blind": 0xF29900, "sighted": 0x188038,
}  # fmt: skip


validate = schema.url_only
view = schema.url_only_view


# (Headings, quotes and lists start a line; a name never does: "DOWN: <name>".)
_MARKDOWN = re.compile(r"([\\*_~`|\[\]()<:@])")


def escape(text: str) -> str:
    """Discord markdown escaped with backslashes, so a name cannot format, hide or mask
    a link ([Sign in](https://…)); mentions are off anyway (allowed_mentions)."""
    return _MARKDOWN.sub(r"\\\1", text)


def payload(notice: Notice) -> dict[str, Any]:
    title, text = notice.title_for(escape), notice.text_for(escape)
    return {
        "content": title,
        "embeds": [{"title": title, "description": text, "color": COLOURS[notice.kind]}],
        "allowed_mentions": {"parse": []},
    }


def describe(response: httpx.Response) -> tuple[str, float | None]:
    data = json_body(response)
    if isinstance(data, dict):
        retry = data.get("retry_after")
        retry_after = clamp_retry_after(float(retry)) if isinstance(retry, int | float) else None
        return excerpt(str(data.get("message") or response.text)), retry_after
    return excerpt(response.text), None


async def send(
    notice: Notice, public: Mapping[str, Any], secret: Mapping[str, Any], transport: Transport
) -> None:
    await transport.post(
        secret["url"], content=json.dumps(payload(notice)).encode(), describe=describe
    )
