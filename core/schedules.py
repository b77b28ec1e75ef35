"""Cron schedules (issue 12): when a scheduled monitor's runs are expected.

A monitor may have a ``schedule`` instead of a period: five cron fields (minute, hour,
day of month, month, day of week; names like ``MON`` and ``JAN``, ``L`` and ``#`` as
Debian's cron has them) or ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``,
``@monthly``, ``@yearly`` (``@annually``), read in a time zone ``tz`` (an IANA name,
UTC by default). The expression is read and evaluated by cronsim, the library
healthchecks.io is built on, never by a parser of ours.

The rule, as cron users expect (Debian's cron, which cronsim follows):

- the run expected after a ping is the first scheduled time strictly after it; the monitor
  is late when no ping has come by that time + ``heartbeatGraceSec``;
- a time that does not exist (the hour skipped when clocks go forward) is expected right
  after the change: ``30 2 * * *`` in Europe/Berlin on 2026-03-29 is expected at 03:00
  CEST;
- a time that exists twice (the hour repeated when clocks go back) is expected once, at
  its first occurrence: ``30 2 * * *`` in Europe/Berlin on 2026-10-25 is 02:30 CEST;
- jobs that run every hour or more often (a ``*`` or a range in the hour field) follow the
  clock: in the repeated hour they are expected in both passes, in the skipped one never.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_LENGTH = 200  # characters of an expression
# Where the shortest gap between runs is looked for: the next this many runs (a year of
# a daily job; enough to meet the short gaps of any expression that has them often).
GAP_SAMPLE = 400


class ScheduleError(ValueError):
    """An expression or a time zone lastseen cannot use; `field` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Schedule:
    """A cron expression in a time zone; ``next_after`` is all the ingest asks of it."""

    __slots__ = ("_fields", "_zone", "expression", "tz")

    def __init__(self, expression: str, tz: str = "UTC") -> None:
        self.expression = expression.strip()
        self.tz = tz
        if len(self.expression) > MAX_LENGTH:
            raise ScheduleError("schedule", f"a schedule is at most {MAX_LENGTH} characters")
        try:
            self._zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(
                "tz", f"tz must be an IANA time zone name (Europe/Berlin, UTC), not {tz!r}"
            ) from None
        self._fields = MACROS.get(self.expression.lower(), self.expression)
        try:
            CronSim(self._fields, datetime.now(self._zone))
        except CronSimError as exc:
            raise ScheduleError("schedule", f"schedule is not a cron expression: {exc}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (self.expression, self.tz) == (other.expression, other.tz)

    def __hash__(self) -> int:
        return hash((self.expression, self.tz))

    def __repr__(self) -> str:
        return f"Schedule({self.expression!r}, {self.tz!r})"

    def next_after(self, at: float) -> float:
        """The first scheduled time strictly after `at` (epoch seconds), as epoch seconds;
        inf if there is none (an expression that never fires again, e.g. 30 February)."""
        start = datetime.fromtimestamp(at, self._zone)
        try:
            return next(CronSim(self._fields, start)).timestamp()
        except (StopIteration, CronSimError):
            return float("inf")

    def shortest_gap(self, start: float) -> float:
        """The shortest time between two consecutive runs among the next few after
        `start`: what the plan's floor is held against, and the period a monitor shows."""
        times = []
        it = CronSim(self._fields, datetime.fromtimestamp(start, self._zone))
        for _ in range(GAP_SAMPLE):
            try:
                times.append(next(it).timestamp())
            except (StopIteration, CronSimError):
                break
        gaps = [b - a for a, b in pairwise(times) if b > a]
        return min(gaps, default=float("inf"))


@lru_cache(maxsize=4096)
def schedule(expression: str, tz: str) -> Schedule:
    """One shared Schedule per (expression, tz): a fleet on `@daily` holds one object."""
    return Schedule(expression, tz)


def utc(at: float) -> str:
    """Epoch seconds as ISO 8601 in UTC (for messages and the API)."""
    return datetime.fromtimestamp(at, UTC).isoformat()
