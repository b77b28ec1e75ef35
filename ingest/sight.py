"""Blindness: telling "the fleet stopped" from "we stopped hearing the fleet".

A dead load balancer or proxy in front of lastseen, a DNS or network failure between the
fleet and us: pings stop arriving for everyone at once, and every monitor would go down
and page. This module tells that apart from monitors dying, and makes those misses
``unknown`` instead (issue 13; the table's side is ``DeadlineTable.blind``/``sighted``).

The measure
-----------
Over the last ``window`` seconds, compare the monitors that went late (misses: a ``down``
or ``timed_out`` event, or an ``incident_opened`` that no failure signal caused) with the
pings that arrived on time for deadlines in the same seconds: ``DeadlineTable.heard``
counts each on-time ping at the deadline it moved away, not at its arrival. A healthy
fleet has far more of the second; a fleet whose pings do not reach us has none, whatever
the shape of its traffic (a thousand cron jobs pinging in the same second every minute
are counted at their shared deadline, so the quiet 59 seconds between say nothing).
Blind when at least ``min_late`` monitors are late and they are at least ``ratio`` of
late + heard. A real outage of part of the fleet (one data centre of two) stays an outage:
the other part's pings keep the share below the ratio.

Deciding needs the seconds after a deadline, so the misses of the last ``window``
seconds are *held*: their events (and their monitors' rows) wait in a line, in order per
monitor, and go to the database once older than the window. If blindness is declared,
the held misses are dropped instead, and their monitors become unknown. Nothing is held
while the table has fewer than ``min_late`` monitors loaded (blindness could never be
declared): small installations alert as before, to the second. A failure signal is
never held for itself (a job that said it failed was heard).

While blind, misses make monitors unknown with no event. Pings coming back make their
monitors up again, silently; once the unknown monitors are down to half of their peak
(pings are flowing again), the table is ``sighted`` from when they began to come back
(the unknown count fell below 90% of its peak): every monitor is judged afresh from there,
so one that resumes within its interval + grace of the gap's end never alerts, and one
that really died alerts at that deadline.

Each blind period is reported (``reports``) for the service to write to
``blind_periods``; the worker tells the organisations' owners and system-alert channels.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from core import DeadlineTable
from core.records import Event

MISSES = frozenset({"down", "timed_out", "incident_opened"})
BACK = 0.9  # pings came back when the unknown monitors fell below this share of the peak
SIGHTED = 0.5  # and blindness ends at this share


@dataclass(frozen=True)
class SightConfig:
    window: int = 10  # LASTSEEN_BLIND_WINDOW_SEC; 0: never blind, nothing held
    ratio: float = 0.8  # LASTSEEN_BLIND_RATIO
    min_late: int = 50  # LASTSEEN_BLIND_MIN_LATE


@dataclass
class Period:
    """One blind period of this process, as written to ``blind_periods``."""

    since: float  # the first miss it undid (or the decision, less the window)
    detected_at: float
    late: int
    heard: int
    back_at: float | None = None
    ended_at: float | None = None
    unknown_peak: int = 0
    row_id: int | None = field(default=None, compare=False)  # once written


@dataclass
class _Held:
    event: Event
    miss: bool  # a miss (held for the window), or behind one of its monitor's


class Sight:
    def __init__(self, config: SightConfig) -> None:
        self.config = config
        self._line: deque[_Held] = deque()
        self._held: Counter[int] = Counter()  # monitor -> its events in the line
        self.period: Period | None = None
        self.reports: list[Period] = []  # periods begun or ended, for the database
        self.periods = 0
        self.dropped = 0  # miss events dropped as blindness
        self.last_late = 0
        self.last_heard = 0

    @property
    def blind(self) -> bool:
        return self.period is not None

    def holding(self, table: DeadlineTable) -> bool:
        return self.config.window > 0 and len(table) >= self.config.min_late

    def holds(self, monitor_id: int) -> bool:
        return self._held[monitor_id] > 0

    def held_count(self) -> int:
        return len(self._line)

    def admit(self, events: Iterable[Event], table: DeadlineTable) -> list[Event]:
        """Events as the table emitted them: those that may be written now."""
        holding = self.holding(table)
        if not holding and not self._line:
            return list(events)
        out: list[Event] = []
        failed_at: dict[int, float] = {}
        for e in events:
            if e.kind == "failed":
                failed_at[e.monitor_id] = e.at
            miss = holding and e.kind in MISSES and failed_at.get(e.monitor_id) != e.at
            if miss or self._held[e.monitor_id]:
                self._line.append(_Held(e, miss))
                self._held[e.monitor_id] += 1
            else:
                out.append(e)
        return out

    def release(self, now: float) -> list[Event]:
        """Held events whose window has passed (all of them at `now` = inf), in order
        per monitor."""
        cutoff = _first_second(now, self.config.window)
        out: list[Event] = []
        kept: deque[_Held] = deque()
        blocked: set[int] = set()
        for h in self._line:
            monitor_id = h.event.monitor_id
            if monitor_id in blocked or (h.miss and h.event.at >= cutoff):  # in the window
                blocked.add(monitor_id)
                kept.append(h)
            else:
                out.append(h.event)
                self._held[monitor_id] -= 1
                if not self._held[monitor_id]:
                    del self._held[monitor_id]
        self._line = kept
        return out

    def drop(self, gone: Callable[[int], bool]) -> int:
        """Forget the held events of monitors `gone` accepts (shards lost)."""
        before = len(self._line)
        self._line = deque(h for h in self._line if not gone(h.event.monitor_id))
        self._held = Counter(h.event.monitor_id for h in self._line)
        return before - len(self._line)

    def judge(self, table: DeadlineTable, now: float) -> None:
        """Once per scheduler round, after the round's events were admitted."""
        if self.period is None:
            self._look(table, now)
        else:
            self._watch(table, now)

    def _look(self, table: DeadlineTable, now: float) -> None:
        config = self.config
        if not config.window:
            return
        since = _first_second(now, config.window)
        late = {h.event.monitor_id for h in self._line if h.miss and h.event.at >= since}
        heard = table.heard(now, config.window)
        self.last_late, self.last_heard = len(late), heard
        if len(late) < config.min_late or len(late) < config.ratio * (len(late) + heard):
            return
        # Blind: every held miss was blindness. A monitor that also reported a failure
        # keeps its state and its incident (the failure explains them, and its events go
        # out); its misses are dropped all the same.
        failed = {h.event.monitor_id for h in self._line if h.event.kind == "failed"}
        missed = [h.event for h in self._line if h.miss]
        down = {e.monitor_id for e in missed} - failed
        opened = {e.monitor_id for e in missed if e.kind == "incident_opened"} - failed
        table.blind(sorted(down), sorted(opened))
        self._line = deque(h for h in self._line if not h.miss)
        self._held = Counter(h.event.monitor_id for h in self._line)
        self.dropped += len(missed)
        self.periods += 1
        first = min((e.at for e in missed), default=since)
        self.period = Period(first, now, len(late), heard, unknown_peak=table.unknown_count())
        self.reports.append(self.period)

    def _watch(self, table: DeadlineTable, now: float) -> None:
        period = self.period
        assert period is not None
        unknown = table.unknown_count()
        period.unknown_peak = max(period.unknown_peak, unknown)
        if period.back_at is None and (unknown < BACK * period.unknown_peak or not unknown):
            period.back_at = now
        if period.back_at is not None and unknown <= SIGHTED * period.unknown_peak:
            table.sighted(period.back_at)
            period.ended_at = now
            self.period = None
            self.reports.append(period)


def _first_second(now: float, window: int) -> float:
    """Where the window ending at `now` begins: in whole seconds, as the table counts
    on-time pings (``DeadlineTable.heard``); a miss at or after it is in the window."""
    if math.isinf(now):
        return now
    return float(math.floor(now) - window + 1)
