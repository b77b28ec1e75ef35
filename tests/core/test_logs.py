"""A repeated error is logged once, then with a count (issue 16, item 6)."""

from __future__ import annotations

import logging

from core.logs import RepeatFilter


def record(msg: str, *args: object, name: str = "x", level: int = logging.ERROR):
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_are_held_back_and_counted_then_the_next_one_says_how_many():
    now = [0.0]
    f = RepeatFilter(window=60, clock=lambda: now[0])
    assert f.filter(record("accept failed: %s", "EMFILE"))
    passed = sum(f.filter(record("accept failed: %s", "EMFILE")) for _ in range(112_363))
    assert passed == 0
    assert f.filter(record("another kind"))  # other kinds are not held back
    now[0] = 61.0
    late = record("accept failed: %s", "EMFILE")
    assert f.filter(late)
    assert late.getMessage() == "accept failed: EMFILE (and 112363 more like it since the last one)"
    again = record("accept failed: %s", "EMFILE")
    now[0] = 200.0
    assert f.filter(again) and again.getMessage() == "accept failed: EMFILE"


def test_it_remembers_a_bounded_number_of_kinds():
    f = RepeatFilter(window=60, max_kinds=100, clock=lambda: 0.0)
    for i in range(10_000):
        assert f.filter(record(f"one-off {i}"))
    assert len(f._kinds) == 100


def test_an_exception_is_logged_by_its_type_only():
    from core.logs import TypeOnly

    try:
        raise ValueError("INSERT ... VALUES ('secret-value')")
    except ValueError:
        import sys

        rec = logging.LogRecord("asyncpg.pool", logging.WARNING, __file__, 1, "failed; retrying",
                                (), sys.exc_info())  # fmt: skip
    assert TypeOnly().filter(rec)
    formatted = logging.Formatter("%(message)s").format(rec)
    assert formatted == "failed; retrying [ValueError]"
    assert "secret-value" not in formatted and "Traceback" not in formatted


def test_information_is_never_held_back():
    f = RepeatFilter(window=60, clock=lambda: 0.0)
    assert all(f.filter(record("applied migration %s", i, level=logging.INFO)) for i in range(8))
