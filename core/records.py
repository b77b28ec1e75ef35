"""Named records that cross the Cython boundary of ``core._deadline``: positions are
defined here once, and every reader uses the names."""

from __future__ import annotations

from typing import NamedTuple


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
