"""Logging for every process: one format, errors by type only, and a repeated error
logged once with a count.

Errors are logged by type, never with their text or traceback, whoever logs them (our
code, asyncpg, uvicorn, asyncio): an exception's text can carry SQL parameters, a URL
with a secret in its path, a token. ``TypeOnly`` turns ``exc_info`` into the type's name.

A fault that repeats (EMFILE on every accept, a database that is down for every request)
must not write the same line, or traceback, thousands of times a second: that fills disks
and buries the first, useful line. ``RepeatFilter`` lets the first warning or error of a
kind (logger, level, message template) through, holds back the same kind for ``window``
seconds, counting, and adds the count to the next one it lets through. Information is
never held back. Its memory is bounded: at most ``max_kinds`` kinds are remembered.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WINDOW_SECONDS = 60.0
MAX_KINDS = 512


class RepeatFilter(logging.Filter):
    def __init__(
        self,
        window: float = WINDOW_SECONDS,
        max_kinds: int = MAX_KINDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window = window
        self.max_kinds = max_kinds
        self.clock = clock
        # kind -> (when it was last let through, how many were held back since)
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # what went right is told every time ("applied migration 0002")
        kind = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self.window:
            self._kinds[kind] = (seen[0], seen[1] + 1)
            return False
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} (and {seen[1]} more like it since the last one)"
        elif seen is None and len(self._kinds) >= self.max_kinds:
            self._kinds.pop(next(iter(self._kinds)))  # the oldest kind is forgotten
        self._kinds[kind] = (now, 0)
        return True


class TypeOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.msg} [{record.exc_info[0].__name__}]"
            record.exc_info = None
            record.exc_text = None
        record.stack_info = None
        return True


def configure(level: str | int = "INFO") -> None:
    """Every process's logging: to stderr, one format, repeats held back. Libraries that
    log request URLs at INFO (httpx: alert URLs hold secrets) are kept at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(TypeOnly())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The ASGI server's loggers go through the same handler (and filter) as ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncio"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
