"""Run a coroutine on a plain asyncio loop.

trio-asyncio, once imported by the ingest's tests, installs its own event-loop policy for
the whole process; the control plane's code runs on plain asyncio in production, and is
tested on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(coro)
