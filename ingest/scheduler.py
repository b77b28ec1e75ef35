"""Running the table's deadlines on time.

The loop sleeps until the table's next registered deadline (never more than a second, and
woken early by ``wake()`` when a configuration change may have moved a deadline closer),
processes everything due, and hands the events to ``on_events`` with the time it ran.
With ``slack`` (an owner with peers: ``handoff.SLACK``), a deadline is judged that much
later, so a ping another process answered just before it has time to arrive. Woken more
than ``PAUSE_SECONDS`` late, the process was frozen: ``on_pause`` runs before anything is
judged (the service gives every monitor it judges a new floor: ``DeadlineTable.amnesty``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from core import DeadlineTable
from core.records import Event

from .clock import Clock

Events = list[Event]
MAX_SLEEP_SECONDS = 1.0
# Woken this much later than asked: the process was frozen (SIGSTOP, a stalled host or
# event loop), and pings may have gone unheard meanwhile.
PAUSE_SECONDS = 2.0


class Deadlines:
    def __init__(
        self,
        table: Callable[[], DeadlineTable],
        clock: Clock,
        on_events: Callable[[Events, float], None],
        slack: Callable[[], float] = lambda: 0.0,
        on_pause: Callable[[float, float], None] = lambda _now, _late: None,
    ) -> None:
        self._table = table
        self._slack = slack
        self._on_pause = on_pause
        self._clock = clock
        self._on_events = on_events
        self._wake = trio.Event()

    def wake(self) -> None:
        """A deadline may have moved closer: look again now."""
        self._wake.set()

    async def run(self) -> None:
        """Process deadlines forever (cancel to stop). Never returns."""
        clock = self._clock
        # Lateness is measured on the machine's monotonic clock, not on `clock`: a
        # MockClock's jump is time passing while the process listened, not a freeze.
        real_wake_at = time.monotonic()
        while True:
            table = self._table()
            now = clock.now()
            late = time.monotonic() - real_wake_at
            if late > PAUSE_SECONDS:
                self._on_pause(now, late)
            slack = self._slack()
            table.pop_due(now - slack)
            self._on_events(table.take_events(), now)
            wake_at = min(table.next_deadline() + slack, now + MAX_SLEEP_SECONDS)
            real_wake_at = time.monotonic() + max(0.0, wake_at - now)
            self._wake = trio.Event()
            with trio.move_on_at(clock.to_trio(wake_at)):
                await self._wake.wait()
