"""The ingest's one clock: trio's monotonic time anchored to the wall clock at start.

Pings are stamped, and deadlines computed, on this clock, so a wall-clock step (NTP, a
manual change) never fires or delays a deadline; the anchor is taken once, when the
process starts. Under trio's MockClock the same arithmetic runs on virtual time.
"""

from __future__ import annotations

import time

import trio


class Clock:
    """Seconds since the epoch, advancing with trio.current_time().

    Must be created and used inside trio.run().
    """

    def __init__(self, wall: float | None = None) -> None:
        start = time.time() if wall is None else wall
        self.offset = start - trio.current_time()

    def now(self) -> float:
        return trio.current_time() + self.offset

    def to_trio(self, t: float) -> float:
        """The trio.current_time() value at which this clock reads `t`."""
        return t - self.offset
