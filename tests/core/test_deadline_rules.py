"""The state rules, stated as scenarios and checked on both the table and the model."""

from __future__ import annotations

from typing import Any

import pytest

from core import DeadlineTable
from core._deadline_model import DeadlineModel
from core.tokens import digest

T0 = 1_000_000.0
A = digest("a" * 64)
B = digest("b" * 64)


@pytest.fixture(params=[DeadlineTable, DeadlineModel], ids=["cython", "model"])
def table(request: pytest.FixtureRequest) -> Any:
    return request.param()


def kinds(table: Any) -> list[str]:
    return [e.kind for e in table.take_events()]


def test_a_new_monitor_never_goes_down_before_its_first_ping(table):
    table.upsert(1, A, 30, 0, 1, False, T0)
    assert table.pop_due(T0 + 10_000) == 0
    assert table.get(1)["state"] == "pending"
    assert kinds(table) == []


def test_a_missed_deadline_makes_it_down_and_opens_the_incident_once(table):
    table.upsert(1, A, 30, 10, 1, False, T0)
    assert table.ping(A, T0 + 1)
    assert kinds(table) == ["up"]
    table.pop_due(T0 + 40.999)
    assert table.get(1)["state"] == "up"
    table.pop_due(T0 + 41)
    # Each event carries the last ping: the alert says when that was, not the deadline.
    assert table.take_events() == [
        (1, "down", T0 + 41, T0 + 1, -1),
        (1, "incident_opened", T0 + 41, T0 + 1, -1),
    ]
    table.pop_due(T0 + 10_000)
    assert kinds(table) == []
    assert table.get(1)["misses"] == 1


def test_each_further_interval_is_one_more_miss_until_the_threshold(table):
    table.upsert(1, A, 60, 5, 3, False, T0)
    table.ping(A, T0)
    table.take_events()
    table.pop_due(T0 + 65)
    assert table.get(1)["misses"] == 1
    table.pop_due(T0 + 125)
    assert table.get(1)["misses"] == 2
    assert kinds(table) == ["down"]
    table.pop_due(T0 + 185)
    assert table.take_events() == [(1, "incident_opened", T0 + 185, T0, -1)]


def test_the_next_ping_recovers_and_resolves_the_incident(table):
    table.upsert(1, A, 30, 0, 1, False, T0)
    table.ping(A, T0)
    table.pop_due(T0 + 31)
    table.take_events()
    table.ping(A, T0 + 50)
    assert kinds(table) == ["recovered", "incident_resolved"]
    row = table.get(1)
    assert (row["state"], row["misses"], row["incident_open"]) == ("up", 0, False)
    assert row["deadline"] == T0 + 80


def test_a_recovery_below_the_threshold_resolves_nothing(table):
    table.upsert(1, A, 30, 0, 2, False, T0)
    table.ping(A, T0)
    table.pop_due(T0 + 31)
    table.take_events()
    table.ping(A, T0 + 40)
    assert kinds(table) == ["recovered"]


def test_pings_move_the_deadline_without_events(table):
    table.upsert(1, A, 30, 0, 1, False, T0)
    for second in range(0, 300, 20):
        table.ping(A, T0 + second)
        table.pop_due(T0 + second)
    assert kinds(table) == ["up"]
    assert table.get(1)["deadline"] == T0 + 280 + 30


def test_after_a_restart_nothing_goes_down_before_start_plus_interval_plus_grace(table):
    # Last ping long ago: without the amnesty it would be down the moment it loads.
    start = T0 + 3_600
    table.upsert(1, A, 60, 30, 1, False, start, state="up", last_seen=T0)
    table.pop_due(start + 89.9)
    assert table.get(1)["state"] == "up"
    table.pop_due(start + 90)
    assert kinds(table) == ["down", "incident_opened"]


def test_a_monitor_that_pings_on_schedule_after_our_outage_never_alerts(table):
    start = T0 + 300
    table.upsert(1, A, 60, 0, 1, False, start, state="up", last_seen=T0)
    table.ping(A, start + 30)
    assert kinds(table) == ["up"] or kinds(table) == []
    table.pop_due(start + 30 + 60 - 0.001)
    assert kinds(table) == []


def test_a_paused_monitor_has_no_deadline_but_records_its_pings(table):
    table.upsert(1, A, 30, 0, 1, True, T0)
    assert table.ping(A, T0 + 5)
    table.pop_due(T0 + 10_000)
    row = table.get(1)
    assert (row["state"], row["last_seen"], row["deadline"]) == ("paused", T0 + 5, None)
    assert kinds(table) == []


