"""A change answered means a change applied: the API waits, a bounded time, until every
ingest process answers pings as the change says (issues 11 and 13).

Each ingest process says which configuration it has applied: the snapshot of its last
read of the changes (``ingest_members.applied``, migration 0012; ``ingest/changefeed.py``
reads on every NOTIFY, so this follows a commit by milliseconds). After committing a
change to a monitor (create, pause, resume, rotate, delete), the API waits until the
change's transaction is visible in the applied snapshot of every live member (one seen
within a lease), checking every few milliseconds, at most ``WAIT_SECONDS``. A member that
has not loaded yet counts as behind (it registers before it loads, and says what it
applied only once it listens); with no member at all there is nothing to wait for (no
process answers pings; under ``lastseen serve`` the API itself comes through an ingest
process, so one is there). Past the bound the API answers anyway and logs it: a process
that stopped reading (a lost database connection) must not hold the API.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

WAIT_SECONDS = 0.5
STEP_SECONDS = 0.005

_BEHIND = """
SELECT count(*) FILTER (
           WHERE applied IS NULL OR NOT pg_visible_in_snapshot($1::text::xid8, applied)
       ) AS behind,
       count(*) AS live
FROM ingest_members WHERE seen_at > now() - make_interval(secs => $2)
"""
XID = "SELECT pg_current_xact_id()::text"


async def wait(pool: Any, xid: str, live_seconds: float, limit: float = WAIT_SECONDS) -> bool:
    """Wait until transaction `xid` (committed) is applied by every live ingest process;
    False if `limit` seconds passed first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        row = await pool.fetchrow(_BEHIND, xid, live_seconds)
        if row["behind"] == 0:
            return True
        if loop.time() >= deadline:
            log.warning(
                "answered a change before every ingest process applied it (%d of %d behind"
                " after %.1f s)", row["behind"], row["live"], limit,
            )  # fmt: skip
            return False
        await asyncio.sleep(STEP_SECONDS)
