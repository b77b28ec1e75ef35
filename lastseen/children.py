"""Supervised children: started (a command, or a function in a process forked from this
one), restarted the moment they die, stopped together.

A child that exits unexpectedly is logged and restarted: at once the first time (a dead
ingest is a blind monitor), then after 1 s doubling to 30 s, reset once it has run for a
minute. `lastseen serve` supervises its processes so; `lastseen ingest --procs N` its N
ingest processes (``run_group``).

Why `--procs N` forks its ingest processes rather than starting each from its command:
a process that dies is back at once, with nothing to start but its own work (no
interpreter start-up, no imports): in the kill test a killed process held its shards
again 0.13-0.18 s after the kill, against 0.54-0.96 s when `serve` started a new command.
And one command runs a host's N processes. The siblings share their parent's address
layout (randomized at each start of the parent, as for nginx's workers or PostgreSQL's
backends): two scratch A/B runs found two interpreters on one core slower with a layout
each (0.74-0.77x of one process against 0.92-0.93x), the five rounds of the procs
benchmark did not (0.80x either way; README, Scaling out).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

from core.pg import bind_error
from core.settings import SettingsError, parse_address

log = logging.getLogger(__name__)

STOP_WAIT_SECONDS = 10.0
HEALTHY_AFTER_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


class Process(Protocol):
    """What the supervisor uses of a child process (subprocess.Popen has it)."""

    pid: int

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


class Forked:
    """`main()` in a process forked from this one, which must have no other thread (a
    fork copies only the caller's). The child resets what it inherited of the parent's
    signal handling (``Wakeup``), dies with the parent (SIGTERM: a graceful stop, on
    Linux), and exits with main()'s code (1 if it raised)."""

    def __init__(self, name: str, main: Callable[[], int], wake: Wakeup | None) -> None:
        self.args = name  # as Popen's, for TimeoutExpired
        self.returncode: int | None = None
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                _reset_after_fork(parent, wake)
                code = main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("%s failed", name)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pid = pid

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(0.02)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _reset_after_fork(parent: int, wake: Wakeup | None) -> None:
    signal.set_wakeup_fd(-1)
    if wake is not None:
        wake.close()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above
        raise SystemExit(1)


def check_free(listeners: list[tuple[str, str]]) -> None:
    """Raise SettingsError naming the first address of `listeners` that cannot be bound."""
    for what, address in listeners:
        error = bind_error(*parse_address(address, what))
        if error is not None:
            reason = error.strerror or str(error)
            raise SettingsError(f"cannot listen on {address} for {what}: {reason}")


@dataclass
class Child:
    """A supervised child: `argv` run as a command, or `main` in a forked process."""

    name: str
    argv: list[str] = field(default_factory=list)
    main: Callable[[], int] | None = None
    process: Process | None = None
    started_at: float = 0.0
    backoff: float = 0.0
    restart_at: float = 0.0

    def start(self, env: dict[str, str], wake: Wakeup | None = None) -> None:
        if self.main is not None:
            self.process = Forked(self.name, self.main, wake)
        else:
            self.process = subprocess.Popen(self.argv, env=env)
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)


class Wakeup:
    """Sleeps until a signal arrives (a child exiting: SIGCHLD; Ctrl-C) or the time is up:
    a dead ingest is started again the moment it dies, not at the next poll (its
    monitors are answered by its siblings meanwhile, but judged by nobody)."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # a handler: a wakeup
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    def wait(self, timeout: float) -> None:
        select.select([self._read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            os.read(self._read, 512)

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


def keep_alive(child: Child, env: dict[str, str], wake: Wakeup | None = None) -> None:
    """Restart `child` if it has exited (at once the first time, then backing off)."""
    process = child.process
    now = time.monotonic()
    if process is not None:
        code = process.poll()
        if code is None:
            if now - child.started_at > HEALTHY_AFTER_SECONDS:
                child.backoff = 0.0
            return
        log.error("%s exited with %s; restarting in %.0f s", child.name, code, child.backoff)
        child.process = None
        child.restart_at = now + child.backoff
        child.backoff = min(max(1.0, child.backoff * 2), 30.0)
    if now >= child.restart_at:
        child.start(env, wake)


def stop_all(children: list[Child]) -> None:
    """SIGTERM to every child still running, then wait for them (they stop gracefully
    within 5 s), and kill what is left after STOP_WAIT_SECONDS."""
    for child in children:
        if child.process is not None and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", child.name)
            child.process.kill()
            child.process.wait()


class StopRequest:
    """Whether SIGINT or SIGTERM has arrived since it was made (it handles them)."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.requested = True


def supervise(
    children: list[Child],
    env: dict[str, str],
    stop: StopRequest,
    wake: Wakeup,
    tick: Callable[[], None] | None = None,
) -> None:
    """Keep the started `children` alive (and call `tick` at each wakeup) until `stop`
    is requested, then stop them all."""
    while True:
        wake.wait(0.2)
        if stop.requested:
            break
        if tick is not None:
            tick()
        for child in children:
            keep_alive(child, env, wake)
    log.info("stopping")
    stop_all(children)


def run_group(children: list[Child]) -> int:
    """Fork `children` (each with a `main`), keep them alive until SIGINT or SIGTERM,
    then stop them: `lastseen ingest --procs N`."""
    stop = StopRequest()
    wake = Wakeup()
    env = dict(os.environ)
    for child in children:
        child.start(env, wake)
    supervise(children, env, stop, wake)
    return 0
