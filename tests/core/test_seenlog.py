"""The seen log's sections: what goes in comes out, to the millisecond, never later."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
from hypothesis import example, given

from core import seenlog

BASE_MS = 1_800_000_000_000
IDS = st.integers(min_value=1, max_value=2**62)
TIMES = st.floats(min_value=1_000_000_000.0, max_value=2_000_000_000.0, allow_nan=False)


@given(st.dictionaries(IDS, TIMES, max_size=200))
@example({1: 1073741824.7059999})  # 0.9999 ms past a millisecond: floats round x - 0.001
def test_a_section_round_trips_floored_to_the_millisecond(entries):
    ids, times = list(entries), list(entries.values())
    got_ids, got_times = seenlog.decode(seenlog.encode(ids, times, BASE_MS), BASE_MS)
    assert got_ids == sorted(ids)
    for monitor_id, at in zip(got_ids, got_times, strict=True):
        assert at == math.floor(entries[monitor_id] * 1000) / 1000
        # Less than a millisecond earlier, never later (1e-6: float rounding at 2e9 s).
        assert at <= entries[monitor_id] < at + 0.001 + 1e-6


def test_sections_are_small_for_a_shard_of_pinged_monitors():
    # A shard of a 100,000-monitor deployment: ~33 of its ~98 monitors pinged in 10 s.
    ids = [17 + 1024 * k + (k * 7919) % 1000 for k in range(33)]
    times = [(BASE_MS - (k * 3083) % 10_000) / 1000 for k in range(33)]
    assert len(seenlog.encode(ids, times, BASE_MS)) / 33 < 8  # a row update was ~108 B


def test_pack_lays_sections_end_to_end():
    shards, fulls, starts, lens, data = seenlog.pack(
        [(3, False, [5, 1], [1.5, 2.5]), (9, True, [], []), (12, True, [7], [3.25])],
        BASE_MS,
    )
    assert shards == [3, 9, 12] and fulls == [False, True, True]
    assert lens[1] == 0 and starts == [0, lens[0], lens[0]]
    assert len(data) == sum(lens)
    first = seenlog.decode(data[starts[0] : starts[0] + lens[0]], BASE_MS)
    assert first == ([1, 5], [2.5, 1.5])
    assert seenlog.decode(data[starts[2] :], BASE_MS) == ([7], [3.25])


def test_garbage_is_refused():
    with pytest.raises(ValueError):
        seenlog.decode(b"\x00\x01\x02", BASE_MS)
