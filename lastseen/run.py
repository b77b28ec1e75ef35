"""`lastseen run`: run a command and report it to its monitor (what runitor and
`cronitor exec` do).

    lastseen run --url https://host/api/v1/heartbeats/<token> -- backup.sh --full

It sends ``/start`` (in the background: the command never waits for lastseen), runs the
command with its stdin, stdout and stderr passed through, then sends its exit status
(``/0`` for success, ``/<n>`` otherwise; a command killed by signal N is 128+N, one that
cannot be started 127) with the last 10 KB of its output as the body, and exits with the
command's own status. Both pings carry the same ``?rid=`` so overlapping runs pair up.

A ping that fails for a reason that can pass (no connection, a timeout, a 5xx, 429) is
retried with backoff for at most ``--timeout`` seconds; lastseen being away never keeps
the command from running, and never changes the exit status. The ping URL holds the
secret token: give it as ``LASTSEEN_PING_URL`` or in ``--token-file`` rather than on the
command line, where other users of the machine can read it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from types import FrameType
from typing import IO

TAIL_BYTES = 10_000
OUTPUT_GRACE = 2.0  # seconds the output may still flow once the command has exited
DEFAULT_TIMEOUT = 10.0
DEFAULT_SERVER = "http://127.0.0.1:8080"
PING_PATH = "/api/v1/heartbeats/"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        help="the monitor's ping URL, .../api/v1/heartbeats/<token> (or LASTSEEN_PING_URL)",
    )
    p.add_argument("--token-file", help="a file holding the monitor's token")
    p.add_argument(
        "--server",
        help=f"with --token-file: where lastseen answers pings (LASTSEEN_PUBLIC_URL, "
        f"{DEFAULT_SERVER})",
    )
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT,
        help=f"seconds to keep retrying each ping ({DEFAULT_TIMEOUT:g})",
    )  # fmt: skip
    p.add_argument(
        "argv", nargs=argparse.REMAINDER, metavar="command",
        help="-- the command and its arguments",
    )  # fmt: skip


def ping_url(args: argparse.Namespace, env: dict[str, str]) -> str:
    """The base ping URL from the arguments; ValueError saying what is missing."""
    if args.url:
        url = str(args.url)
    elif args.token_file:
        with open(args.token_file, encoding="ascii") as f:
            token = f.read().strip()
        server = args.server or env.get("LASTSEEN_PUBLIC_URL") or DEFAULT_SERVER
        url = server.rstrip("/") + PING_PATH + token
    elif env.get("LASTSEEN_PING_URL"):
        url = env["LASTSEEN_PING_URL"]
    else:
        raise ValueError("say where to ping: --url, --token-file or LASTSEEN_PING_URL")
    if PING_PATH not in url:
        raise ValueError(f"a ping URL ends in {PING_PATH}<token>")
    return url.rstrip("/")


class Pinger:
    """Sends one ping with retries within `timeout` seconds; reports, never raises."""

    def __init__(self, url: str, timeout: float, agent: str, say: Callable[[str], None]) -> None:
        self.url = url
        self.timeout = timeout
        self.agent = agent
        self.say = say

    def send(self, suffix: str, rid: str, body: bytes = b"") -> bool:
        target = f"{self.url}/{suffix}?rid={rid}"
        give_up = time.monotonic() + self.timeout
        delay = 0.5
        while True:
            left = give_up - time.monotonic()
            request = urllib.request.Request(
                target, data=body, method="POST", headers={"User-Agent": self.agent}
            )
            try:
                with urllib.request.urlopen(request, timeout=max(0.5, min(5.0, left))):
                    return True
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code != 429:
                    self.say(f"the /{suffix} ping was refused ({exc.code}): check the URL")
                    return False
                why = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:
                why = type(exc).__name__
            left = give_up - time.monotonic()
            if left <= 0:
                self.say(f"the /{suffix} ping could not be sent ({why}); gave up")
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, 4.0)


class Tail:
    """The last `size` bytes of what passed through (stdout and stderr, as they came)."""

    def __init__(self, size: int = TAIL_BYTES) -> None:
        self.size = size
        self._data = bytearray()
        self._lock = threading.Lock()

    def add(self, chunk: bytes) -> None:
        with self._lock:
            self._data += chunk
            if len(self._data) > self.size:
                del self._data[: len(self._data) - self.size]

    def value(self) -> bytes:
        with self._lock:
            return bytes(self._data)


def _pump(source: IO[bytes], sink: IO[bytes], tail: Tail) -> None:
    while chunk := source.read1(65536):  # type: ignore[attr-defined]
        tail.add(chunk)
        try:
            sink.write(chunk)
            sink.flush()
        except (BrokenPipeError, ValueError):
            pass  # our own output is gone: the command still runs, its tail still kept


def run_command(command: list[str], tail: Tail) -> int:
    """Run `command` with output passed through and kept in `tail`; its exit status as
    the shell reports it (128+N if killed by signal N, 127 if it cannot be started)."""
    try:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        message = f"lastseen run: cannot start {command[0]!r}: {exc.strerror}\n".encode()
        tail.add(message)
        sys.stderr.buffer.write(message)
        sys.stderr.flush()
        return 127

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    def wait_for_it(_signum: int, _frame: FrameType | None) -> None:
        pass  # Ctrl-C reaches the command itself (one process group): we wait for it

    # SIGTERM and SIGHUP (a supervisor, a closed session) go on to the command; SIGINT
    # from a terminal reaches it directly, and sending it again would make a command
    # that stops gracefully on the first one stop hard on the second.
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGHUP: signal.signal(signal.SIGHUP, forward),
        signal.SIGINT: signal.signal(signal.SIGINT, wait_for_it),
    }
    assert child.stdout is not None and child.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(child.stdout, sys.stdout.buffer, tail), daemon=True),
        threading.Thread(target=_pump, args=(child.stderr, sys.stderr.buffer, tail), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    try:
        status = child.wait()
        # Its output ends when the pipes close; a process it left behind (a daemon it
        # started) may hold them open for ever: the run is over when the command is.
        give_up = time.monotonic() + OUTPUT_GRACE
        for pump in pumps:
            pump.join(max(0.0, give_up - time.monotonic()))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - status if status < 0 else status


def main(args: argparse.Namespace, version: str) -> int:
    command = list(args.argv)
    if command and command[0] == "--":
        command = command[1:]

    def say(message: str) -> None:
        print(f"lastseen run: {message}", file=sys.stderr, flush=True)

    if not command:
        say("no command: lastseen run [--url URL] -- command args...")
        return 2
    try:
        url = ping_url(args, dict(os.environ))
    except (OSError, ValueError) as exc:
        say(f"{exc}; running the command unmonitored")
        return run_command(command, Tail())
    pinger = Pinger(url, args.timeout, f"lastseen-run/{version}", say)
    rid = str(uuid.uuid4())
    start = threading.Thread(target=pinger.send, args=("start", rid), daemon=True)
    start.start()
    tail = Tail()
    status = run_command(command, tail)
    start.join(args.timeout + 5)  # the start goes first, so the run's duration is right
    pinger.send(str(min(status, 255)), rid, tail.value())
    return status