def test_pausing_closes_an_open_incident_without_a_recovery_and_resuming_restarts_the_clock(
    table,
):
    table.upsert(1, A, 30, 0, 1, False, T0)
    table.ping(A, T0)
    table.pop_due(T0 + 30)
    table.take_events()
    table.upsert(1, A, 30, 0, 1, True, T0 + 100)
    assert kinds(table) == ["incident_paused"]  # not incident_resolved: nothing pinged
    table.upsert(1, A, 30, 0, 1, False, T0 + 200)
    assert table.get(1)["deadline"] == T0 + 230


def test_a_rotated_token_stops_matching_at_once(table):
    table.upsert(1, A, 30, 0, 1, False, T0)
    table.upsert(1, B, 30, 0, 1, False, T0)
    assert not table.ping(A, T0)
    assert table.ping(B, T0)


def test_a_removed_monitor_is_forgotten(table):
    table.upsert(1, A, 30, 0, 1, False, T0)
    table.ping(A, T0)
    assert table.remove(1)
    assert not table.ping(A, T0 + 1)
    table.pop_due(T0 + 1_000)
    assert table.get(1) is None
    assert kinds(table) == ["up"]


def test_two_monitors_cannot_share_a_token(table):
    table.upsert(1, A, 30, 0, 1, False, T0)
    with pytest.raises(ValueError, match="another monitor"):
        table.upsert(2, A, 30, 0, 1, False, T0)


def test_a_shorter_interval_brings_the_deadline_forward(table):
    table.upsert(1, A, 3600, 0, 1, False, T0)
    table.ping(A, T0)
    table.upsert(1, A, 30, 0, 1, False, T0 + 1)
    table.pop_due(T0 + 30)
    assert kinds(table) == ["up", "down", "incident_opened"]


def test_dirty_rows_are_handed_over_once(table):
    table.upsert(1, A, 30, 0, 1, False, T0)
    for i in range(5):
        table.ping(A, T0 + i)
    # The first ping changed the state: the whole row goes.
    assert table.take_dirty() == ([], [], [1], [T0 + 4], ["up"], [0], [False], [0.0])
    assert table.take_dirty() == ([], [], [], [], [], [], [], [])
    table.ping(A, T0 + 5)
    # Later pings to an up monitor change last_seen alone.
    assert table.take_dirty() == ([1], [T0 + 5], [], [], [], [], [], [])
    table.mark_dirty([1, 99])
    assert table.take_dirty()[2] == [1]


def test_with_the_seen_log_a_pinged_monitor_waits_marked_for_its_row(table):
    """take_dirty(keep_seen=True) keeps a monitor only pinged (the seen log's next row
    takes it with take_seen, its latest time); one changed otherwise goes whole as ever;
    a monitor taken is marked afresh by its next ping, and a row that was not written
    marks its monitors again as pinged only."""
    table.upsert(1, A, 30, 0, 1, False, T0)
    table.upsert(2, B, 30, 0, 1, False, T0)
    table.ping(A, T0 + 1)
    table.ping(B, T0 + 1)
    table.take_dirty()
    table.ping(A, T0 + 2)
    table.ping(A, T0 + 3)
    assert table.take_dirty(keep_seen=True) == ([], [], [], [], [], [], [], [])
    table.pop_due(T0 + 31)  # B missed: down, a whole row; A's ping is still owed
    rows = table.take_dirty(keep_seen=True)
    assert (rows.seen_ids, rows.ids, rows.states) == ([], [2], ["down"])
    shard = table.shard(1)  # taken with its shard, which the row is written by
    assert _seen(table) == ([1], [T0 + 3], [shard])
    assert _seen(table) == ([], [], [])
    table.ping(A, T0 + 4)  # marked afresh once taken
    assert _seen(table) == ([1], [T0 + 4], [shard])
    table.mark_dirty([1, 99], changed=False)  # the row was not written
    assert table.take_dirty(keep_seen=True)[:4] == ([], [], [], [])
    assert _seen(table) == ([1], [T0 + 4], [shard])
    table.ping(A, T0 + 5)
    assert table.take_dirty()[:2] == ([1], [T0 + 5])  # without the seen log: a seen row


def test_the_heap_stays_bounded_under_interval_churn():
    table = DeadlineTable()
    for i in range(100):
        table.upsert(i, digest(f"{i:064x}"), 3600, 0, 1, False, T0)
        table.ping(digest(f"{i:064x}"), T0)
    for round_ in range(200):
        for i in range(100):
            table.upsert(i, digest(f"{i:064x}"), 3600 - round_ - 1, 0, 1, False, T0)
    assert table.statistics()["heap_entries"] <= 2 * 100 + 1024


