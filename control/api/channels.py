"""Alert channels: email, webhook, Slack, Discord, Teams, Telegram.

A channel's configuration is split by its type's module (notifier/): what may be shown
(an address, a chat id) is stored as JSON; its secrets (webhook URLs, bot tokens, signing
secrets) are sealed in an envelope bound to the organisation and channel, and shown only
masked. A webhook's signing secret, when we generate it, is returned once, on creation.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import httpcore
import httpx
from fastapi import APIRouter, Query, Request, Response

from notifier import channels, guard
from notifier.schema import ConfigError

from .. import quotas
from ..delivery import open_secret, seal_secret
from ..deps import (
    MAX_ID,
    CallerDep,
    ChannelWriter,
    Id,
    StateDep,
    audit,
    delete_owned,
    found,
    iso,
    page,
    patch_fields,
)
from ..errors import ApiError
from ..models import ChannelCreate, ChannelUpdate

RESOLVE_SECONDS = 2.0  # a channel's host, looked up for the warnings

router = APIRouter()
NOT_FOUND = ApiError(404, "not_found", "no such channel")


def channel_json(row: Any, public: dict[str, Any], secret: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "name": row["name"],
        "config": channels.view(row["type"], public, secret),
        "systemAlerts": row["system_alerts"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


def _validate(kind: str, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        return channels.validate(kind, config)
    except ConfigError as exc:
        field = "type" if exc.field == "config.type" else exc.field.rstrip(".")
        raise ApiError(422, "invalid", exc.message, field) from None


async def _warnings(
    st: Any, public: dict[str, Any], secret: dict[str, Any]
) -> list[dict[str, str]]:
    """What would make the channel's deliveries fail, said now rather than at the first
    alert: a URL whose host is not a public address (the SSRF guard blocks it unless the
    server allows private targets) or does not resolve. Advisory: the channel is saved."""
    url = secret.get("url") or public.get("url")
    if not isinstance(url, str):
        return []
    try:
        parsed = httpx.URL(url)
        host, port = parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = await asyncio.wait_for(guard.resolve(host, port), RESOLVE_SECONDS)
    except (httpx.InvalidURL, httpcore.ConnectError, TimeoutError):
        said = "its host does not resolve now: alerts to it fail until it does"
        return [{"field": "config.url", "message": said}]
    private = [str(a) for a in addresses if not guard.is_public(a)]
    if not private or st.settings.allow_private_targets:
        return []
    said = (
        f"{private[0]} is not a public address: alerts to it are blocked unless the server"
        " sets LASTSEEN_ALLOW_PRIVATE_TARGETS=1"
    )
    return [{"field": "config.url", "message": said}]


def _config(row: Any) -> dict[str, Any]:
    value = row["config"]
    return dict(json.loads(value) if isinstance(value, str) else value)


@router.post("/channels", status_code=201)
async def create_channel(
    body: ChannelCreate, request: Request, caller: ChannelWriter, st: StateDep
) -> dict[str, Any]:
    public, secret = _validate(body.type, body.config)
    async with st.pool.acquire() as conn, conn.transaction():
        await quotas.check(
            conn, "channels", caller.org_id, st.settings.max_channels_per_org, "channels"
        )
        channel_id = await conn.fetchval("SELECT nextval('channels_id_seq')")
        envelope = seal_secret(st.keyring, secret, caller.org_id, channel_id) if secret else None
        row = await conn.fetchrow(
            "INSERT INTO channels (id, org_id, type, name, config, secret_envelope, receiver,"
            " system_alerts) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8) RETURNING *",
            channel_id, caller.org_id, body.type, body.name, json.dumps(public), envelope,
            channels.receiver(body.type, public, secret), body.system_alerts,
        )  # fmt: skip
        await audit(conn, caller, request, "CREATE_CHANNEL", "channel", channel_id)
    shown = channel_json(row, public, secret)
    if "signingSecret" in secret and "signingSecret" not in body.config:
        shown["signingSecret"] = secret["signingSecret"]  # generated: shown this once
    if warnings := await _warnings(st, public, secret):
        shown["warnings"] = warnings
    return shown


async def _fetch(
    st: Any, caller: Any, channel_id: int
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    row = found(
        await st.pool.fetchrow(
            "SELECT * FROM channels WHERE id = $1 AND org_id = $2", channel_id, caller.org_id
        ),
        NOT_FOUND,
    )
    return row, _config(row), _secret(st, row)


def _secret(st: Any, row: Any) -> dict[str, Any]:
    try:
        return dict(open_secret(st.keyring, row["secret_envelope"], row["org_id"], row["id"]))
    except Exception as exc:  # EnvelopeError, or JSON that is not ours
        raise ApiError(500, "envelope", "the channel's secret cannot be opened") from exc


@router.get("/channels")
async def list_channels(
    caller: CallerDep,
    st: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    caller.require("channels:read")
    rows = await st.pool.fetch(
        "SELECT * FROM channels WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        caller.org_id, after, limit + 1,
    )  # fmt: skip
    rows, next_after = page(rows, limit)
    return {
        "channels": [channel_json(r, _config(r), _secret(st, r)) for r in rows],
        "nextAfter": next_after,
    }


@router.get("/channels/{channel_id}")
async def get_channel(channel_id: Id, caller: CallerDep, st: StateDep) -> dict[str, Any]:
    caller.require("channels:read")
    return channel_json(*await _fetch(st, caller, channel_id))


@router.patch("/channels/{channel_id}")
async def update_channel(
    channel_id: Id, body: ChannelUpdate, request: Request, caller: ChannelWriter, st: StateDep
) -> dict[str, Any]:
    """`config` is merged over the current one: omitted secrets are kept."""
    patch_fields(body)
    row, public, secret = await _fetch(st, caller, channel_id)
    name = body.name if body.name is not None else row["name"]
    system = body.system_alerts if body.system_alerts is not None else row["system_alerts"]
    if body.config is not None:
        public, secret = _validate(row["type"], {**public, **secret, **body.config})
    async with st.pool.acquire() as conn, conn.transaction():
        envelope = seal_secret(st.keyring, secret, caller.org_id, channel_id) if secret else None
        row = await conn.fetchrow(
            "UPDATE channels SET name = $3, config = $4::jsonb, secret_envelope = $5,"
            " receiver = $6, system_alerts = $7, updated_at = now()"
            " WHERE id = $1 AND org_id = $2 RETURNING *",
            channel_id, caller.org_id, name, json.dumps(public), envelope,
            channels.receiver(row["type"], public, secret), system,
        )  # fmt: skip
        if row is None:
            raise NOT_FOUND
        await audit(conn, caller, request, "UPDATE_CHANNEL", "channel", channel_id)
    shown = channel_json(row, public, secret)
    if body.config is not None and (warnings := await _warnings(st, public, secret)):
        shown["warnings"] = warnings
    return shown


@router.delete("/channels/{channel_id}", status_code=204)
async def delete_channel(
    channel_id: Id, request: Request, caller: ChannelWriter, st: StateDep
) -> Response:
    await delete_owned(st, caller, request, "channels", channel_id, NOT_FOUND)
    return Response(status_code=204)
