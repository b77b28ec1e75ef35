"""20,000 idle connections against a real `lastseen ingest` process with its default cap
of 10,000 (issue 6, scenario 11): the first 10,000 are accepted and held; each further one
takes the place of an idle one, which is closed at once, so the ingest never holds more
than the cap; pings on new connections keep getting 204; no descriptor runs out.

Two helper processes hold the client side (10,000 sockets each), because one process's
descriptor limit may be below 20,000.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from ..support.dbhelp import ingest_process, metrics, seed, wait_for
from ..support.dbhelp import ping as one_ping

CAP = 10_000
WAVE = 10_000
HELPER = Path(__file__).parent.parent / "support" / "idle_clients.py"

pytestmark = pytest.mark.security


class Clients:
    """One helper process holding `n` idle connections."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    @classmethod
    async def open(cls, port: int, n: int) -> Clients:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(HELPER), str(port), str(n)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        clients = cls(process)
        assert await clients._line() == "opened"
        return clients

    async def _line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some()
            assert chunk, "the helper died"
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode().strip()

    async def closed(self) -> int:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"count\n")
        return int(await self._line())

    async def aclose(self) -> None:
        if self.process.stdin is not None:
            await self.process.stdin.aclose()
        with trio.move_on_after(10):
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def test_twenty_thousand_idle_connections_cannot_lock_pings_out(database_url, tmp_path):
    [m] = await seed(database_url, 1)
    env = {"LASTSEEN_MAX_CONNECTIONS": str(CAP),
           # Long enough that no idle connection times out during the test.
           "LASTSEEN_HEAD_TIMEOUT_SECONDS": "120"}  # fmt: skip
    waves: list[Clients] = []
    async with ingest_process(database_url, m.token, tmp_path / "ingest.log", **env) as ingest:
        port, admin = ingest.port, ingest.admin

        async def held(n: int) -> bool:
            # (A metrics call that timed out under the flood reads as not yet.)
            return (await metrics(admin)).get("open_connections") == n

        try:
            with trio.fail_after(120):
                start = trio.current_time()
                waves.append(await Clients.open(port, WAVE))
                await wait_for(lambda: held(CAP), within=30)
                waves.append(await Clients.open(port, WAVE))
                await wait_for(lambda: held(CAP), within=30)
                took = trio.current_time() - start
                # The first ping's connection takes an idle one's place and closes after
                # its 204; the others use the place it left.
                pings = [await one_ping(port, m.token) for _ in range(100)]
                await wait_for(lambda: held(CAP - 1), within=30)
                first, second = await waves[0].closed(), await waves[1].closed()
            seen = await metrics(admin)
        finally:
            for wave in waves:
                await wave.aclose()
    output = ingest.output()
    # The second wave took the first wave's places, one for one, and the first ping took
    # the place of one of the second wave's.
    assert pings == [204] * 100
    assert (first, second) == (WAVE, 1)
    assert seen["connections_evicted_total"] == WAVE + 1
    assert seen["connections_rejected_total"] == 0
    assert seen["open_connections"] == CAP - 1
    assert "EMFILE" not in output and "accept paused" not in output, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    assert ingest.process.returncode == 0
    print(
        f"\n{2 * WAVE} idle connections (cap {CAP}) in {took:.1f} s: {first} of the first"
        f" wave closed to make room, {second} of the second by the pings; 100 of 100 pings"
        " 204; 0 rejected, 0 EMFILE"
    )
