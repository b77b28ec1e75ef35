"""1,500 requests at once for the control process through the ingest (issue 16, item 6),
the control process held to the usual 1,024 descriptors: before, the ingest opened one
upstream connection per forwarded request, the control process ran out of descriptors
(EMFILE), answered 10 of 1,500 in 10 s and logged 112,363 identical tracebacks. Now the
ingest keeps at most 64 upstream connections and the rest wait their turn: every request
is answered, and the control process's log stays quiet."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest
import trio

from control.crypto import Keyring
from core.pg import free_port

from ..support.dbhelp import ingest_process, seed, wait_for
from ..support.exposure import EXPOSURE
from ..support.serving import stop

REQUESTS = 1_500
pytestmark = pytest.mark.security


def _control_limited(dsn: str, port: int, log) -> subprocess.Popen[bytes]:
    def at_most_1024_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    env = {**os.environ, "LASTSEEN_DATABASE_URL": dsn,
           "LASTSEEN_KEYRING": Keyring.generate().to_json()}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "lastseen", "control", "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=at_most_1024_descriptors,
    )  # fmt: skip


async def _get(port: int, path: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
        return answer


async def test_a_burst_of_forwarded_requests_cannot_exhaust_the_control_process(
    database_url, tmp_path
):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < REQUESTS + 512:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(REQUESTS + 512, hard), hard))
    [m] = await seed(database_url, 1)
    control_port = free_port()
    control_log = tmp_path / "control.log"
    with control_log.open("wb") as log:
        control = _control_limited(database_url, control_port, log)
    try:

        async def control_up() -> bool:
            try:
                return (await _get(control_port, "/healthz")).startswith(b"HTTP/1.1 200")
            except OSError:
                return False

        await wait_for(control_up, within=30, step=0.1)
        env = {"LASTSEEN_CONTROL_UPSTREAM": f"127.0.0.1:{control_port}"}
        async with ingest_process(database_url, m.token, tmp_path / "ingest.log", **env) as ing:
            answers: list[bytes] = []
            peak = 0
            start = trio.current_time()
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    for _ in range(REQUESTS):
                        nursery.start_soon(lambda: _collect(answers, _get(ing.port, "/healthz")))
                    while len(answers) < REQUESTS:
                        peak = max(peak, _connections_to(control_port))
                        await trio.sleep(0.01)
            took = trio.current_time() - start
    finally:
        stop(control, within=10)
        output = control_log.read_text(errors="replace")
        EXPOSURE.text("lastseen control output", "process outputs", output)
    statuses = sorted({a.split(b" ", 2)[1].decode() for a in answers if a})
    assert len(answers) == REQUESTS and statuses == ["200"], statuses
    assert 0 < peak <= 64, peak  # the ingest's cap on upstream connections
    assert "Too many open files" not in output and "EMFILE" not in output
    assert "Traceback" not in output
    assert len(output.splitlines()) < 20, output[-2000:]
    print(
        f"\n{REQUESTS} forwarded requests at once, the control process at 1,024 descriptors:"
        f" all answered 200 in {took:.1f} s, at most {peak} upstream connections at once;"
        f" {len(output.splitlines())} lines in its log"
    )


def _connections_to(port: int) -> int:
    """Established TCP connections to 127.0.0.1:port, from /proc/net/tcp (client ends)."""
    wanted = f"0100007F:{port:04X}"
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[2] == wanted and fields[3] == "01":  # remote address, ESTABLISHED
                count += 1
    return count


async def _collect(answers: list[bytes], request) -> None:
    answers.append(await request)
