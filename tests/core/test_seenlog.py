"""The seen log's sections: what goes in comes out, to the millisecond, never later."""

from __future__ import annotations

import array
import math
import sys

import hypothesis.strategies as st
import pytest
from hypothesis import example, given

from core import _seenpack, seenlog
from core.shards import SHARDS

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


def reference_planes(ids: list[int], times: list[float], base_ms: int) -> bytes:
    """The format in Python, as core/seenlog.py describes it (and as it was written
    before the native layout): sorted by id (equal ids as given), the id gaps then the
    times as little-endian int64, split into byte planes."""
    order = sorted(range(len(ids)), key=ids.__getitem__)
    n = len(order)
    values = array.array("q", [0] * (2 * n))
    previous = 0
    for k, i in enumerate(order):
        values[k] = ids[i] - previous
        values[n + k] = math.floor(times[i] * 1000) - base_ms
        previous = ids[i]
    if sys.byteorder == "big":
        values.byteswap()
    raw = values.tobytes()
    return b"".join(raw[b::8] for b in range(8))


EARLY = st.floats(min_value=1_000_000_000.0, max_value=2_000_000_000.0, allow_nan=False)


@given(st.lists(st.tuples(st.integers(min_value=1, max_value=2**40), EARLY), max_size=300))
@example([(5, 1.0e9), (5, 1.9e9), (2, 1.5e9)])  # equal ids keep their order
def test_the_native_planes_are_the_format(entries):
    ids, times = [e[0] for e in entries], [e[1] for e in entries]
    assert _seenpack.planes(ids, times, BASE_MS) == reference_planes(ids, times, BASE_MS)


def test_a_row_s_sections_by_shard_without_the_dropped_and_the_skipped():
    ids = [40, 7, 9, 12, 3, 8, 99]
    times = [1.8e9 + i for i in range(7)]
    shards = [5, 5, -1, 2, 700, 9, 5]  # 9: not loaded any more; 700: not held; 9: full
    held = bytes(s != 700 for s in range(SHARDS))
    skip = bytes(s == 9 for s in range(SHARDS))
    sections, dropped = _seenpack.sections(
        array.array("q", ids),
        array.array("d", times),
        array.array("i", shards),
        held,
        skip,
        BASE_MS,
    )
    assert dropped == 2
    assert [(shard, n) for shard, _, n in sections] == [(2, 1), (5, 3)]
    assert sections[0][1] == reference_planes([12], [times[3]], BASE_MS)
    assert sections[1][1] == reference_planes([40, 7, 99], [times[0], times[1], times[6]], BASE_MS)
    with pytest.raises(ValueError):
        _seenpack.sections(array.array("q", ids), array.array("d", times),
                           array.array("i", shards[:-1]), held, skip, BASE_MS)  # fmt: skip
