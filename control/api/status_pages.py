"""Status pages: which monitors a public page shows (scope status-pages:write)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request, Response

from .. import quotas
from ..auth import Caller
from ..deps import (
    MAX_ID,
    Id,
    StateDep,
    StatusPageWriter,
    audit,
    delete_owned,
    found,
    iso,
    page,
    patch_fields,
)
from ..errors import ApiError
from ..models import StatusPageCreate, StatusPageUpdate

router = APIRouter()
NOT_FOUND = ApiError(404, "not_found", "no such status page")

_SELECT = """
SELECT p.*, ARRAY(SELECT monitor_id FROM status_page_monitors m WHERE m.page_id = p.id
                  ORDER BY position) AS monitor_ids,
       (SELECT coalesce(jsonb_object_agg(m.monitor_id::text, m.display_name), '{}')
        FROM status_page_monitors m
        WHERE m.page_id = p.id AND m.display_name IS NOT NULL)::text AS display_names
FROM status_pages p
"""


def page_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "slug": row["slug"],
        "title": row["title"],
        "public": row["public"],
        "monitorIds": list(row["monitor_ids"]),
        "displayNames": json.loads(row["display_names"]),
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


async def _set_monitors(
    conn: Any,
    caller: Caller,
    page_id: int,
    monitor_ids: list[int] | None,
    names: dict[str, str] | None,
) -> None:
    """The page's monitors, in order, and the public names they show under. Either may be
    None (a PATCH without it): the monitors, or the names of those that stay, are kept."""
    kept = await conn.fetch(
        "SELECT monitor_id, display_name FROM status_page_monitors WHERE page_id = $1"
        " ORDER BY position",
        page_id,
    )
    if monitor_ids is None:
        monitor_ids = [r["monitor_id"] for r in kept]
    if names is None:
        names = {str(r["monitor_id"]): r["display_name"] for r in kept if r["display_name"]}
        names = {k: v for k, v in names.items() if int(k) in monitor_ids}
    stray = sorted(int(k) for k in names if int(k) not in monitor_ids)
    if stray:
        raise ApiError(
            422, "invalid", f"displayNames names monitor {stray[0]}, which is not on the page",
            "displayNames",
        )  # fmt: skip
    wanted = list(dict.fromkeys(monitor_ids))
    found = await conn.fetch(
        "SELECT id FROM monitors WHERE org_id = $1 AND id = ANY($2::bigint[])",
        caller.org_id,
        wanted,
    )
    missing = [m for m in wanted if m not in {r["id"] for r in found}]
    if missing:
        raise ApiError(422, "invalid", f"no such monitor: {missing[0]}", "monitorIds")
    await conn.execute("DELETE FROM status_page_monitors WHERE page_id = $1", page_id)
    await conn.executemany(
        "INSERT INTO status_page_monitors (page_id, monitor_id, position, display_name)"
        " VALUES ($1, $2, $3, $4)",
        [(page_id, m, i, names.get(str(m))) for i, m in enumerate(wanted)],
    )


SLUG_TAKEN = ApiError(409, "conflict", "that slug is taken", "slug")


@router.post("/status-pages", status_code=201)
async def create_status_page(
    body: StatusPageCreate, request: Request, caller: StatusPageWriter, st: StateDep
) -> dict[str, Any]:
    async with st.pool.acquire() as conn, conn.transaction():
        await quotas.check(
            conn,
            "status_pages",
            caller.org_id,
            st.settings.max_status_pages_per_org,
            "status pages",
        )
        try:
            page_id = await conn.fetchval(
                "INSERT INTO status_pages (org_id, slug, title, public) VALUES ($1, $2, $3, $4)"
                " RETURNING id",
                caller.org_id, body.slug, body.title, body.public,
            )  # fmt: skip
        except asyncpg.UniqueViolationError as exc:
            raise SLUG_TAKEN from exc
        await _set_monitors(conn, caller, page_id, body.monitor_ids, body.display_names)
        await audit(conn, caller, request, "CREATE_STATUS_PAGE", "status_page", page_id)
        row = await conn.fetchrow(_SELECT + " WHERE p.id = $1", page_id)
    return page_json(row)


@router.get("/status-pages")
async def list_status_pages(
    caller: StatusPageWriter,
    st: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    rows = await st.pool.fetch(
        _SELECT + " WHERE p.org_id = $1 AND p.id > $2 ORDER BY p.id LIMIT $3",
        caller.org_id, after, limit + 1,
    )  # fmt: skip
    rows, next_after = page(rows, limit)
    return {"statusPages": [page_json(r) for r in rows], "nextAfter": next_after}


@router.get("/status-pages/{page_id}")
async def get_status_page(page_id: Id, caller: StatusPageWriter, st: StateDep) -> dict[str, Any]:
    row = found(
        await st.pool.fetchrow(
            _SELECT + " WHERE p.id = $1 AND p.org_id = $2", page_id, caller.org_id
        ),
        NOT_FOUND,
    )
    return page_json(row)


@router.patch("/status-pages/{page_id}")
async def update_status_page(
    page_id: Id, body: StatusPageUpdate, request: Request, caller: StatusPageWriter, st: StateDep
) -> dict[str, Any]:
    given = patch_fields(body)
    monitor_ids = given.pop("monitor_ids", None)
    names = given.pop("display_names", None)
    async with st.pool.acquire() as conn, conn.transaction():
        sets = ", ".join(f"{k} = ${i + 3}" for i, k in enumerate(given))
        try:
            done = await conn.execute(
                f"UPDATE status_pages SET updated_at = now(){', ' + sets if sets else ''}"
                " WHERE id = $1 AND org_id = $2",
                page_id, caller.org_id, *given.values(),
            )  # fmt: skip
        except asyncpg.UniqueViolationError as exc:
            raise SLUG_TAKEN from exc
        if done != "UPDATE 1":
            raise NOT_FOUND
        if monitor_ids is not None or names is not None:
            await _set_monitors(conn, caller, page_id, monitor_ids, names)
        await audit(conn, caller, request, "UPDATE_STATUS_PAGE", "status_page", page_id)
        row = await conn.fetchrow(_SELECT + " WHERE p.id = $1", page_id)
    return page_json(row)


@router.delete("/status-pages/{page_id}", status_code=204)
async def delete_status_page(
    page_id: Id, request: Request, caller: StatusPageWriter, st: StateDep
) -> Response:
    await delete_owned(st, caller, request, "status_pages", page_id, NOT_FOUND)
    return Response(status_code=204)
