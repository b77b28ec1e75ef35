"""The Cython table and the pure-Python model agree on every answer and every event."""

from __future__ import annotations

from array import array
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from core import DeadlineTable
from core._deadline_model import DeadlineModel
from core.records import Event
from core.schedules import schedule
from core.shards import SHARDS, shard_of
from core.tokens import digest

DIGESTS = [digest(f"{i:064x}") for i in range(12)]
IDS = st.integers(min_value=1, max_value=6)
INTERVALS = st.sampled_from([30, 60, 300])
GRACES = st.sampled_from([0, 5, 60])
THRESHOLDS = st.integers(min_value=1, max_value=4)
STATES = st.sampled_from(["pending", "up", "down", "paused", "unknown"])
# Exit statuses of failure signals: -1 is a plain /fail; 256 and -2 are refused.
STATUSES = st.sampled_from([-1, 1, 3, 255, 256, -2])
MAX_RUNTIMES = st.sampled_from([0, 0, 20, 90])
# Schedules in two zones, the runs of some in the hours that clocks skip or repeat; the
# machine starts shortly before one of the four changes (see `start`).
SCHEDULES = st.one_of(
    st.none(),
    st.sampled_from([
        schedule("*/5 * * * *", "Europe/Berlin"),
        schedule("15,45 1-3 * * *", "Europe/Berlin"),
        schedule("30 * * * *", "America/New_York"),
        schedule("0 1,2 * * *", "America/New_York"),
    ]),
)  # fmt: skip
# Half an hour before: Berlin's spring-forward and fall-back of 2026, New York's.
STARTS = [1774744200.0, 1792886400.0 - 1800, 1772947800.0, 1793502000.0]
NEVER = ("pending", 0, 0.0, False, 0.0)  # the row of a monitor never flushed


def _shard(digest_: bytes) -> int:
    return shard_of(digest_) % 2


def _shards(group: int) -> list[int]:
    """The real shards of one of the test's two groups."""
    return list(range(group, SHARDS, 2))


def _by_monitor(events: list[Event]) -> list[Event]:
    # Monitors are independent: order across them may differ, order within one may not.
    return sorted(events, key=lambda e: e[0])


class TableMatchesModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000.0
        self.table: Any = DeadlineTable(capacity=4)
        self.model = DeadlineModel()
        self.config: dict[int, tuple[bytes, int, int, int, bool]] = {}
        # What the database holds: state, misses, last_seen, incident_open, started.
        self.persisted: dict[int, tuple[str, int, float, bool, float]] = {}
        # The seen log (core/seenlog.py): where a flush puts a seen-only row (a later
        # last_seen alone); a load takes the later of it and the persisted row's.
        self.seen_log: dict[int, float] = {}
        # Flap damping: pings in a row that resolve an open incident, per monitor.
        self.recovery: dict[int, int] = {}
        # Runs: how long one may take (0: no deadline), per monitor.
        self.max_runtime: dict[int, int] = {}
        self.schedule: dict[int, Any] = {}  # a monitor's schedule (None: its interval)
        # Ownership (issue 11): monitors fall into the test's two shards by their digest.
        # After a takeover, no monitor of the shard may go down before its amnesty: the
        # takeover + its interval + grace (a takeover raises no false incident).
        self.amnesty: dict[int, float] = {}
        self.owned = {0, 1}  # the groups this table owns

    def both(self, name: str, *args: Any, **kwargs: Any) -> Any:
        outcomes = []
        for impl in (self.table, self.model):
            try:
                outcomes.append(("ok", getattr(impl, name)(*args, **kwargs)))
            except ValueError as exc:
                outcomes.append(("error", str(exc)))
        assert outcomes[0] == outcomes[1], (name, args, outcomes)
        self.last_ok = outcomes[0][0] == "ok"
        return outcomes[0][1]

    @rule(
        monitor_id=IDS,
        digest_index=st.integers(0, len(DIGESTS) - 1),
        interval=INTERVALS,
        grace=GRACES,
        threshold=THRESHOLDS,
        paused=st.booleans(),
        recovery=st.sampled_from([1, 1, 2, 3]),
        max_runtime=MAX_RUNTIMES,
        sched=SCHEDULES,
    )
    def upsert(
        self, monitor_id, digest_index, interval, grace, threshold, paused, recovery,
        max_runtime, sched,
    ):  # fmt: skip
        config = (DIGESTS[digest_index], interval, grace, threshold, paused)
        # As the change feed does: the row's persisted state along with the configuration.
        state, misses, last_seen, incident, started = self.persisted.get(monitor_id, NEVER)
        self.both(
            "upsert", monitor_id, *config[:4], paused, self.now, state, misses, last_seen,
            incident, recovery=recovery, max_runtime=max_runtime, started=started,
            schedule=sched,
        )  # fmt: skip
        if self.last_ok:
            self.config[monitor_id] = config
            self.recovery[monitor_id] = recovery
            self.max_runtime[monitor_id] = max_runtime
            self.schedule[monitor_id] = sched
            self.amnesty.pop(monitor_id, None)  # a new configuration, a new deadline

    @rule(digest_index=st.integers(0, len(DIGESTS) - 1))
    def ping(self, digest_index):
        self.both("ping", DIGESTS[digest_index], self.now)

    @rule(digest_index=st.integers(0, len(DIGESTS) - 1))
    def lookup(self, digest_index):
        found = self.both("lookup", DIGESTS[digest_index])
        assert found is None or self.config[found][0] == DIGESTS[digest_index]

    @rule(digest_index=st.integers(0, len(DIGESTS) - 1), status=STATUSES)
    def fail(self, digest_index, status):
        """A failure signal (``/fail`` or a non-zero exit status)."""
        self.both("fail", DIGESTS[digest_index], self.now, status)

    @rule(monitor_id=IDS, ago=st.floats(0, 5, allow_nan=False), status=STATUSES)
    def failed(self, monitor_id, ago, status):
        """A failure signal another process answered `ago` seconds ago, handed here."""
        self.both("failed", monitor_id, self.now - ago, status)

    @rule(digest_index=st.integers(0, len(DIGESTS) - 1))
    def start_signal(self, digest_index):
        """A start signal: with a max_runtime, the run must end by then."""
        self.both("start", DIGESTS[digest_index], self.now)

    @rule(monitor_id=IDS, ago=st.floats(0, 5, allow_nan=False))
    def started(self, monitor_id, ago):
        """A start another process answered `ago` seconds ago, handed here."""
        self.both("started", monitor_id, self.now - ago)

    @rule()
    def signals(self):
        table, model = self.table.take_signals(), self.model.take_signals()
        assert table == model
        for shard, monitor_id, _at, _code in zip(*model, strict=True):
            assert self.model.get(monitor_id)["foreign"]
            assert shard_of(self.config[monitor_id][0]) == shard

    @rule(monitor_id=IDS)
    def remove(self, monitor_id):
        if self.both("remove", monitor_id):
            del self.config[monitor_id]
            self.persisted.pop(monitor_id, None)
            self.seen_log.pop(monitor_id, None)

    @rule(seconds=st.one_of(st.floats(0, 400, allow_nan=False), st.sampled_from([30.0, 60.0])))
    def advance(self, seconds):
        self.now += seconds
        self.both("pop_due", self.now)

    @precondition(lambda self: self.table.next_deadline() != float("inf"))
    @rule()
    def advance_to_next_deadline(self):
        # Land exactly on a deadline: the boundary is where off-by-one errors live.
        self.now = max(self.now, self.table.next_deadline())
        self.both("pop_due", self.now)

    @rule()
    def flush(self, lost: int | None = None):
        """Write the dirty rows, except those of the group `lost` (a fenced flush)."""
        table = self.table.take_dirty()
        model = self.model.take_dirty()
        assert sorted(zip(*table[:2], strict=True)) == sorted(zip(*model[:2], strict=True))
        self._write_seen(model[0], model[1], lost)
        self._write_rows(table, model, lost)
        self._check_persisted()

    @rule(seen_row=st.booleans())
    def flush_with_seen_log(self, seen_row):
        """The ingest's flush with the seen log on: a monitor whose only change is a later
        last_seen stays marked, out of the rows, until the seen log's row takes it (or a
        flush without the seen log does)."""
        table = self.table.take_dirty(keep_seen=True)
        model = self.model.take_dirty(keep_seen=True)
        assert table[:2] == model[:2] == ([], [])
        self._write_rows(table, model, None)
        if seen_row:
            table_seen, model_seen = self.table.take_seen(), self.model.take_seen()
            assert sorted(zip(*table_seen, strict=True)) == sorted(zip(*model_seen, strict=True))
            assert [list(a) for a in self.table.take_seen()] == [[], [], []]
            assert self.model.take_seen() == ([], [], [])
            self._write_seen(*model_seen[:2], None)
            self._check_persisted()

    def _write_seen(self, ids: list[int], times: list[float], lost: int | None) -> None:
        # Apply them as the database does: a seen-only row goes to the seen log.
        for monitor_id, last_seen in zip(ids, times, strict=True):
            if lost is None or _shard(self.config[monitor_id][0]) != lost:
                self.seen_log[monitor_id] = max(self.seen_log.get(monitor_id, 0.0), last_seen)

    def _write_rows(self, table: Any, model: Any, lost: int | None) -> None:
        assert sorted(zip(*table[2:], strict=True)) == sorted(zip(*model[2:], strict=True))
        for monitor_id, last_seen, state, misses, incident, started in zip(*model[2:], strict=True):
            if lost is None or _shard(self.config[monitor_id][0]) != lost:
                self.persisted[monitor_id] = (state, misses, last_seen, incident, started)

    def _check_persisted(self) -> None:
        # Nothing was lost: what is persisted is what the table holds (for what it judges).
        for monitor_id in self.model.ids():
            row = self.model.get(monitor_id)
            if row["foreign"]:
                continue
            actual = (
                row["state"], row["misses"], row["last_seen"], row["incident_open"],
                row["started"],
            )  # fmt: skip
            assert self._persisted(monitor_id) == actual, monitor_id

    def _persisted(self, monitor_id: int) -> tuple[str, int, float, bool, float]:
        """What a new owner loads: the row, with the later of its last_seen and the log's."""
        state, misses, last_seen, incident, started = self.persisted.get(monitor_id, NEVER)
        last_seen = max(last_seen, self.seen_log.get(monitor_id, 0.0))
        return state, misses, last_seen, incident, started

    @rule(group=st.integers(0, 2))
    def seen_times(self, group):
        """A full section of the seen log: the judged monitors of the shards, seen once."""
        shards = list(range(SHARDS)) if group == 2 else _shards(group)
        table, model = self.table.seen_times(shards), self.model.seen_times(shards)
        assert sorted(zip(*table, strict=True)) == sorted(zip(*model, strict=True))
        for shard, monitor_id, at in zip(*model, strict=True):
            row = self.model.get(monitor_id)
            assert not row["foreign"] and row["last_seen"] == at > 0.0
            assert shard == shard_of(self.config[monitor_id][0])

    @rule(keep=st.sets(IDS))
    def resync(self, keep):
        self.both("begin_sync")
        for monitor_id in sorted(keep & set(self.config)):
            digest_, interval, grace, threshold, paused = self.config[monitor_id]
            self.both(
                "upsert", monitor_id, digest_, interval, grace, threshold, paused, self.now,
                recovery=self.recovery.get(monitor_id, 1),
                max_runtime=self.max_runtime.get(monitor_id, 0),
                schedule=self.schedule.get(monitor_id),
            )  # fmt: skip
        removed = self.both("end_sync")
        assert sorted(removed) == sorted(set(self.config) - keep)
        for monitor_id in removed:
            del self.config[monitor_id]
            self.persisted.pop(monitor_id, None)
            self.seen_log.pop(monitor_id, None)

    @rule(downtime=st.floats(0, 900, allow_nan=False))
    def restart(self, downtime):
        """A new process loads what was flushed; what was not flushed is lost."""
        self.flush()
        self.table.take_events()
        self.model.take_events()
        self.now += downtime
        self.table = DeadlineTable(capacity=4)
        self.model = DeadlineModel()
        self.owned = {0, 1}
        for monitor_id in self.config:
            self._load_persisted(monitor_id)

    @rule(
        monitor_id=IDS,
        digest_index=st.integers(0, len(DIGESTS) - 1),
        state=STATES,
        misses=st.integers(0, 5),
        ago=st.floats(0, 1000, allow_nan=False),
        incident=st.booleans(),
        paused=st.booleans(),
        recovery=st.sampled_from([1, 2]),
        max_runtime=MAX_RUNTIMES,
        run_ago=st.one_of(st.none(), st.floats(0, 200, allow_nan=False)),
    )
    def load_persisted(
        self, monitor_id, digest_index, state, misses, ago, incident, paused, recovery,
        max_runtime, run_ago,
    ):  # fmt: skip
        last_seen = 0.0 if state == "pending" else self.now - ago
        started = 0.0 if run_ago is None else self.now - run_ago  # a run open then
        before = self.model.get(monitor_id)
        # A new monitor, or a foreign one (moved into an owned shard by this digest, it
        # is loaded from the row): the row is what the database holds.
        is_new = before is None or before["foreign"]
        self.both(
            "upsert", monitor_id, DIGESTS[digest_index], 60, 5, 2, paused, self.now,
            state, misses, last_seen, incident, recovery, max_runtime, started,
        )  # fmt: skip
        if self.last_ok:
            self.config[monitor_id] = (DIGESTS[digest_index], 60, 5, 2, paused)
            self.recovery[monitor_id] = recovery
            self.max_runtime[monitor_id] = max_runtime
            self.schedule[monitor_id] = None
            self.amnesty.pop(monitor_id, None)
            if is_new:  # what the database held, as loaded
                self.persisted[monitor_id] = (state, misses, last_seen, incident, started)
                self.seen_log.pop(monitor_id, None)

    @rule(group=st.integers(0, 1), graceful=st.booleans())
    def release(self, group, graceful):
        """This owner lets a group of shards go. Graceful: it flushes them first. A lost
        lease: what it had not flushed of them is dropped (the fenced flush writes the
        rest). Either way their monitors stay, foreign: answered, never judged."""
        if group not in self.owned:
            return
        self.same_monitors_and_events()  # events before the move are the old owner's
        moving = [m for m in self.config if _shard(self.config[m][0]) == group]
        self.both("release", _shards(group))
        self.owned.discard(group)
        self.flush(lost=None if graceful else group)
        for monitor_id in moving:
            row = self.model.get(monitor_id)
            assert row["foreign"] and row["deadline"] is None
        assert self.table.owned() == self.model.owned()

    @rule(ids=st.lists(IDS, max_size=4))
    def shards(self, ids):
        assert self.both("shards", ids) == [
            shard_of(self.config[i][0]) if i in self.config else -1 for i in ids
        ]

    @rule()
    def handoffs(self):
        table, model = self.table.take_handoffs(), self.model.take_handoffs()
        assert sorted(zip(*table, strict=True)) == sorted(zip(*model, strict=True))
        for shard, monitor_id, _at in zip(*model, strict=True):
            assert self.model.get(monitor_id)["foreign"]
            assert shard_of(self.config[monitor_id][0]) == shard

    @rule(monitor_id=IDS, ago=st.floats(0, 5, allow_nan=False))
    def seen(self, monitor_id, ago):
        """A ping another process answered `ago` seconds ago, handed to this owner."""
        self.both("seen", monitor_id, self.now - ago)

    @rule(
        pings=st.lists(st.tuples(st.integers(1, 8), st.floats(-2, 5, allow_nan=False)), max_size=6)
    )
    def seen_many(self, pings):
        """A hand-off's pings at once (ids 7 and 8 never loaded; a time past now is
        recorded as now): as seen() one by one."""
        ids = array("q", [monitor_id for monitor_id, _ in pings])
        times = array("d", [self.now - ago for _, ago in pings])
        self.both("seen_many", ids, times, self.now)

    @rule(seconds=st.floats(0, 120, allow_nan=False))
    def paused(self, seconds):
        """The process itself was frozen `seconds` (SIGSTOP, a stall): on waking it judged
        nothing yet, and gives every monitor it judges a new floor."""
        self.now += seconds
        self.both("amnesty", self.now)
        for monitor_id, (_d, interval, grace, _t, _p) in self.config.items():
            if not self.model.get(monitor_id)["foreign"]:
                self.amnesty[monitor_id] = self._expected(monitor_id, interval) + grace
        self.both("pop_due", self.now)

    @rule(group=st.integers(0, 1), away=st.floats(0, 120))
    def take(self, group, away):
        """`away` seconds later this process takes the group (back): its monitors are
        judged afresh, then loaded from what is persisted, the takeover as their floor."""
        if group in self.owned:
            return
        self.now += away
        self.both("pop_due", self.now)  # the owned group goes on meanwhile
        self.same_monitors_and_events()
        # As the service does: the monitors it has rows for are removed (keeping what
        # they heard), the group taken, the rows loaded, the heard pings recorded.
        moving = [m for m in self.config if _shard(self.config[m][0]) == group]
        heard = {}
        for monitor_id in moving:
            heard[monitor_id] = self.model.get(monitor_id)["last_seen"]
            self.both("remove", monitor_id)
        self.both("take", _shards(group), self.now)
        self.owned.add(group)
        for monitor_id in moving:
            self._load_persisted(monitor_id)
            _digest, interval, grace, _threshold, _paused = self.config[monitor_id]
            self.amnesty[monitor_id] = self._expected(monitor_id, interval) + grace
            if heard[monitor_id] > self._persisted(monitor_id)[2]:
                self.both("seen", monitor_id, heard[monitor_id])

    @rule(down=st.lists(IDS, max_size=4), opened=st.lists(IDS, max_size=4))
    def blind(self, down, opened):
        """The ingest went blind (ingest/sight.py): the last misses of `down` were
        blindness (they become unknown), and so were the incidents `opened` opened."""
        self.both("blind", down, opened)

    @rule(ago=st.floats(0, 60, allow_nan=False))
    def sighted(self, ago):
        """Pings came back `ago` seconds ago: nothing judged goes down before that
        time + its interval + grace."""
        at = self.now - ago
        self.both("sighted", at)
        for monitor_id, (_d, interval, grace, _t, _p) in self.config.items():
            if not self.model.get(monitor_id)["foreign"]:
                bound = self._expected(monitor_id, interval, at) + grace
                self.amnesty[monitor_id] = max(self.amnesty.get(monitor_id, -1.0), bound)

    @rule(back=st.floats(0, 200, allow_nan=False), window=st.sampled_from([0, 1, 10, 60, 2049]))
    def heard(self, back, window):
        self.both("heard", self.now - back, window)

    def _expected(self, monitor_id: int, interval: int, after: float | None = None) -> float:
        """The first run expected after `after` (now): by its schedule, or an interval
        from it."""
        after = self.now if after is None else after
        sched = self.schedule.get(monitor_id)
        return sched.next_after(after) if sched is not None else after + interval

    def _load_persisted(self, monitor_id: int) -> None:
        """Load a monitor as a new owner does: what is persisted, now as its floor."""
        digest_, interval, grace, threshold, paused = self.config[monitor_id]
        state, misses, last_seen, incident, started = self._persisted(monitor_id)
        self.both(
            "upsert", monitor_id, digest_, interval, grace, threshold, paused, self.now,
            state, misses, last_seen, incident, self.recovery.get(monitor_id, 1),
            self.max_runtime.get(monitor_id, 0), started, self.schedule.get(monitor_id),
        )  # fmt: skip
        assert self.last_ok

    @invariant()
    def same_monitors_and_events(self):
        assert len(self.table) == len(self.model)
        assert sorted(self.table.ids()) == sorted(self.model.ids())
        for monitor_id in self.model.ids():
            assert self.table.get(monitor_id) == self.model.get(monitor_id)
        assert self.table.is_blind() == self.model.is_blind()
        assert self.table.unknown_count() == self.model.unknown_count()
        events = self.model.take_events()
        assert _by_monitor(self.table.take_events()) == _by_monitor(events)
        if self.model.is_blind():  # blind: nothing is judged down, only failures open
            assert not {e[1] for e in events} & {"down", "timed_out"}, events
        failed_at: dict[int, float] = {}
        timed_out_at: dict[int, float] = {}
        for monitor_id, kind, at, last_seen, status in events:
            assert (status != -1) <= (kind == "failed") and -1 <= status <= 255
            if kind == "failed":
                failed_at[monitor_id] = at
                assert last_seen <= at and self.model.get(monitor_id)["state"] == "down"
            if kind == "down":
                assert at >= self.amnesty.get(monitor_id, -1.0), (monitor_id, at)
            if kind == "timed_out":  # a run passed its max_runtime: opened at once
                timed_out_at[monitor_id] = at
                assert self.max_runtime.get(monitor_id, 0) > 0
            if kind == "incident_opened" and at in (failed_at.get(monitor_id),
                                                    timed_out_at.get(monitor_id)):  # fmt: skip
                # Opened by a failure signal, at once: the last ping before it, if any.
                assert last_seen <= at, (monitor_id, at, last_seen)
            elif kind in ("down", "incident_opened"):
                # What the alert will say: a real last ping, before the deadline missed.
                assert 0.0 < last_seen <= at, (monitor_id, kind, at, last_seen)
            if kind == "incident_paused":  # a pause closed it: never a recovery
                assert self.model.get(monitor_id)["state"] == "paused"
        assert self.table.next_deadline() <= self.model.next_deadline()

    @invariant()
    def at_most_one_open_incident_and_only_when_down(self):
        for monitor_id in self.model.ids():
            row = self.table.get(monitor_id)
            if row["incident_open"] and not row["foreign"]:  # a foreign one: as persisted
                # Recovering (flap damping); or judged afresh after blindness: a monitor
                # whose last misses were blindness is unknown, then up, or pending if
                # never pinged (a run that timed out before any ping), and an incident
                # opened before those misses stays open until a ping ends it.
                if row["state"] in ("up", "unknown", "pending"):
                    assert 0 <= row["recovering"] < row["recovery"]
                    continue
                assert row["state"] == "down"
                assert row["misses"] >= row["threshold"] or row["misses"] >= 1

    @initialize(at=st.sampled_from(STARTS))
    def start(self, at):
        """Start shortly before a change of the clocks, so schedules meet one."""
        self.now = at
        self.table.take_events()


TableMatchesModel.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None
)
test_table_matches_model = TableMatchesModel.TestCase
