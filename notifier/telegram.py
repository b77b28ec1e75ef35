"""Telegram: ``sendMessage`` through the Bot API (base URL: LASTSEEN_TELEGRAM_API).

The bot token is part of the request path, so no message we record names the path. The
API explains errors in ``description`` and asks for patience in
``parameters.retry_after``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import httpx

from . import schema
from .base import Notice, Transport, clamp_retry_after, excerpt, json_body

TYPE = "telegram"
SECRET_FIELDS = ("botToken",)
SPACING_SECONDS = 3.0  # 20 messages a minute per chat
BOT_TOKEN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,100}$")
CHAT_ID = re.compile(r"^(-?\d{1,20}|@[A-Za-z0-9_]{5,64})$")


def validate(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    schema.only(config, {"botToken", "chatId"})
    token = schema.text(config, "botToken", limit=200)
    if not BOT_TOKEN.match(token):
        raise schema.ConfigError("botToken", "config.botToken must look like 123456:ABC-DEF…")
    chat = config.get("chatId")
    chat = str(chat) if isinstance(chat, int | str) and not isinstance(chat, bool) else ""
    if not CHAT_ID.match(chat):
        raise schema.ConfigError(
            "chatId", "config.chatId must be a numeric chat id or @channelname"
        )
    return {"chatId": chat}, {"botToken": token}


def view(public: Mapping[str, Any], secret: Mapping[str, Any]) -> dict[str, Any]:
    return {"chatId": public["chatId"], "botToken": schema.mask(secret["botToken"])}


def describe(response: httpx.Response) -> tuple[str, float | None]:
    data = json_body(response)
    if isinstance(data, dict):
        parameters = data.get("parameters")
        retry = parameters.get("retry_after") if isinstance(parameters, dict) else None
        retry_after = clamp_retry_after(float(retry)) if isinstance(retry, int | float) else None
        return excerpt(str(data.get("description") or response.text)), retry_after
    return excerpt(response.text), None


async def send(
    notice: Notice, public: Mapping[str, Any], secret: Mapping[str, Any], transport: Transport
) -> None:
    body = {"chat_id": public["chatId"], "text": f"{notice.title}\n{notice.text}",
            "disable_web_page_preview": True}  # fmt: skip
    url = f"{transport.settings.telegram_api}/bot{secret['botToken']}/sendMessage"
    await transport.post(url, content=json.dumps(body).encode(), describe=describe)
