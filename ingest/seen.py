"""What this process still owes the seen log (``core/seenlog.py``), and its next row.

Each flush hands over the seen-only rows (a later last-seen time, nothing else); they
wait here, the latest time per monitor, until a row is due (every ``every`` seconds, or
at once when the process gives shards back or stops). A row holds a delta section per
shard with waiting entries, and full sections for the next few shards of a rotation
over the shards this process judges, so that every shard is rewritten in full at least
``FULL_ROUND`` rows (a round). Only shards this process holds are written (the flush
fences them); what waits for a shard it lost is dropped, as the rest of its unflushed
state is: the new owner loads what was written, with the amnesty of a takeover.
"""

from __future__ import annotations

import math
from collections.abc import Container

from core import DeadlineTable, seenlog

from .store import SeenRow


class SeenWriter:
    def __init__(self, every: float, full_every: float | None = None) -> None:
        self.every = every  # 0: the seen log is off; flushes write every last-seen
        self.full_every = every * seenlog.FULL_ROUND if full_every is None else full_every
        self.waiting: dict[int, float] = {}
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

    def add(self, ids: list[int], times: list[float]) -> None:
        waiting = self.waiting
        get = waiting.get
        for monitor_id, at in zip(ids, times, strict=True):
            if at > get(monitor_id, 0.0):
                waiting[monitor_id] = at

    def row(
        self, table: DeadlineTable, held: Container[int], now: float, *, force: bool = False
    ) -> tuple[SeenRow | None, dict[int, float]]:
        """The row due now (None if none is), and what it took from the waiting entries
        (give it back with ``failed`` if the row is not written)."""
        if not force and now < self.next_row_at:
            return None, {}
        if self.next_row_at == -math.inf and not force:
            self.next_row_at = now + self.every  # the first row one period after start
            return None, {}
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
        taken, self.waiting = self.waiting, {}
        sections: dict[int, tuple[list[int], list[float]]] = {}
        ids = list(taken)
        for monitor_id, shard in zip(ids, table.shards(ids), strict=True):
            if shard < 0 or shard not in held:
                self.dropped += 1  # deleted, or its shard was lost: not ours to write
                continue
            if shard in full:
                continue  # the full section has it (the table's time is the latest)
            section = sections.setdefault(shard, ([], []))
            section[0].append(monitor_id)
            section[1].append(taken[monitor_id])
        fulls: dict[int, tuple[list[int], list[float]]] = {s: ([], []) for s in full}
        for shard, monitor_id, at in zip(*table.seen_times(full), strict=True):
            fulls[shard][0].append(monitor_id)
            fulls[shard][1].append(at)
        self._refull = set()
        if not sections and not fulls:
            self.next_row_at = now + self.every
            return None, {}
        base_ms = math.floor(now * 1000)
        parts = [(s, False, *sections[s]) for s in sorted(sections)]
        parts += [(s, True, *fulls[s]) for s in sorted(fulls)]
        packed = seenlog.pack(parts, base_ms)
        entries = sum(len(p[2]) for p in parts)
        return SeenRow(base_ms, *packed, entries=entries), taken

    def written(self, row: SeenRow, now: float) -> None:
        self.next_row_at = now + self.every
        self.rows += 1
        self.entries += row.entries

    def failed(self, row: SeenRow, taken: dict[int, float]) -> None:
        """`row` was not written: its entries wait again, its full sections go into the
        next row."""
        self._refull.update(s for s, full in zip(row.shards, row.fulls, strict=True) if full)
        self.add(list(taken), list(taken.values()))