def test_memory_per_monitor_is_within_budget():
    # The ingest sizes the table for what it loads; growth past that doubles.
    n = 200_000
    table = DeadlineTable(capacity=n)
    for i in range(n):
        d = digest(i.to_bytes(8, "big"))
        table.upsert(i, d, 60, 0, 1, False, T0)
        table.ping(d, T0)
    assert table.memory_bytes() / n <= 128


def test_a_yearly_period_goes_down_a_year_and_its_grace_after_the_last_ping(table):
    year, day = 365 * 86_400, 86_400
    table.upsert(1, A, year, day, 1, False, T0)
    table.ping(A, T0 + 5)
    assert table.get(1)["deadline"] == T0 + 5 + year + day
    table.pop_due(T0 + 5 + year + day - 0.001)
    assert kinds(table) == ["up"]
    table.pop_due(T0 + 5 + year + day)
    assert kinds(table) == ["down", "incident_opened"]


def test_a_failure_signal_opens_the_incident_at_once_with_its_exit_status(table):
    table.upsert(1, A, 3600, 60, 3, False, T0)  # threshold 3: a miss would take 3 hours
    table.ping(A, T0)
    table.take_events()
    assert table.fail(A, T0 + 10, 3)
    # Both carry the last ping before the failure: the alert says when it last succeeded.
    assert table.take_events() == [
        (1, "failed", T0 + 10, T0, 3),
        (1, "incident_opened", T0 + 10, T0, -1),
    ]
    row = table.get(1)
    assert (row["state"], row["incident_open"], row["deadline"]) == ("down", True, None)
    assert row["last_seen"] == T0 + 10  # a failure is a ping: the job ran
    assert table.fail(A, T0 + 20) and kinds(table) == ["failed"]  # the same incident
    table.ping(A, T0 + 30)
    assert kinds(table) == ["recovered", "incident_resolved"]


def test_a_failure_older_than_the_last_ping_changes_nothing(table):
    """Signals handed over from other processes may arrive out of order: the latest
    decides, whatever the order."""
    table.upsert(1, A, 60, 0, 1, False, T0)
    table.ping(A, T0 + 5)
    table.take_events()
    assert table.failed(1, T0 + 4, 2)
    assert kinds(table) == [] and table.get(1)["state"] == "up"


def test_failure_signals_of_a_foreign_monitor_go_to_its_owner(table):
    from core.shards import shard_of

    assert shard_of(A) != shard_of(B)
    table.release([shard_of(A)])
    table.upsert(1, A, 60, 0, 1, False, T0)
    table.upsert(2, B, 60, 0, 1, False, T0)
    assert table.fail(A, T0 + 1, 7) and table.fail(B, T0 + 2)
    assert table.take_signals() == ([shard_of(A)], [1], [T0 + 1], [7])
    assert table.take_signals() == ([], [], [], [])
    assert kinds(table) == ["failed", "incident_opened"]  # B's, judged here


def test_an_exit_status_is_a_byte(table):
    table.upsert(1, A, 60, 0, 1, False, T0)
    for status in (256, -2):
        with pytest.raises(ValueError, match="exit status"):
            table.fail(A, T0, status)


def test_a_run_past_its_max_runtime_opens_a_running_too_long_incident(table):
    table.upsert(1, A, 3600, 60, 3, False, T0, max_runtime=5)
    table.ping(A, T0)
    table.take_events()
    assert table.start(A, T0 + 100)
    assert table.get(1)["deadline"] == T0 + 105  # the run's, before the next ping's
    table.pop_due(T0 + 104.999)
    assert kinds(table) == []
    table.pop_due(T0 + 105)
    assert table.take_events() == [
        (1, "timed_out", T0 + 105, T0, -1),
        (1, "incident_opened", T0 + 105, T0, -1),
    ]
    row = table.get(1)
    assert (row["state"], row["incident_open"], row["started"]) == ("down", True, 0.0)
    table.ping(A, T0 + 200)  # it finished after all
    assert kinds(table) == ["recovered", "incident_resolved"]


def test_a_run_that_ends_in_time_changes_nothing(table):
    table.upsert(1, A, 3600, 60, 1, False, T0, max_runtime=5)
    table.ping(A, T0)
    table.start(A, T0 + 100)
    table.ping(A, T0 + 104)  # within 5 s
    table.take_events()
    table.pop_due(T0 + 3000)
    assert kinds(table) == [] and table.get(1)["deadline"] == T0 + 104 + 3660


def test_without_a_max_runtime_a_start_changes_no_deadline_and_writes_nothing(table):
    table.upsert(1, A, 60, 0, 1, False, T0)
    table.ping(A, T0)
    table.take_dirty()
    assert table.start(A, T0 + 1)
    assert table.get(1)["deadline"] == T0 + 60 and table.get(1)["started"] == 0.0
    assert table.take_dirty() == ([], [], [], [], [], [], [], [])


