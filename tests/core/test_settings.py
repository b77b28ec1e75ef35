"""The one settings seam: every LASTSEEN_* variable read and checked in one place, a bad
value named with what it allows, never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import EVERY, READ_BY, Settings, SettingsError


def test_the_defaults_and_a_few_variables():
    settings = Settings.from_env({
        "LASTSEEN_INGEST_LISTEN": "[::1]:18080", "LASTSEEN_MAX_CONNECTIONS": "20",
        "LASTSEEN_HEAD_TIMEOUT_SECONDS": "3", "LASTSEEN_ALLOW_PRIVATE_TARGETS": "yes",
        "LASTSEEN_TRUSTED_PROXIES": "10.0.0.0/8", "LASTSEEN_MAX_TOKENS_PER_USER": "7",
    })  # fmt: skip
    assert settings.ingest_listen == ("::1", 18080)
    assert settings.public_origin == "http://[::1]:18080"
    assert dict(settings.limits) == {"max_connections": 20, "head_timeout": 3.0}
    assert settings.allow_private_targets and "10.1.2.3" in settings.trusted_proxies
    assert settings.max_tokens_per_user == 7
    assert Settings.from_env({}).control_listen == ("127.0.0.1", 8081)
    assert Settings.from_env({}).seen_interval == 10.0
    assert Settings.from_env({"LASTSEEN_SEEN_SECONDS": "0"}).seen_interval == 0.0  # off


def test_the_older_name_of_the_public_listener_still_counts():
    assert Settings.from_env({"LASTSEEN_LISTEN": "127.0.0.1:9"}).ingest_listen == ("127.0.0.1", 9)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("LASTSEEN_MAX_CONNECTIONS", "abc", "LASTSEEN_MAX_CONNECTIONS must be a whole number"),
        ("LASTSEEN_MAX_CONNECTIONS", "0", "LASTSEEN_MAX_CONNECTIONS must be at least 1"),
        ("LASTSEEN_FLUSH_INTERVAL_SECONDS", "-1", "LASTSEEN_FLUSH_INTERVAL_SECONDS must be a"),
        ("LASTSEEN_CONTROL_LISTEN", "8081", "LASTSEEN_CONTROL_LISTEN must be HOST:PORT"),
        ("LASTSEEN_ADMIN_LISTEN", "127.0.0.1:99999", "LASTSEEN_ADMIN_LISTEN: the port must"),
        ("LASTSEEN_ALLOW_PRIVATE_TARGETS", "maybe", "LASTSEEN_ALLOW_PRIVATE_TARGETS must be 1"),
        ("LASTSEEN_LOG_LEVEL", "loud", "LASTSEEN_LOG_LEVEL must be one of"),
        ("LASTSEEN_SEEN_SECONDS", "-5", r"LASTSEEN_SEEN_SECONDS must be .* or 0 \(off\)"),
        ("LASTSEEN_TRUSTED_PROXIES", "ten", "LASTSEEN_TRUSTED_PROXIES: 'ten' is not"),
        (
            "LASTSEEN_BLIND_WINDOW_SECONDS",
            "601",
            "LASTSEEN_BLIND_WINDOW_SECONDS must be 0 .off. to 600",
        ),
        ("LASTSEEN_BLIND_RATIO", "1.5", "LASTSEEN_BLIND_RATIO must be a share above 0"),
        ("LASTSEEN_RETAIN_AUDIT_DAYS", "30", "LASTSEEN_RETAIN_AUDIT_DAYS must be at least 365"),
        ("LASTSEEN_LEASE_SECONDS", "inf", "LASTSEEN_LEASE_SECONDS must be a positive number"),
        ("LASTSEEN_PING_HISTORY", "2.5", "LASTSEEN_PING_HISTORY must be a whole number"),
        ("LASTSEEN_INGEST_PROCS", "0", "LASTSEEN_INGEST_PROCS must be 1 to 64, not 0"),
    ],
)
def test_a_bad_value_is_named_with_what_is_allowed(variable, value, says):
    with pytest.raises(SettingsError, match=says):
        Settings.from_env({variable: value})


def test_the_command_line_stops_with_one_line_naming_the_variable(tmp_path: Path):
    env = {**os.environ, "LASTSEEN_MAX_CONNECTIONS_PER_ADDRESS": "lots"}
    done = subprocess.run(
        [sys.executable, "-m", "lastseen", "serve", "--data-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "lastseen: LASTSEEN_MAX_CONNECTIONS_PER_ADDRESS must be a whole number, not 'lots'"
    )
    assert not (tmp_path / "pg").exists()  # stopped before starting anything


def test_the_readme_table_lists_every_variable_the_settings_read_and_no_other():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = set(re.findall(r"^\| `(LASTSEEN_[A-Z_]+)`", readme, re.MULTILINE))
    assert len(READ_BY) > 25
    assert sorted(set(READ_BY) - listed) == []  # every variable read is documented
    assert sorted(listed - set(READ_BY)) == []  # and every one documented is read


def test_the_readme_defaults_are_the_models():
    """Every default the README writes as a value is the model's: set to it, a variable
    changes nothing (for the listener's limits, which the model leaves unset, the value
    is the listener's own)."""
    from dataclasses import asdict

    from ingest.protocol import Limits

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listener = asdict(Limits())
    field = {extra["variable"]: name for name, info in Settings.model_fields.items()
             if isinstance(extra := info.json_schema_extra, dict)}  # fmt: skip
    checked = 0
    for name, default in re.findall(r"^\| `(LASTSEEN_[A-Z_]+)` \| `([^`<]*)` \|", readme, re.M):
        if field[name] in listener:
            assert float(default) == listener[field[name]], name
        else:
            assert Settings.from_env({name: default}) == Settings(), name
        checked += 1
    assert checked > 25


def test_each_variable_is_read_and_nothing_else_is():
    """READ_BY is made from the model's fields; each of its variables, set alone, changes
    the settings (it is really read), and a variable not among them changes nothing."""
    default = Settings.from_env({})
    assert default == Settings()
    for name, value in SAMPLES.items():
        assert Settings.from_env({name: value}) != default, name
    assert Settings.from_env({"LASTSEEN_NOT_A_SETTING": "1", "HOME": "/x"}) == default
    assert Settings.from_env({"LASTSEEN_MAX_CONNECTIONS": ""}) == default  # empty is unset


def test_only_from_env_reads_the_environment(monkeypatch):
    """A process reads its environment where it starts; Settings() made in a test or by
    a library never picks up the shell's variables."""
    monkeypatch.setenv("LASTSEEN_MAX_TOKENS_PER_USER", "3")
    assert Settings().max_tokens_per_user == 100
    assert Settings.from_env().max_tokens_per_user == 3
    assert Settings(max_tokens_per_user=4).max_tokens_per_user == 4


def test_the_newer_name_of_the_public_listener_wins_over_the_older():
    both = {"LASTSEEN_LISTEN": "127.0.0.1:9", "LASTSEEN_INGEST_LISTEN": "127.0.0.1:10"}
    assert Settings.from_env(both).ingest_listen == ("127.0.0.1", 10)
    with pytest.raises(SettingsError, match=r"^LASTSEEN_LISTEN must be HOST:PORT"):
        Settings.from_env({"LASTSEEN_LISTEN": "nine"})


def test_lastseen_config_prints_what_is_in_effect_with_secrets_masked():
    env = {
        **os.environ,
        "LASTSEEN_DATABASE_URL": "postgresql://lastseen:hunter2@db.internal:5432/lastseen",
        "LASTSEEN_SMTP_URL": "smtp://alerts:topsecret@mail.internal:587",
        "LASTSEEN_KEYRING": '{"secret": "keyring-material"}',
        "LASTSEEN_SEEN_SECONDS": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "lastseen", "config"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "postgresql://lastseen:****@db.internal:5432/lastseen" in out
    assert re.search(r"^seen_interval\s+0\.0$", out, re.MULTILINE)
    assert re.search(r"^smtp_url\s+\(set, not shown\)$", out, re.MULTILINE)
    for secret in ("hunter2", "topsecret", "keyring-material"):
        assert secret not in out + done.stderr


# A valid value other than the default, for each variable.
SAMPLES = {
    "LASTSEEN_DATABASE_URL": "postgresql://u@db.internal/x", "LASTSEEN_DATA_DIR": "/srv/x",
    "LASTSEEN_LOG_LEVEL": "DEBUG", "LASTSEEN_KEYRING": '{"a": "' + "A" * 43 + '"}',
    "LASTSEEN_INGEST_LISTEN": "127.0.0.1:1", "LASTSEEN_ADMIN_LISTEN": "127.0.0.1:2",
    "LASTSEEN_WORKER_ADMIN_LISTEN": "127.0.0.1:5",
    "LASTSEEN_CONTROL_LISTEN": "127.0.0.1:3", "LASTSEEN_CONTROL_UPSTREAM": "127.0.0.1:4",
    "LASTSEEN_PUBLIC_URL": "https://x.example", "LASTSEEN_TRUSTED_PROXIES": "10.0.0.0/8",
    "LASTSEEN_FLUSH_INTERVAL_SECONDS": "2", "LASTSEEN_POLL_INTERVAL_SECONDS": "7",
    "LASTSEEN_LEASE_SECONDS": "9", "LASTSEEN_SEEN_SECONDS": "3", "LASTSEEN_DB_TIMEOUT_SECONDS": "4",
    "LASTSEEN_PING_HISTORY": "7", "LASTSEEN_PING_HISTORY_PLAIN": "1",
    "LASTSEEN_BLIND_WINDOW_SECONDS": "20", "LASTSEEN_BLIND_RATIO": "0.9",
    "LASTSEEN_BLIND_MIN_LATE": "70", "LASTSEEN_MAX_CONNECTIONS": "77",
    "LASTSEEN_MAX_CONNECTIONS_PER_ADDRESS": "7", "LASTSEEN_MAX_REQUESTS_PER_CONNECTION": "7",
    "LASTSEEN_MAX_HEAD_BYTES": "4096", "LASTSEEN_MAX_BODY_BYTES": "70",
    "LASTSEEN_HEAD_TIMEOUT_SECONDS": "3", "LASTSEEN_BODY_TIMEOUT_SECONDS": "3",
    "LASTSEEN_KEEPALIVE_TIMEOUT_SECONDS": "3", "LASTSEEN_AUTH_FAILURES_PER_HOUR": "3",
    "LASTSEEN_SUBSCRIBE_PER_IP_PER_HOUR": "3", "LASTSEEN_MAX_MONITORS_PER_ORG": "3",
    "LASTSEEN_MAX_CHANNELS_PER_ORG": "3", "LASTSEEN_MAX_STATUS_PAGES_PER_ORG": "3",
    "LASTSEEN_MAX_TOKENS_PER_USER": "3", "LASTSEEN_SMTP_URL": "smtp://m.example:25",
    "LASTSEEN_SMTP_FROM": "x@example.com", "LASTSEEN_TELEGRAM_API": "https://t.example",
    "LASTSEEN_ALLOW_PRIVATE_TARGETS": "1", "LASTSEEN_RETAIN_EVENTS_DAYS": "3",
    "LASTSEEN_RETAIN_NOTIFICATIONS_DAYS": "3", "LASTSEEN_RETAIN_PINGS_DAYS": "3",
    "LASTSEEN_RETAIN_AUDIT_DAYS": "500", "LASTSEEN_INGEST_PROCS": "3",
}  # fmt: skip
# Read by the command line around the processes' configuration, not inside it.
AROUND = {"LASTSEEN_DATA_DIR", "LASTSEEN_LOG_LEVEL", "LASTSEEN_KEYRING", "LASTSEEN_INGEST_PROCS"}
# Read by control and the worker for their database pools, not their channels (held by
# tests/control/test_db_timeout.py).
POOLS = {"LASTSEEN_DB_TIMEOUT_SECONDS"}


def test_the_readme_says_which_process_reads_each_variable_and_it_is_so():
    """The README's "read by" column is READ_BY; and what the ingest's configuration and
    the channels' settings (the control process's test alerts, the worker) are made of
    is what READ_BY says: each variable changed alone changes exactly those."""
    from control.delivery import channel_settings
    from ingest.config import IngestConfig

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    column = dict(re.findall(r"^\| `(LASTSEEN_[A-Z_]+)` \| [^|]* \| ([^|]*) \|", readme, re.M))
    assert {k: v.strip() for k, v in column.items()} == READ_BY
    assert set(READ_BY) == set(SAMPLES)

    base = {"LASTSEEN_DATABASE_URL": "postgresql://u@db.internal/base"}
    ingest = IngestConfig.from_env(base)
    channels = channel_settings(Settings.from_env(base))
    for name, value in SAMPLES.items():
        changed = Settings.from_env({**base, name: value})
        readers = READ_BY[name]
        if name not in AROUND:
            in_ingest = IngestConfig.from_settings(changed) != ingest
            assert in_ingest == (readers == EVERY or "ingest" in readers), name
            in_channels = channel_settings(changed) != channels
            channels_read = "control" in readers and "worker" in readers and name not in POOLS
            assert in_channels == channels_read, name
