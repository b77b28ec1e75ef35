"""What this process still owes the seen log (``core/seenlog.py``), and its next row.

A monitor whose only change is a later last-seen time waits in the table, marked
(``DeadlineTable.take_dirty(keep_seen=True)`` leaves it there), until a row is due (every
``every`` seconds, or at once when the process gives shards back or stops); the row takes
the table's latest time of each (``take_seen``). A row holds a delta section per
shard with waiting entries, and full sections for the next few shards of a rotation
over the shards this process judges, so that every shard is rewritten in full at least
``FULL_ROUND`` rows (a round). Only shards this process holds are written (the flush
fences them); what waits for a shard it lost is dropped, as the rest of its unflushed
state is: the new owner loads what was written, with the amnesty of a takeover.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Container, Sequence
from typing import NamedTuple

from core import DeadlineTable, seenlog
from core._seenpack import sections
from core.records import DirtyRows
from core.shards import SHARDS

from .store import SeenRow


class SeenWriter:
    def __init__(self, every: float, full_every: float | None = None) -> None:
        self.every = every  # 0: the seen log is off; flushes write every last-seen
        self.full_every = every * seenlog.FULL_ROUND if full_every is None else full_every
        self.waiting = 0  # monitors the table kept for the next row, at the last flush
        self.next_row_at = -math.inf
        self._round: list[int] = []  # judged shards not yet rewritten in full this round
        self._refull: set[int] = set()  # full sections of a row that was not written
        self.rows = 0
        self.entries = 0
        self.dropped = 0
        self.pruned = 0

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def take_dirty(self, table: DeadlineTable) -> DirtyRows:
        """A flush's rows from the table. With the seen log on, a monitor only pinged
        stays marked in the table until the next row takes it (``plan``), so a flush
        costs nothing per ping; ``waiting`` counts those it kept."""
        if not self.enabled:
            return table.take_dirty()
        rows = table.take_dirty(keep_seen=True)
        self.waiting = table.dirty_count
        return rows

    def row(
        self, table: DeadlineTable, held: Container[int], now: float, *, force: bool = False
    ) -> tuple[SeenRow | None, Sequence[int]]:
        """The row due now (None if none is), and the monitors it took from the table
        (give them back with ``failed`` if the row is not written)."""
        plan = self.plan(table, held, now, force=force)
        row = None if plan is None else self.built(plan, build(plan))
        return row, ([] if plan is None or row is None else plan.ids)

    def plan(
        self, table: DeadlineTable, held: Container[int], now: float, *, force: bool = False
    ) -> Plan | None:
        """What the row due now is made of (None if none is due), read from the table
        and the monitors it takes from the table: the table's part, on the event loop (one
        pass over the marked monitors into arrays, about 4 ms at 95,000). Making the row (``build``:
        the sections' layout, natively, and deflate) is apart, so that the service can do
        it in a thread: at 95,000 entries about 55 ms, nearly all of it without the GIL
        (it was a Python pass of 130 ms that held it against the loop's pings)."""
        if not force and now < self.next_row_at:
            return None
        if self.next_row_at == -math.inf and not force:
            self.next_row_at = now + self.every  # the first row one period after start
            return None
        # Full sections only for shards the table judges now: one it let go (given back,
        # a stop) has its monitors foreign, and an empty "full" section would let the
        # prune drop the rows that hold their times.
        judged = {s for s in table.owned() if s in held}
        full = {s for s in self._refull if s in judged}
        if not self._round:
            self._round = sorted(judged, reverse=True)
        share = math.ceil(len(judged) * self.every / self.full_every) if judged else 0
        while self._round and share > 0:
            shard = self._round.pop()
            if shard in judged:
                full.add(shard)
                share -= 1
        ids, times, shards = table.take_seen()
        self.waiting = 0
        self._refull = set()
        return Plan(
            ids, times, shards, held, full, table.seen_times(full), math.floor(now * 1000), now
        )

    def built(self, plan: Plan, made: tuple[SeenRow | None, int]) -> SeenRow | None:
        """Take in what ``build`` made of `plan`: the row (None if it had nothing)."""
        row, dropped = made
        self.dropped += dropped  # deleted, or their shard was lost: not ours to write
        if row is None:
            self.next_row_at = plan.now + self.every
        return row

    def written(self, row: SeenRow, now: float) -> None:
        self.next_row_at = now + self.every
        self.rows += 1
        self.entries += row.entries

    def failed(self, row: SeenRow, table: DeadlineTable, taken: Sequence[int]) -> None:
        """`row` was not written: the monitors it took are marked in the table again (the
        next row takes their latest times), its full sections go into the next row."""
        self._refull.update(s for s, full in zip(row.shards, row.fulls, strict=True) if full)
        table.mark_dirty(taken, changed=False)


class Plan(NamedTuple):
    ids: array[int]  # the monitors taken from the table (DeadlineTable.take_seen)
    times: array[float]  # the latest ping of each
    shards: array[int]  # the shard of each of `ids`
    held: Container[int]  # the shards this process may write
    full: set[int]  # the shards to rewrite in full
    seen_times: tuple[list[int], list[int], list[float]]  # theirs: shard, id, last ping
    base_ms: int
    now: float


def build(plan: Plan) -> tuple[SeenRow | None, int]:
    """The row `plan` makes (None if nothing is in it), and how many entries it dropped.
    Reads only `plan`: safe in a thread (the sections are laid out natively, and deflate
    lets go of the GIL)."""
    held = bytes(s in plan.held for s in range(SHARDS))
    full = bytes(s in plan.full for s in range(SHARDS))
    deltas, dropped = sections(plan.ids, plan.times, plan.shards, held, full, plan.base_ms)
    full_shards, full_ids, full_times = plan.seen_times
    fulls = {s: (b"", 0) for s in plan.full}  # a full section with no one seen is empty
    made, _ = sections(array("q", full_ids), array("d", full_times), array("i", full_shards),
                       _ALL, _NONE, plan.base_ms)  # fmt: skip
    fulls.update((shard, (planes, n)) for shard, planes, n in made)
    if not deltas and not fulls:
        return None, dropped
    parts = [(s, False, seenlog.compress(planes)) for s, planes, _ in deltas]
    parts += [(s, True, seenlog.compress(fulls[s][0]) if fulls[s][1] else b"")
              for s in sorted(fulls)]  # fmt: skip
    entries = sum(n for _, _, n in deltas) + sum(n for _, n in fulls.values())
    return SeenRow(plan.base_ms, *seenlog.assemble(parts), entries=entries), dropped


_ALL, _NONE = b"\x01" * SHARDS, b"\x00" * SHARDS
