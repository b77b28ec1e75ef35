"""The executable specification of ``core._deadline.DeadlineTable``, in plain Python.

Same API and the same answers, written for clarity instead of speed: no heap, no indexes;
``pop_due`` scans for the earliest due monitor. The hypothesis state machine in
``tests/core/test_deadline_model.py`` drives both and requires them to agree on every answer
and every event. The rules are stated once, in ``core/_deadline.pyx``'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .records import DirtyRows, Event
from .shards import SHARDS, shard_of

EVENT_UP = "up"
EVENT_DOWN = "down"
EVENT_INCIDENT_OPENED = "incident_opened"
EVENT_RECOVERED = "recovered"
EVENT_INCIDENT_RESOLVED = "incident_resolved"
EVENT_INCIDENT_PAUSED = "incident_paused"
EVENT_FAILED = "failed"
EVENT_TIMED_OUT = "timed_out"  # a run went past maxRuntime: "running too long"
START = -2  # a hand-off signal's code for a start (else the failure's exit status or -1)

STATE_NAMES = ("pending", "up", "down", "paused", "unknown")
RING = 4096  # seconds of on-time pings kept, by the deadline each one moved (heard())
_MAX_MISSES = 65535
_MAX_RECOVERY = 255


@dataclass
class _Monitor:
    monitor_id: int
    digest: bytes
    interval: int
    grace: int
    threshold: int
    state: str
    misses: int
    last_seen: float
    floor: float
    incident_open: bool
    next_miss: float | None  # only for a down monitor still counting misses
    dirty: bool = False
    changed: bool = False  # more than last_seen changed since the last take_dirty()
    seen: bool = True
    foreign: bool = False  # its shard is not the table's: answered, never judged
    handoff: bool = False  # pinged while foreign, not yet taken by take_handoffs()
    recovery: int = 1  # pings in a row (none late) that resolve an open incident
    recovering: int = 0  # of those, had so far: up with its incident still open
    max_runtime: int = 0  # seconds a run may take (0: runs have no deadline)
    started: float = 0.0  # the open run's start, with a max_runtime (0.0: none)
    schedule: Any = None  # a core.schedules.Schedule (None: every `interval` seconds)

    def expected_after(self, at: float) -> float:
        """When the next run is expected after `at` (a ping, the floor)."""
        if self.schedule is not None:
            return float(self.schedule.next_after(at))
        return at + self.interval

    def run_due(self) -> float | None:
        """When the open run is too long: only for an up or pending monitor with no
        incident open (a down one alerts already, or is counting its misses)."""
        if not self.started or not self.max_runtime or self.incident_open:
            return None
        if self.state not in ("up", "pending"):
            return None
        return max(self.started, self.floor) + self.max_runtime

    def due(self) -> float | None:
        if self.foreign:
            return None
        run = self.run_due()
        if self.state == "up":
            up = self.expected_after(max(self.last_seen, self.floor)) + self.grace
            return up if run is None else min(up, run)
        if self.state == "pending":
            return run
        if self.state == "down" and not self.incident_open:
            return self.next_miss
        return None


def _check_status(status: int) -> None:
    if not -1 <= status <= 255:
        raise ValueError("an exit status is between 0 and 255 (-1: none)")


class DeadlineModel:
    """Pure-Python twin of DeadlineTable."""

    def __init__(self, capacity: int = 1024) -> None:
        self._by_id: dict[int, _Monitor] = {}
        self._by_digest: dict[bytes, _Monitor] = {}
        self._events: list[Event] = []
        self._dirty_order: list[int] = []
        self._owned = set(range(SHARDS))
        self._handoffs: list[int] = []
        # Signals of foreign monitors for their owners: (id, time, code), code the
        # failure's exit status (-1: none) or START.
        self._signals: list[tuple[int, float, int]] = []
        # Blindness (ingest/sight.py): on-time pings by the second of the deadline each
        # moved away (a ring: the second it holds, its count), and whether misses now make
        # monitors unknown instead of down.
        self._heard_at = [-1] * RING
        self._heard_n = [0] * RING
        self._blind = False

    def __len__(self) -> int:
        return len(self._by_id)

    def _emit(self, m: _Monitor, kind: str, at: float, status: int = -1) -> None:
        self._events.append(Event(m.monitor_id, kind, at, m.last_seen, status))

    def _mark_dirty(self, m: _Monitor, changed: bool = True) -> None:
        m.changed = m.changed or changed
        if not m.dirty:
            m.dirty = True
            self._dirty_order.append(m.monitor_id)

    def ping(self, digest: bytes, now: float) -> bool:
        if len(digest) != 32:
            raise ValueError("a digest is 32 bytes")
        m = self._by_digest.get(digest)
        if m is None:
            return False
        if m.foreign:
            m.last_seen = now
            self._queue_handoff(m)
            return True
        self._record(m, now)
        return True

    def lookup(self, digest: bytes) -> int | None:
        if len(digest) != 32:
            raise ValueError("a digest is 32 bytes")
        m = self._by_digest.get(digest)
        return None if m is None else m.monitor_id

    def fail(self, digest: bytes, now: float, status: int = -1) -> bool:
        if len(digest) != 32:
            raise ValueError("a digest is 32 bytes")
        _check_status(status)
        return self._signal_digest(digest, now, status)

    def failed(self, monitor_id: int, at: float, status: int = -1) -> bool:
        _check_status(status)
        return self._signal_id(monitor_id, at, status)

    def start(self, digest: bytes, now: float) -> bool:
        return self._signal_digest(digest, now, START)

    def started(self, monitor_id: int, at: float) -> bool:
        return self._signal_id(monitor_id, at, START)

    def _signal_digest(self, digest: bytes, now: float, code: int) -> bool:
        """A signal answered here: True if the digest is known."""
        if len(digest) != 32:
            raise ValueError("a digest is 32 bytes")
        m = self._by_digest.get(digest)
        if m is None:
            return False
        self._signal(m, now, code)
        return True

    def _signal_id(self, monitor_id: int, at: float, code: int) -> bool:
        """A signal handed over: True if judged here, False if relayed (or unknown)."""
        m = self._by_id.get(monitor_id)
        return m is not None and self._signal(m, at, code)

    def _signal(self, m: _Monitor, at: float, code: int) -> bool:
        """A failure (its exit status, -1: none) or a start (START): applied if judged
        here (True), else queued for the owner (a start only if it has a max_runtime)."""
        if m.foreign:
            if code != START or m.max_runtime:
                self._signals.append((m.monitor_id, at, code))
            return False
        if code == START:
            self._start(m, at)
        else:
            self._fail(m, at, code)
        return True

    def _start(self, m: _Monitor, now: float) -> None:
        """A run began at `now`: with a max_runtime, it must end by now + max_runtime."""
        if not m.max_runtime or m.state == "paused" or now < m.last_seen or now <= m.started:
            return  # no deadline, or an end (or a later start) came after it already
        m.started = now
        self._mark_dirty(m)

    def _end_run(self, m: _Monitor, now: float) -> None:
        """A success or a failure at `now` ends the run open since before it."""
        if m.started and now >= m.started:
            m.started = 0.0
            self._mark_dirty(m)

    def _fail(self, m: _Monitor, now: float, status: int) -> None:
        """A failure signal at `now` of a monitor this table judges."""
        if now < m.last_seen:
            return  # a later signal (success or failure) already decided its state
        if m.state == "paused":
            m.last_seen = now
            self._mark_dirty(m, changed=False)
            return
        # The events carry the last ping before it: the alert says when it last succeeded.
        self._emit(m, EVENT_FAILED, now, status)
        self._end_run(m, now)
        m.state = "down"
        m.misses = max(m.misses, 1)  # a failed run counts as a missed one
        m.next_miss = None
        m.recovering = 0
        if not m.incident_open:  # it needs no waiting: the incident opens at once
            m.incident_open = True
            self._emit(m, EVENT_INCIDENT_OPENED, now)
        m.last_seen = now
        self._mark_dirty(m)

    def take_signals(self) -> tuple[list[int], list[int], list[float], list[int]]:
        out: tuple[list[int], list[int], list[float], list[int]] = ([], [], [], [])
        for monitor_id, at, code in self._signals:
            m = self._by_id.get(monitor_id)
            if m is None or not m.foreign:
                continue
            values = (shard_of(m.digest), monitor_id, at, code)  # its shard now
            for column, value in zip(out, values, strict=True):
                column.append(value)  # type: ignore[attr-defined]
        self._signals = []
        return out

    def _queue_handoff(self, m: _Monitor) -> None:
        if not m.handoff:
            m.handoff = True
            self._handoffs.append(m.monitor_id)

    def _record(self, m: _Monitor, now: float) -> None:
        if m.state == "up":
            self._hear(m, now)
        m.last_seen = now
        self._mark_dirty(m, changed=m.state in ("pending", "down", "unknown"))
        self._end_run(m, now)
        if m.state == "unknown":  # heard again after blindness: up, and nothing to tell
            m.state = "up"
            if m.incident_open:
                self._recovered_once(m, now)
        elif m.state == "pending":
            m.state = "up"
            self._emit(m, EVENT_UP, now)
        elif m.state == "down":
            m.state = "up"
            m.misses = 0
            m.next_miss = None
            self._emit(m, EVENT_RECOVERED, now)
            if m.incident_open:
                m.recovering = 0
                self._recovered_once(m, now)
        elif m.state == "up" and m.incident_open:
            self._recovered_once(m, now)

    def _hear(self, m: _Monitor, now: float) -> None:
        """An up monitor's ping at `now`: one on-time ping for the second of the deadline
        it moved away (kept only within half the ring of `now`)."""
        second = math.floor(m.expected_after(max(m.last_seen, m.floor)) + m.grace)
        if abs(second - math.floor(now)) >= RING // 2:
            return
        i = second % RING
        if self._heard_at[i] != second:
            self._heard_at[i] = second
            self._heard_n[i] = 0
        self._heard_n[i] += 1

    def heard(self, until: float, window: int) -> int:
        """The on-time pings whose deadline was in the `window` seconds up to `until`
        (whole seconds: those after floor(until) - window, up to floor(until))."""
        if not 1 <= window <= RING // 2:
            raise ValueError(f"a window is 1 to {RING // 2} seconds")
        end = math.floor(until)
        return sum(
            self._heard_n[s % RING]
            for s in range(end - window + 1, end + 1)
            if self._heard_at[s % RING] == s
        )

    def blind(self, down: Iterable[int], opened: Iterable[int]) -> int:
        """Blind from now on: a miss makes a monitor unknown, with no event. The misses
        just before it were blindness too: the `down` monitors (their events are
        dropped) become unknown, and the incidents of `opened` were never opened (they
        are unknown too if down). Returns how many became unknown."""
        self._blind = True
        opened = list(opened)
        for monitor_id in opened:
            m = self._by_id.get(monitor_id)
            if m is not None and not m.foreign and m.incident_open:
                m.incident_open = False
                m.recovering = 0
                self._mark_dirty(m)
        n = 0
        for monitor_id in [*down, *opened]:
            m = self._by_id.get(monitor_id)
            if m is not None and not m.foreign and m.state == "down":
                self._unknown(m)
                n += 1
        return n

    def sighted(self, at: float) -> int:
        """Pings arrive again since `at`: unknown monitors are up (pending if never
        pinged), and every judged monitor is judged afresh from `at` (amnesty). Returns
        how many were unknown."""
        self._blind = False
        n = 0
        for m in self._by_id.values():
            if not m.foreign and m.state == "unknown":
                m.state = "up" if m.last_seen else "pending"
                self._mark_dirty(m)
                n += 1
        self.amnesty(at)
        return n

    def is_blind(self) -> bool:
        return self._blind

    def unknown_count(self) -> int:
        return sum(1 for m in self._by_id.values() if not m.foreign and m.state == "unknown")

    def _unknown(self, m: _Monitor) -> None:
        m.state = "unknown"
        m.misses = 0
        m.next_miss = None
        m.recovering = 0
        self._mark_dirty(m)

    def _recovered_once(self, m: _Monitor, now: float) -> None:
        """One more ping in a row of an up monitor whose incident is open: resolved at
        the `recovery`-th (flap damping)."""
        m.recovering += 1
        if m.recovering >= m.recovery:
            m.incident_open = False
            m.recovering = 0
            self._emit(m, EVENT_INCIDENT_RESOLVED, now)
            self._mark_dirty(m)

    def upsert(
        self,
        monitor_id: int,
        digest: bytes,
        interval: int,
        grace: int,
        threshold: int,
        paused: bool,
        now: float,
        state: str = "pending",
        misses: int = 0,
        last_seen: float = 0.0,
        incident_open: bool = False,
        recovery: int = 1,
        max_runtime: int = 0,
        started: float = 0.0,
        schedule: Any = None,
    ) -> None:
        if len(digest) != 32:
            raise ValueError("a digest is 32 bytes")
        if max_runtime < 0:
            raise ValueError("max_runtime must not be negative")
        if not 1 <= recovery <= _MAX_RECOVERY:
            raise ValueError("recovery must be between 1 and 255")
        if interval <= 0:
            raise ValueError("interval must be positive")
        if not 1 <= threshold <= _MAX_MISSES:
            raise ValueError("threshold must be between 1 and 65535")
        m = self._by_id.get(monitor_id)
        if m is None:
            self._insert(
                monitor_id, digest, interval, grace, threshold, paused, now,
                state, misses, last_seen, incident_open, recovery, max_runtime, started,
                schedule,
            )  # fmt: skip
            return
        m.seen = True
        if m.digest != digest:
            if digest in self._by_digest:
                raise ValueError("digest already belongs to another monitor")
            del self._by_digest[m.digest]
            m.digest = digest
            self._by_digest[digest] = m
        m.interval, m.grace, m.threshold, m.recovery = interval, grace, threshold, recovery
        m.max_runtime = max_runtime
        m.schedule = schedule
        if not max_runtime and m.started:  # no deadline for runs any more: none is open
            m.started = 0.0
            if not m.foreign:
                self._mark_dirty(m)
        if shard_of(m.digest) not in self._owned:
            m.foreign = True
            m.next_miss = None
            if paused:
                m.state = "paused"
            elif m.state == "paused":
                m.state = "pending" if m.last_seen == 0.0 else "up"
            return
        if m.foreign:
            if state not in STATE_NAMES:
                raise ValueError(f"unknown state {state!r}")
            m.foreign = m.handoff = False
            heard = m.last_seen > last_seen  # a ping answered here the row does not have
            m.last_seen = max(m.last_seen, last_seen)
            self._judge(m, paused, state, misses, incident_open, now, started)
            if heard:
                self._mark_dirty(m, changed=False)
            return
        if paused and m.state != "paused":
            m.state = "paused"
            m.misses = 0
            m.next_miss = None
            m.recovering = 0
            m.started = 0.0
            if m.incident_open:
                m.incident_open = False
                self._emit(m, EVENT_INCIDENT_PAUSED, now)
            self._mark_dirty(m)
        elif not paused and m.state == "paused":
            m.floor = now
            m.state = "pending" if m.last_seen == 0.0 else "up"
            self._mark_dirty(m)
        elif m.state == "down" and not m.incident_open and m.misses >= m.threshold:
            m.incident_open = True
            m.next_miss = None
            self._emit(m, EVENT_INCIDENT_OPENED, now)
            self._mark_dirty(m)
        elif m.state == "up" and m.incident_open and m.recovering >= m.recovery:
            # Fewer pings in a row now resolve it, and it had them.
            m.incident_open = False
            m.recovering = 0
            self._emit(m, EVENT_INCIDENT_RESOLVED, now)
            self._mark_dirty(m)

    def _insert(
        self,
        monitor_id: int,
        digest: bytes,
        interval: int,
        grace: int,
        threshold: int,
        paused: bool,
        now: float,
        state: str,
        misses: int,
        last_seen: float,
        incident_open: bool,
        recovery: int,
        max_runtime: int,
        started: float,
        schedule: Any,
    ) -> None:
        if state not in STATE_NAMES:
            raise ValueError(f"unknown state {state!r}")
        if digest in self._by_digest:
            raise ValueError("digest already belongs to another monitor")
        m = _Monitor(
            monitor_id, digest, interval, grace, threshold, state="pending", misses=0,
            last_seen=last_seen, floor=now, incident_open=False, next_miss=None,
            recovery=recovery, max_runtime=max_runtime, schedule=schedule,
        )  # fmt: skip
        self._by_id[monitor_id] = m
        self._by_digest[digest] = m
        if shard_of(digest) not in self._owned:
            m.foreign = True
            m.state = "paused" if paused else state
            m.misses = min(misses, _MAX_MISSES)
            m.incident_open = incident_open
            m.started = started if max_runtime else 0.0
            return
        self._judge(m, paused, state, misses, incident_open, now, started)

    def _judge(
        self,
        m: _Monitor,
        paused: bool,
        state: str,
        misses: int,
        incident_open: bool,
        now: float,
        started: float,
    ) -> None:
        """Judge afresh from persisted state, `now` the floor: a load, a restart, a takeover."""
        m.floor = now
        m.misses = 0
        m.incident_open = False
        m.next_miss = None
        m.recovering = 0
        m.started = 0.0
        if paused:
            m.state = "paused"
        elif state in ("paused", "pending") or m.last_seen == 0.0:
            m.state = "pending" if m.last_seen == 0.0 else "up"
        elif state in ("up", "unknown"):  # unknown: blind when it was persisted
            m.state = "up"
            # Recovering (flap damping): the pings in a row start again from here.
            m.incident_open = incident_open and m.recovery > 1
        else:
            m.state = "down"
            m.misses = min(max(misses, 1), _MAX_MISSES)
            if incident_open:
                m.incident_open = True
            elif m.misses >= m.threshold:
                m.incident_open = True
                self._emit(m, EVENT_INCIDENT_OPENED, now)
            else:
                m.next_miss = m.expected_after(max(m.last_seen, m.floor)) + m.grace
        if incident_open and not m.incident_open:
            self._emit(m, EVENT_INCIDENT_PAUSED if paused else EVENT_INCIDENT_RESOLVED, now)
        if m.max_runtime and m.state in ("up", "pending") and started >= m.last_seen:
            m.started = started  # a run still open when it was persisted (0.0: none)
        if (m.state, m.misses, m.incident_open, m.started) != (
            state,
            misses,
            incident_open,
            started,
        ):
            self._mark_dirty(m)

    # -- ownership

    def owned(self) -> list[int]:
        return sorted(self._owned)

    def release(self, shards: list[int]) -> int:
        for shard in shards:
            self._check_shard(shard)
        self._owned.difference_update(shards)
        n = 0
        for m in self._by_id.values():
            if not m.foreign and shard_of(m.digest) not in self._owned:
                m.foreign = True
                m.next_miss = None
                n += 1
        return n

    def take(self, shards: list[int], now: float) -> int:
        for shard in shards:
            self._check_shard(shard)
        self._owned.update(shards)
        n = 0
        for m in list(self._by_id.values()):
            if m.foreign and shard_of(m.digest) in self._owned:
                m.foreign = m.handoff = False
                self._judge(
                    m, m.state == "paused", m.state, m.misses, m.incident_open, now, m.started
                )
                n += 1
        return n

    @staticmethod
    def _check_shard(shard: int) -> None:
        if not 0 <= shard < SHARDS:
            raise ValueError(f"a shard is between 0 and {SHARDS - 1}")

    def seen(self, monitor_id: int, at: float) -> bool:
        m = self._by_id.get(monitor_id)
        if m is None:
            return False
        if m.foreign:
            if at > m.last_seen:
                m.last_seen = at
                self._queue_handoff(m)
            return False
        if at > m.last_seen:
            self._record(m, at)
        return True

    def seen_many(
        self, ids: Sequence[int], times: Sequence[float], latest: float
    ) -> tuple[int, int, list[int]]:
        """A hand-off's pings at once: seen(id, min(time, latest)) for each loaded monitor,
        in order; (how many were judged here, how many relayed, the indexes of the ids
        not loaded, left alone)."""
        received = relayed = 0
        unknown: list[int] = []
        for i, (monitor_id, at) in enumerate(zip(ids, times, strict=True)):
            if monitor_id not in self._by_id:
                unknown.append(i)
            elif self.seen(monitor_id, min(at, latest)):
                received += 1
            else:
                relayed += 1
        return received, relayed, unknown

    def seen_times(self, shards: Iterable[int]) -> tuple[list[int], list[int], list[float]]:
        wanted = set()
        for shard in shards:
            self._check_shard(shard)
            wanted.add(shard)
        out: tuple[list[int], list[int], list[float]] = ([], [], [])
        for m in self._by_id.values():
            if not m.foreign and m.last_seen > 0.0 and shard_of(m.digest) in wanted:
                out[0].append(shard_of(m.digest))
                out[1].append(m.monitor_id)
                out[2].append(m.last_seen)
        return out

    def take_handoffs(self) -> tuple[list[int], list[int], list[float]]:
        shards: list[int] = []
        ids: list[int] = []
        times: list[float] = []
        for monitor_id in self._handoffs:
            m = self._by_id.get(monitor_id)
            if m is None or not m.handoff:
                continue
            m.handoff = False
            if m.foreign:
                shards.append(shard_of(m.digest))
                ids.append(monitor_id)
                times.append(m.last_seen)
        self._handoffs = []
        return shards, ids, times

    def amnesty(self, now: float) -> int:
        n = 0
        for m in self._by_id.values():
            if m.foreign:
                continue
            m.floor = max(m.floor, now)
            if m.state == "down" and not m.incident_open and m.next_miss is not None:
                m.next_miss = max(m.next_miss, m.expected_after(now) + m.grace)
            n += 1
        return n

    def shards(self, ids: list[int]) -> list[int]:
        return [-1 if (shard := self.shard(i)) is None else shard for i in ids]

    def shard(self, monitor_id: int) -> int | None:
        m = self._by_id.get(monitor_id)
        return None if m is None else shard_of(m.digest)

    def remove(self, monitor_id: int) -> bool:
        m = self._by_id.pop(monitor_id, None)
        if m is None:
            return False
        del self._by_digest[m.digest]
        return True

    def begin_sync(self) -> None:
        for m in self._by_id.values():
            m.seen = False

    def end_sync(self) -> list[int]:
        removed = sorted(m.monitor_id for m in self._by_id.values() if not m.seen)
        for monitor_id in removed:
            self.remove(monitor_id)
        return removed

    def _timeout(self, m: _Monitor, at: float) -> None:
        """The open run passed its max_runtime at `at`: down, its incident open at once
        (blind: its end may have gone unheard; unknown, the run forgotten)."""
        if self._blind:
            m.started = 0.0
            self._unknown(m)
            return
        self._emit(m, EVENT_TIMED_OUT, at)
        m.started = 0.0
        m.state = "down"
        m.misses = max(m.misses, 1)
        m.next_miss = None
        m.recovering = 0
        m.incident_open = True
        self._emit(m, EVENT_INCIDENT_OPENED, at)
        self._mark_dirty(m)

    def _miss(self, m: _Monitor, at: float) -> None:
        if self._blind:  # nobody's pings arrive: its missing says nothing about it
            self._unknown(m)
            return
        if m.state == "up":
            m.state = "down"
            m.misses = 1
            m.recovering = 0
            self._emit(m, EVENT_DOWN, at)
        else:
            m.misses = min(m.misses + 1, _MAX_MISSES)
        self._mark_dirty(m)
        if m.incident_open:  # down again while recovering: the same incident goes on
            m.next_miss = None
        elif m.misses >= m.threshold:
            m.incident_open = True
            m.next_miss = None
            self._emit(m, EVENT_INCIDENT_OPENED, at)
        elif m.schedule is not None:  # the next scheduled run missed too, if none comes
            m.next_miss = m.expected_after(at - m.grace) + m.grace
        else:
            m.next_miss = at + m.interval

    def pop_due(self, now: float) -> int:
        missed = 0
        while True:
            candidates = [(due, m) for m in self._by_id.values() if (due := m.due()) is not None]
            if not candidates:
                return missed
            due, m = min(candidates, key=lambda c: c[0])
            if due > now:
                return missed
            if due == m.run_due():
                self._timeout(m, due)
            else:
                self._miss(m, due)
            missed += 1

    def next_deadline(self) -> float:
        dues = [due for m in self._by_id.values() if (due := m.due()) is not None]
        return min(dues, default=math.inf)

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def take_dirty(self, keep_seen: bool = False) -> DirtyRows:
        return self._take(True, not keep_seen)

    def take_seen(self) -> tuple[list[int], list[float], list[int]]:
        rows = self._take(False, True)
        shards = [shard_of(self._by_id[m].digest) for m in rows.seen_ids]
        return rows.seen_ids, rows.seen_last_seen, shards

    def _take(self, changed: bool, seen: bool) -> DirtyRows:
        """Hand over the dirty monitors changed otherwise (whole rows) if `changed`, and
        those with only a later last_seen if `seen`; the others stay dirty, in order."""
        rows = DirtyRows([], [], [], [], [], [], [], [])
        kept: list[int] = []
        for monitor_id in self._dirty_order:
            m = self._by_id.get(monitor_id)
            if m is None or not m.dirty:
                continue
            if not (changed if m.changed else seen):
                kept.append(monitor_id)
                continue
            if m.changed:
                rows.ids.append(m.monitor_id)
                rows.last_seen.append(m.last_seen)
                rows.states.append(m.state)
                rows.misses.append(m.misses)
                rows.incidents.append(m.incident_open)
                rows.started.append(m.started)
            else:
                rows.seen_ids.append(m.monitor_id)
                rows.seen_last_seen.append(m.last_seen)
            m.dirty = m.changed = False
        self._dirty_order = kept
        return rows

    def mark_dirty(self, ids: list[int], changed: bool = True) -> None:
        for monitor_id in ids:
            m = self._by_id.get(monitor_id)
            if m is not None:
                self._mark_dirty(m, changed)

    def get(self, monitor_id: int) -> dict[str, Any] | None:
        m = self._by_id.get(monitor_id)
        if m is None:
            return None
        return {
            "id": m.monitor_id,
            "state": m.state,
            "misses": m.misses,
            "last_seen": m.last_seen,
            "incident_open": m.incident_open,
            "deadline": m.due(),
            "foreign": m.foreign,
            "interval": m.interval,
            "grace": m.grace,
            "threshold": m.threshold,
            "recovery": m.recovery,
            "recovering": m.recovering,
            "max_runtime": m.max_runtime,
            "started": m.started,
            "schedule": m.schedule,
        }

    def ids(self) -> list[int]:
        return list(self._by_id)
