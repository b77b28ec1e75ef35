"""Blindness (ingest/sight.py) on the real table, second by second: a fleet whose pings
stop reaching us is not a fleet that died, and a fleet part of which died is not blind.

Each round does what the service does: pings, the scheduler's pop_due, the events
admitted, blindness judged, what is past the window released (and counted as written).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from core import DeadlineTable
from core.records import Event
from core.tokens import digest
from ingest.sight import Sight, SightConfig

T0 = 1_000_000.0
INTERVAL = 30
GRACE = 5


class Fleet:
    def __init__(
        self, n: int, *, interval: int = INTERVAL, config: SightConfig | None = None
    ) -> None:
        self.n, self.interval = n, interval
        self.table = DeadlineTable()
        self.sight = Sight(config or SightConfig())
        self.digests = [digest(f"{k:064x}") for k in range(n)]
        for k in range(n):
            self.table.upsert(k, self.digests[k], interval, GRACE, 1, False, T0)
        self.written: list[Event] = []
        self.now = T0

    def phase(self, k: int) -> float:
        """When in its period monitor k pings: spread over the period, off the second."""
        return (k * 7.31) % self.interval

    def run(self, until: float, pinging: Iterable[int] = (), *, synchronized: bool = False) -> None:
        """Second by second up to `until`; the monitors `pinging` ping once a period (all
        at the top of it if `synchronized`)."""
        alive = set(pinging)
        while self.now < until:
            start, self.now = self.now, self.now + 1.0
            for k in alive:
                offset = 0.25 if synchronized else self.phase(k)
                # Its pings in (start, now]: the one at this period's offset, if any.
                periods = math.floor((self.now - T0 - offset) / self.interval)
                at = T0 + offset + periods * self.interval
                if start < at <= self.now:
                    self.table.ping(self.digests[k], at)
            self.table.pop_due(self.now)
            self.written += self.sight.admit(self.table.take_events(), self.table)
            self.sight.judge(self.table, self.now)
            self.written += self.sight.release(self.now)

    def opened(self) -> dict[int, float]:
        return {e.monitor_id: e.at for e in self.written if e.kind == "incident_opened"}


def test_pings_stopped_for_everyone_for_90_s_are_blindness_not_an_outage():
    fleet = Fleet(2000)
    everyone = range(fleet.n)
    dead = set(range(0, 2000, 200))  # ten that really died during the gap
    fleet.run(T0 + 120, everyone)
    assert fleet.opened() == {} and not fleet.sight.blind
    gap = fleet.now
    fleet.run(gap + 90)  # the load balancer in front of us is dead
    assert fleet.sight.blind
    assert fleet.table.unknown_count() == fleet.n
    fleet.run(gap + 90 + 200, set(everyone) - dead)
    assert not fleet.sight.blind and fleet.sight.periods == 1
    period = fleet.sight.reports[-1]
    assert gap < period.since < gap + INTERVAL + GRACE + 1  # the first miss it undid
    assert gap + 90 < period.back_at < gap + 90 + INTERVAL / 2
    # Not one incident for the monitors that resumed; the dead ones alert exactly at
    # their deadline counted from when the pings came back.
    assert fleet.opened() == {k: period.back_at + INTERVAL + GRACE for k in dead}
    assert {e.kind for e in fleet.written} == {"up", "down", "incident_opened"}
    assert {e.monitor_id for e in fleet.written if e.kind == "down"} == dead


def test_a_third_of_the_fleet_dying_at_once_is_an_outage_and_alerts_on_time():
    fleet = Fleet(2000)
    fleet.run(T0 + 120, range(fleet.n))
    last = {k: fleet.now for k in range(fleet.n)}
    dead = set(range(0, 2000, 3))
    fleet.run(fleet.now + 120, set(range(fleet.n)) - dead)
    assert fleet.sight.periods == 0
    opened = fleet.opened()
    assert set(opened) == dead
    for k in dead:  # at the deadline itself: held for the window, never moved
        period_start = math.floor((last[k] - T0 - fleet.phase(k)) / INTERVAL) * INTERVAL
        assert opened[k] == T0 + fleet.phase(k) + period_start + INTERVAL + GRACE


def test_a_fleet_of_cron_jobs_pinging_in_the_same_second_is_not_blind_between_runs():
    fleet = Fleet(1000, interval=60)
    fleet.run(T0 + 200, range(fleet.n), synchronized=True)
    dead = set(range(0, 1000, 10))  # a tenth die together, as their host did
    fleet.run(fleet.now + 200, set(range(fleet.n)) - dead, synchronized=True)
    assert fleet.sight.periods == 0
    assert set(fleet.opened()) == dead


def test_the_same_fleet_unheard_is_blind():
    fleet = Fleet(1000, interval=60)
    fleet.run(T0 + 200, range(fleet.n), synchronized=True)
    fleet.run(fleet.now + 120)
    assert fleet.sight.blind and fleet.opened() == {}


def test_a_small_installation_holds_nothing_and_alerts_at_the_deadline():
    fleet = Fleet(49)  # below LASTSEEN_BLIND_MIN_LATE: blindness could never be declared
    fleet.run(T0 + 100, range(fleet.n))
    fleet.run(fleet.now + 100)
    assert fleet.sight.periods == 0 and fleet.sight.held_count() == 0
    assert len(fleet.opened()) == 49


def test_window_zero_switches_it_off():
    fleet = Fleet(500, config=SightConfig(window=0))
    fleet.run(T0 + 100, range(fleet.n))
    fleet.run(fleet.now + 100)
    assert fleet.sight.periods == 0 and len(fleet.opened()) == 500


def test_a_failure_is_never_held_nor_undone():
    fleet = Fleet(200)
    fleet.run(T0 + 60, range(fleet.n))
    fleet.table.fail(fleet.digests[7], fleet.now, 3)
    fleet.run(fleet.now + 1, range(fleet.n))
    assert [e.kind for e in fleet.written if e.monitor_id == 7][-2:] == [
        "failed", "incident_opened",
    ]  # fmt: skip
    fleet.run(fleet.now + 60)  # blind now; the failure's incident stays
    assert fleet.sight.blind
    assert fleet.table.get(7)["state"] == "down" and fleet.table.get(7)["incident_open"]


def test_everything_held_goes_out_at_a_graceful_stop():
    fleet = Fleet(100)
    fleet.run(T0 + 60, range(fleet.n))
    fleet.run(fleet.now + 40, range(1, fleet.n))  # one dies; its miss is held
    assert fleet.opened() == {} and fleet.sight.holds(0)
    assert [e.kind for e in fleet.sight.release(math.inf)] == ["down", "incident_opened"]


def test_a_monitor_that_missed_then_failed_in_the_window_keeps_its_failures_incident():
    """Missed (held), pinged, then failed, all in the window that then turns out blind:
    the miss is dropped, the failure's incident stays open in the table as in the
    events (it was heard)."""
    fleet = Fleet(200)
    fleet.run(T0 + 30, range(fleet.n))
    fleet.run(T0 + 60, range(1, fleet.n))  # 0's last ping: T0 + 30, its deadline T0 + 65
    fleet.run(T0 + 66)  # and nobody's pings arrive from T0 + 60
    assert fleet.sight.holds(0) and not fleet.sight.blind
    fleet.table.ping(fleet.digests[0], fleet.now)
    fleet.table.fail(fleet.digests[0], fleet.now + 0.5, 2)
    fleet.run(fleet.now + 10)
    assert fleet.sight.blind
    kinds = [e.kind for e in fleet.written if e.monitor_id == 0]
    assert "down" not in kinds and kinds[-2:] == ["failed", "incident_opened"], kinds
    assert fleet.table.get(0)["state"] == "down" and fleet.table.get(0)["incident_open"]
