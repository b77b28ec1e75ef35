"""A flood of unknown tokens against a real `lastseen ingest` (issue 6, scenario 20, its
second half): wrk sends pings of random tokens as fast as it can on 8 connections while
a prober in its own process pings a real monitor 200 times a second. Every flood request
gets 404, every probe 204. The figures (probe latency with and without the flood) are
printed; `python -m benchmarks.flood` measures the same against a flood of valid pings.
"""

from __future__ import annotations

import functools
import secrets
import shutil

import pytest
import trio

from benchmarks import harness

from ..support.dbhelp import ingest_process, probe, seed

SECONDS = 3

pytestmark = [
    pytest.mark.security,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
]


async def test_a_flood_of_unknown_tokens_gets_404s_and_valid_pings_keep_their_204(
    database_url, tmp_path
):
    [m] = await seed(database_url, 1)
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("".join(secrets.token_hex(32) + "\n" for _ in range(1000)))
    async with ingest_process(database_url, m.token, tmp_path / "ingest.log") as ingest:
        quiet = await probe(ingest.port, m.token, 1.0)
        flooded: dict[str, float] = {}

        async def probing() -> None:
            flooded.update(await probe(ingest.port, m.token, SECONDS))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probing)
            flood = functools.partial(
                harness.wrk, ingest.port, unknown, seconds=SECONDS, connections=8, close=False,
                pin=[],
            )  # fmt: skip
            load = await trio.to_thread.run_sync(flood)
    assert load.requests > 0 and load.non_2xx == load.requests  # every one a 404
    assert load.errors == load.non_2xx  # and nothing else went wrong
    for result in (quiet, flooded):
        assert result["errors"] == 0 and result["pings"] > 0, result
    print(
        f"\n404 flood: {load.requests_per_s:,.0f} unknown tokens/s, all 404; probe (200/s):"
        f" p99 {quiet['p99_ms']:.2f} ms before, {flooded['p99_ms']:.2f} ms during"
        f" ({flooded['pings']:.0f} pings, all 204)"
    )
