"""Named records that cross the Cython boundary of ``core._deadline``: positions are
defined here once, and every reader uses the names."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Event(NamedTuple):
    """Something that happened to a monitor, as ``DeadlineTable.take_events()`` hands it
    over: what (``kind``), when (``at``), and the monitor's last ping then (``last_seen``,
    0.0 if never): the alert says when the last ping was, not when the deadline passed.
    ``status``: the exit status a ``failed`` event reported (0-255), else -1 (none; also
    a plain ``/fail``)."""

    monitor_id: int
    kind: str
    at: float
    last_seen: float
    status: int = -1


class DirtyRows(NamedTuple):
    """What ``DeadlineTable.take_dirty()`` hands over: the monitors whose only change is a
    later last_seen (the common case: a ping to an up monitor), then those whose state
    changed too, with all of it. A last_seen of 0.0 means never."""

    seen_ids: list[int]
    seen_last_seen: list[float]
    ids: list[int]
    last_seen: list[float]
    states: list[str]
    misses: list[int]
    incidents: list[bool]
    started: list[float]  # the open run's start (a monitor with a maxRuntime), 0.0: none

    def only(self, keep: Callable[[int], bool]) -> tuple[DirtyRows, int]:
        """The rows of the monitors `keep` accepts, and how many were left out."""
        seen = [i for i, m in enumerate(self.seen_ids) if keep(m)]
        full = [i for i, m in enumerate(self.ids) if keep(m)]
        rows = DirtyRows(
            [self.seen_ids[i] for i in seen],
            [self.seen_last_seen[i] for i in seen],
            [self.ids[i] for i in full],
            [self.last_seen[i] for i in full],
            [self.states[i] for i in full],
            [self.misses[i] for i in full],
            [self.incidents[i] for i in full],
            [self.started[i] for i in full],
        )
        return rows, len(self.seen_ids) + len(self.ids) - len(seen) - len(full)
