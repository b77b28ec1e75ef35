"""Three ingest hosts on 127.0.0.2-4 behind a real HAProxy and a real nginx at once, each
run with the configuration docs/scaling.md gives (its addresses and ports replaced by the
test's): pings for a fleet at its interval, alternately through each balancer, then
`kill -9` of one host (never restarted). Its shards are owned again within a lease and a quarter;
nothing else goes down; the monitors of the dead host's shards that had stopped just
before the kill each open exactly one incident; few pings fail around the kill (the
balancer's retries) and none once it has noticed.

Default: 3,000 monitors, 3 s leases, pings for 36 s after the kill; LASTSEEN_SLOW=1: the issue's 30,000
monitors at about 1,100 pings/s, the default 8 s lease, 3 minutes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
import trio

from core.pg import free_port
from core.seed import seed_monitors

from ..support.aio import run
from ..support.cluster import Proc, balanced, ingests, monitors_owned_by, ping_once, wait_for
from ..support.serving import stop

pytestmark = pytest.mark.faults
SLOW = bool(os.environ.get("LASTSEEN_SLOW"))
LEASE = 8.0 if SLOW else 3.0
MONITORS = 30_000 if SLOW else 3_000
# Pings go on until the stopped monitors have alerted (the takeover + 30 s).
AFTER_KILL = 180.0 if SLOW else 36.0
BEFORE_KILL = 8.0 if SLOW else 4.0
# Every monitor pinged once a round: within its 30 s, grace 0; and with the default size,
# the last round's pings are all well within 30 s of the end of the check.
ROUND = 27.0 if SLOW else 20.0
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
DOC = Path(__file__).parents[2] / "docs" / "scaling.md"


def _doc_block(language: str) -> str:
    found = re.search(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert found, f"docs/scaling.md has no {language} block"
    return found.group(1)


def _binary(name: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        pytest.fail(f"{name} is not installed (make test installs it: .ci/system-deps)")
    return path


@contextmanager
def balancer(kind: str, front: int, port: int, admin: int, workdir: Path) -> Iterator[None]:
    """The documented configuration of `kind`, on our ports, as a real process."""
    conf = _doc_block(kind).replace("127.0.0.1:8080", f"127.0.0.1:{front}")
    conf = conf.replace(":8080", f":{port}").replace("port 9108", f"port {admin}")
    if kind == "haproxy":
        path = workdir / "haproxy.cfg"
        path.write_text(conf)
        argv = [_binary("haproxy"), "-db", "-f", str(path)]
    else:
        # Where a non-root nginx may write, and in the foreground.
        conf = conf.replace(
            "http {",
            f"daemon off;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log warn;\n"
            f"http {{\n    client_body_temp_path {workdir}/body;\n"
            f"    proxy_temp_path {workdir}/proxy;\n    fastcgi_temp_path {workdir}/fastcgi;\n"
            f"    uwsgi_temp_path {workdir}/uwsgi;\n    scgi_temp_path {workdir}/scgi;",
            1,
        )
        path = workdir / "nginx.conf"
        path.write_text(conf)
        argv = [_binary("nginx"), "-p", str(workdir), "-c", str(path)]
    log_path = workdir / f"{kind}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:

        def answers() -> bool:
            assert process.poll() is None, f"{kind} exited: {log_path.read_text()[-2000:]}"
            return trio.run(ping_once, "127.0.0.1", front, "0" * 64) == 404

        wait_for(answers, 15, f"{kind} answering")
        yield
    finally:
        stop(process)


async def _seed(dsn: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    conn = await asyncpg.connect(dsn)
    try:
        fleet = await seed_monitors(conn, MONITORS, interval_sec=30, grace_sec=0)
        stopping = await seed_monitors(conn, 60, interval_sec=30, grace_sec=0, org="stops")
        return [(m.id, m.token) for m in fleet], [(m.id, m.token) for m in stopping]
    finally:
        await conn.close()


async def _outcome(dsn: str) -> tuple[dict[str, int], dict[int, int]]:
    """The fleet's events by kind, and the incidents opened per monitor (events: no alert
    worker runs here)."""
    conn = await asyncpg.connect(dsn)
    try:
        events = dict(
            await conn.fetch(
                "SELECT e.kind, count(*) FROM monitor_events e JOIN monitors m"
                " ON m.id = e.monitor_id JOIN orgs o ON o.id = m.org_id"
                " WHERE o.name <> 'stops' GROUP BY 1"
            )
        )
        opened = dict(
            await conn.fetch(
                "SELECT monitor_id, count(*) FROM monitor_events"
                " WHERE kind = 'incident_opened' GROUP BY 1"
            )
        )
        return events, opened
    finally:
        await conn.close()


KINDS = ("haproxy", "nginx")


def test_kill_9_of_one_host_behind_haproxy_and_nginx(database_url, tmp_path):
    fleet, stopping = run(_seed(database_url))
    fronts = {kind: free_port() for kind in KINDS}
    env = {"LASTSEEN_LEASE_SECONDS": str(LEASE)}
    with (
        ingests(database_url, HOSTS, tmp_path, env=env, same_ports=True) as procs,
        balancer("haproxy", fronts["haproxy"], procs[0].port, procs[0].admin_port, tmp_path),
        balancer("nginx", fronts["nginx"], procs[0].port, procs[0].admin_port, tmp_path),
    ):
        wait_for(lambda: balanced(procs), 20, "three hosts hold their share")
        victim: Proc = procs[1]
        doomed = run(monitors_owned_by(database_url, victim.admin))
        stops = [m for m in stopping if m[0] in doomed]
        assert stops
        # (wall time, status) of every ping, by balancer
        timelines: dict[str, list[tuple[float, int]]] = {kind: [] for kind in KINDS}
        turn = iter(range(1 << 62))

        async def ping(token: str) -> None:
            kind = KINDS[next(turn) % 2]
            status = await ping_once("127.0.0.1", fronts[kind], token)
            timelines[kind].append((time.time(), status))

        async def scenario() -> dict[str, float]:
            figures: dict[str, float] = {}
            for _id, token in stops:  # up, then never again
                await ping(token)
            started = time.time()
            send, receive = trio.open_memory_channel[str](64)

            async def worker() -> None:
                async for token in receive:
                    await ping(token)

            async with trio.open_nursery() as nursery:
                for _ in range(32):
                    nursery.start_soon(worker)
                async with send:
                    i = 0
                    rate = MONITORS / ROUND
                    while time.time() < started + BEFORE_KILL + AFTER_KILL:
                        _id, token = fleet[i % MONITORS]
                        await trio.sleep_until(
                            trio.current_time() + max(0.0, started + i / rate - time.time())
                        )
                        await send.send(token)
                        i += 1
                        if "kill" not in figures and time.time() >= started + BEFORE_KILL:
                            victim.stop(signal.SIGKILL)
                            figures["kill"] = time.time()
                            nursery.start_soon(_watch_takeover, figures)
            return figures

        async def _watch_takeover(figures: dict[str, float]) -> None:
            live = [p for p in procs if p is not victim]
            while sum(await trio.to_thread.run_sync(lambda: [p.shards() for p in live])) < 1024:
                await trio.sleep(0.1)
            figures["owned_again"] = time.time() - figures["kill"]

        figures = trio.run(scenario)

        # The stopped ones: deadline at the takeover + 30 s at the latest.
        def all_opened() -> bool:
            _events, opened = run(_outcome(database_url))
            return all(i in opened for i, _ in stops)

        wait_for(all_opened, 60, "the stopped monitors alert")
        time.sleep(1.5)
        events, opened = run(_outcome(database_url))
    kill = figures["kill"]
    seen: dict[str, str] = {}
    for kind, timeline in timelines.items():
        around = Counter(s for t, s in timeline if kill <= t < kill + 15)
        after = Counter(s for t, s in timeline if t >= kill + 15)
        before = Counter(s for t, s in timeline if t < kill)
        failed_around = sum(n for s, n in around.items() if s != 204)
        assert set(before) == {204}, (kind, before)
        assert failed_around <= 0.005 * sum(around.values()), (kind, around)
        assert set(after) == {204}, (kind, after)
        seen[kind] = (
            f"{kind}: {failed_around} of {sum(around.values()):,} pings failed in the 15 s"
            f" after the kill, {sum(after.values()):,} after that all 204"
        )
    assert figures["owned_again"] <= LEASE * 1.25 + 2, figures
    assert events == {"up": MONITORS}, events  # nothing went down falsely
    assert {i: opened.get(i, 0) for i, _ in stops} == {i: 1 for i, _ in stops}
    assert set(opened) == {i for i, _ in stops}
    print(
        f"\nHAProxy and nginx in front of 3 hosts, {MONITORS:,} monitors on 30 s (grace 0):"
        f" kill -9 of one host; its shards owned again after {figures['owned_again']:.2f} s"
        f" (lease {LEASE:g} s); {'; '.join(seen.values())}; only `up` events;"
        f" {len(stops)} stopped monitors of the dead host each opened exactly one incident"
    )
