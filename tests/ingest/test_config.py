"""The ingest's configuration from LASTSEEN_* variables, with the command line winning."""

from __future__ import annotations

import pytest

from ingest.config import IngestConfig
from ingest.protocol import Limits


def test_variables_set_addresses_intervals_and_limits():
    config = IngestConfig.from_env({
        "LASTSEEN_DATABASE_URL": "postgresql://x/y",
        "LASTSEEN_INGEST_LISTEN": "127.0.0.1:18080",
        "LASTSEEN_ADMIN_LISTEN": "[::1]:19108",
        "LASTSEEN_FLUSH_INTERVAL_SECONDS": "0.5",
        "LASTSEEN_MAX_CONNECTIONS": "20",
        "LASTSEEN_HEAD_TIMEOUT_SECONDS": "3",
    })  # fmt: skip
    assert (config.host, config.port) == ("127.0.0.1", 18080)
    assert (config.admin_host, config.admin_port) == ("::1", 19108)
    assert config.flush_interval == 0.5
    assert config.limits.max_connections == 20
    assert config.limits.head_timeout == 3.0
    assert config.limits.keepalive_timeout == Limits().keepalive_timeout


def test_the_command_line_wins_over_variables():
    config = IngestConfig.from_env(
        {"LASTSEEN_DATABASE_URL": "postgresql://x/y", "LASTSEEN_INGEST_LISTEN": "127.0.0.1:1"},
        port=2,
    )
    assert config.port == 2


def test_no_database_is_a_clear_error():
    with pytest.raises(ValueError, match="LASTSEEN_DATABASE_URL"):
        IngestConfig.from_env({})