def test_an_open_run_survives_a_restart_and_gets_the_amnesty(table):
    """Persisted with its start, a run is judged again from the load: it may take its
    whole max_runtime from then (an end handed over late is not a false alarm)."""
    table.upsert(1, A, 3600, 60, 1, False, T0 + 50, "up", 0, T0, False, 1, 30, T0 + 10)
    assert table.get(1)["started"] == T0 + 10
    assert table.get(1)["deadline"] == T0 + 50 + 30


# -- blindness (ingest/sight.py decides; the table keeps its rules)


def test_an_on_time_ping_is_heard_at_the_deadline_it_moved(table):
    table.upsert(1, A, 30, 5, 1, False, T0)
    table.ping(A, T0)  # pending -> up: no deadline moved, nothing heard
    assert table.heard(T0 + 1000, 1000) == 0
    table.ping(A, T0 + 29)  # its deadline was T0 + 35
    assert table.heard(T0 + 35, 1) == 1
    assert table.heard(T0 + 34.9, 10) == 0
    assert table.heard(T0 + 44, 10) == 1 and table.heard(T0 + 45, 10) == 0
    with pytest.raises(ValueError, match="a window is 1 to 2048 seconds"):
        table.heard(T0, 0)


def test_blind_a_miss_makes_a_monitor_unknown_and_its_ping_makes_it_up_silently(table):
    table.upsert(1, A, 30, 0, 1, False, T0)
    table.ping(A, T0)
    table.take_events()
    table.blind([], [])
    assert table.is_blind()
    table.pop_due(T0 + 30)
    assert table.get(1)["state"] == "unknown" and table.get(1)["deadline"] in (None, 0.0)
    assert table.unknown_count() == 1
    assert kinds(table) == []
    table.ping(A, T0 + 100)
    assert table.get(1)["state"] == "up" and kinds(table) == []
    assert table.take_dirty().states == ["up"]


def test_a_failure_while_blind_still_opens_its_incident(table):
    table.upsert(1, A, 30, 0, 1, False, T0)
    table.ping(A, T0)
    table.take_events()
    table.blind([], [])
    assert table.fail(A, T0 + 5, 3)
    assert kinds(table) == ["failed", "incident_opened"]


def test_the_misses_before_blindness_was_seen_are_undone(table):
    table.upsert(1, A, 30, 0, 1, False, T0)
    table.upsert(2, B, 30, 0, 2, False, T0)
    table.ping(A, T0)
    table.ping(B, T0)
    table.pop_due(T0 + 30)
    assert kinds(table) == ["up", "up", "down", "incident_opened", "down"]
    assert table.blind([2], [1]) == 2  # 1's incident, and both misses, were blindness
    assert [table.get(i)["state"] for i in (1, 2)] == ["unknown", "unknown"]
    assert not table.get(1)["incident_open"]
    table.pop_due(T0 + 1000)
    assert kinds(table) == []


def test_sight_judges_everyone_afresh_from_when_pings_came_back(table):
    table.upsert(1, A, 30, 5, 1, False, T0)
    table.upsert(2, B, 30, 5, 1, False, T0)
    table.ping(A, T0)
    table.ping(B, T0)
    table.take_events()
    table.blind([], [])
    table.pop_due(T0 + 100)  # both unknown
    table.ping(A, T0 + 120)  # 1 is back: up, silently
    assert table.sighted(T0 + 118) == 1  # 2 was still unknown
    assert not table.is_blind() and table.unknown_count() == 0
    assert table.get(2)["state"] == "up"
    table.pop_due(T0 + 118 + 35 - 0.001)
    assert kinds(table) == []
    table.pop_due(T0 + 118 + 35)  # 2 really died: down at sight + interval + grace
    assert table.take_events() == [
        (2, "down", T0 + 153, T0, -1),
        (2, "incident_opened", T0 + 153, T0, -1),
    ]
    assert table.get(1)["state"] == "up"  # due at its ping + 35


def test_a_persisted_unknown_monitor_loads_as_up_with_the_amnesty(table):
    table.upsert(1, A, 30, 5, 1, False, T0, "unknown", 0, T0 - 500)
    assert table.get(1)["state"] == "up"
    assert table.get(1)["deadline"] == T0 + 35


def _seen(table: Any) -> tuple[list[int], list[float], list[int]]:
    """take_seen() as lists (the table hands over arrays, the model lists)."""
    ids, times, shards = table.take_seen()
    return list(ids), list(times), list(shards)
