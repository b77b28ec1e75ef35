"""`lastseen run` against a real HTTP server on 127.0.0.1, with real commands.

The receiver here (tests/support/receivers.py) records what it is sent; the end-to-end test through `lastseen serve`
(tests/test_checkins_e2e.py) checks what lastseen makes of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.pg import free_port

from .support.receivers import HttpReceiver, Received, Reply, http_receiver

TOKEN = "ab" * 32
LASTSEEN = [sys.executable, "-m", "lastseen"]


@dataclass
class Receiver:
    """The shared HTTP receiver (tests/support/receivers.py) as a ping endpoint: the pings
    it accepted, as (path with query, body, user agent); answers `status`, after 503 to
    the first `failures_first`."""

    http: HttpReceiver
    status: int = 204
    failures_first: int = 0
    refused: int = 0  # the first requests, answered 503

    @property
    def url(self) -> str:
        return f"{self.http.url}/api/v1/heartbeats/{TOKEN}"

    @property
    def port(self) -> int:
        return int(self.http.url.rsplit(":", 1)[1])

    @property
    def got(self) -> list[tuple[str, bytes, str]]:
        return [(r.path, r.body, r.headers.get("user-agent", ""))
                for r in self.http.on()[self.refused:]]  # fmt: skip

    def answer(self, _request: Received) -> Reply:
        if self.refused < self.failures_first:
            self.refused += 1
            return 503, {}, b""
        return self.status, {}, b""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver() as http:
        box = Receiver(http)
        http.rule = box.answer
        yield box


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*LASTSEEN, "run", *args], capture_output=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_a_failing_command_sends_start_then_its_exit_status_with_its_output(receiver):
    done = run("--url", receiver.url, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert done.returncode == 3
    assert done.stdout == b"out\n" and done.stderr == b"err\n"  # passed through untouched
    (start, _, agent), (end, body, _) = receiver.got
    rid = start.split("?rid=")[1]
    assert start == f"/api/v1/heartbeats/{TOKEN}/start?rid={rid}"
    assert end == f"/api/v1/heartbeats/{TOKEN}/3?rid={rid}"
    assert sorted(body.splitlines()) == [b"err", b"out"]
    assert agent.startswith("lastseen-run/")


def test_success_is_exit_status_0_and_only_the_last_10_kb_of_output_go(receiver):
    script = "head -c 30000 /dev/zero | tr '\\0' a; printf END"
    done = run("--url", receiver.url, "--", "sh", "-c", script)
    assert done.returncode == 0 and len(done.stdout) == 30_003
    _, (end, body, _) = receiver.got
    assert "/0?rid=" in end
    assert len(body) == 10_000 and body.endswith(b"aEND")


def test_the_url_may_come_from_the_environment_or_a_token_file(receiver, tmp_path: Path):
    assert run("--", "true", env={"LASTSEEN_PING_URL": receiver.url}).returncode == 0
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    server = f"http://127.0.0.1:{receiver.port}"
    assert run("--token-file", str(token_file), "--server", server, "--", "true").returncode == 0
    assert [path.split("?")[0].rsplit("/", 1)[1] for path, _, _ in receiver.got] == [
        "start", "0", "start", "0",
    ]  # fmt: skip


def test_a_ping_that_fails_for_a_while_is_retried(receiver):
    receiver.failures_first = 2
    assert run("--url", receiver.url, "--timeout", "20", "--", "true").returncode == 0
    assert [p.split("?")[0].rsplit("/", 1)[1] for p, _, _ in receiver.got] == ["start", "0"]


def test_with_lastseen_away_the_command_still_runs_and_its_status_is_kept(tmp_path: Path):
    marker = tmp_path / "ran"
    url = f"http://127.0.0.1:{free_port()}/api/v1/heartbeats/{TOKEN}"  # nothing listens
    started = time.monotonic()
    done = run("--url", url, "--timeout", "2", "--", "sh", "-c", f"touch {marker}; exit 5")
    assert done.returncode == 5 and marker.exists()
    assert b"could not be sent" in done.stderr
    assert time.monotonic() - started < 30  # bounded: two pings of 2 s each, and start-up


def test_a_refused_ping_is_not_retried_and_a_missing_command_is_127(receiver):
    receiver.status = 404
    done = run("--url", receiver.url, "--timeout", "30", "--", "/nonexistent/command")
    assert done.returncode == 127
    assert b"refused (404)" in done.stderr and b"cannot start" in done.stderr
    assert len(receiver.got) == 2  # one each: a 404 will not pass


def test_no_url_runs_the_command_unmonitored_and_says_so():
    done = run("--", "sh", "-c", "exit 4", env={"LASTSEEN_PING_URL": ""})
    assert done.returncode == 4 and b"running the command unmonitored" in done.stderr


def test_a_command_killed_by_a_signal_reports_128_plus_it(receiver):
    done = run("--url", receiver.url, "--", "sh", "-c", "kill -TERM $$")
    assert done.returncode == 128 + 15
    assert "/143?rid=" in receiver.got[-1][0]


def test_a_sigterm_to_the_wrapper_reaches_the_command_and_is_reported(receiver, tmp_path):
    import signal as signals

    marker = tmp_path / "started"
    script = f"trap 'echo stopping; exit 7' TERM; touch {marker}; while :; do sleep 0.1; done"
    wrapper = subprocess.Popen(
        [*LASTSEEN, "run", "--url", receiver.url, "--", "sh", "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.05)
        wrapper.send_signal(signals.SIGTERM)
        out, _ = wrapper.communicate(timeout=30)
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
    assert wrapper.returncode == 7 and out == b"stopping\n"
    assert "/7?rid=" in receiver.got[-1][0] and receiver.got[-1][1] == b"stopping\n"


def test_a_process_the_command_leaves_behind_does_not_hold_the_run_open(receiver):
    started = time.monotonic()
    # (The sleep ends by itself soon after: nothing is left running.)
    done = run("--url", receiver.url, "--", "sh", "-c", "sleep 8 & echo left")
    assert done.returncode == 0 and time.monotonic() - started < 7
    assert "/0?rid=" in receiver.got[-1][0] and receiver.got[-1][1] == b"left\n"
