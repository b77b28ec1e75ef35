from __future__ import annotations

import pytest

from core import DeadlineTable
from core.tokens import digest
from ingest._fastpath import FastPath
from ingest.protocol import Limits, ResponseCache, Session

T0 = 1_700_000_000.0
TOKEN = "ab" * 32
OTHER = "cd" * 32


@pytest.fixture
def table() -> DeadlineTable:
    t = DeadlineTable()
    t.upsert(1, digest(TOKEN), 60, 0, 1, False, T0)
    return t


@pytest.fixture
def responder(table: DeadlineTable) -> ResponseCache:
    r = ResponseCache(FastPath(table))
    r.refresh(T0)
    return r


@pytest.fixture
def session(responder: ResponseCache) -> Session:
    return Session(responder, Limits(), T0)
