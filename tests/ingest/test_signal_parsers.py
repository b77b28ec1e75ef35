"""The two readings of a ping's target agree: the native path's (``_fastpath``, which
answers signals without a query or body itself) and ``checkins.parse`` (h11's path, for
the rest). A target the native path claims must mean the same kind and exit status on
the other; and every well-formed signal without a query is one it claims (or it would
fall to the slower path for nothing)."""

from __future__ import annotations

import re

import hypothesis.strategies as st
from hypothesis import example, given, settings

from ingest import checkins
from ingest._fastpath import PING_PREFIX, target_kind

HEX = "0123456789abcdef"
TOKENS = st.one_of(
    st.text(HEX, min_size=64, max_size=64),  # well formed
    st.text(HEX + "ABCDEFxz-", min_size=60, max_size=68),  # nearly
    st.text(min_size=0, max_size=70),
)
# fmt: off
EDGES = ["start", "fail", "log", "0", "1", "3", "9", "10", "99", "255", "256", "00", "007",
         "-1", "+1", "", "x", "Start", "fail/", "log2", "1000", "2550", " 1"]
# fmt: on
SUFFIXES = st.one_of(st.sampled_from(EDGES), st.text(min_size=0, max_size=6))
QUERIES = st.one_of(
    st.none(), st.sampled_from(["", "rid=1", "rid=6ba7b810-9dad-11d1-80b4-00c04fd430c8"])
)
WELL_FORMED = re.compile(rb"[0-9a-f]{64}(/(start|fail|log|0|[1-9][0-9]{0,2}))?")


@settings(max_examples=1500, deadline=None)
@given(token=TOKENS, suffix=st.one_of(st.none(), SUFFIXES), query=QUERIES)
@example(token="a" * 64, suffix="255", query=None)
@example(token="a" * 64, suffix="256", query=None)
@example(token="a" * 64, suffix="007", query=None)
@example(token="a" * 64, suffix="start", query="rid=1")
def test_the_native_and_the_python_readings_agree(token, suffix, query):
    path = PING_PREFIX + token.encode("utf-8", "surrogatepass")
    if suffix is not None:
        path += b"/" + suffix.encode("utf-8", "surrogatepass")
    target = path if query is None else path + b"?" + query.encode()
    kind, status = target_kind(target)
    signal = checkins.parse(target)
    if kind is not None:  # the native path answers it: the same meaning on the other
        assert signal is not None, target
        assert (signal.kind, signal.status) == (kind, status), target
        assert signal.token == target[len(PING_PREFIX) :].split(b"?")[0].split(b"/")[0]
    rest = path[len(PING_PREFIX) :]
    if (
        query is None
        and WELL_FORMED.fullmatch(rest)
        and (suffix is None or not suffix.isdigit() or int(suffix) <= 255)
    ):
        assert kind is not None, target  # a plain signal: the native path's to answer
        assert signal is not None and checkins.token_of(signal) is not None
