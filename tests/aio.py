"""Run a coroutine on a plain asyncio loop.

trio-asyncio, once imported by the ingest's tests, installs its own event-loop policy for
the whole process; the control plane's code runs on plain asyncio in production, and is
tested on it. Where the calling thread already runs a loop (Playwright's sync API keeps
one), the coroutine runs on a loop of its own in another thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(coro)


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_run, coro).result()
