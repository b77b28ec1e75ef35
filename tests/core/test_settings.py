"""The one settings seam: every LASTSEEN_* variable read and checked in one place, a bad
value named with what it allows, never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import Settings, SettingsError


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


class _Recording(dict):
    """An environment that notes every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)


def test_the_readme_table_lists_every_variable_the_settings_read_and_no_other():
    env = _Recording()
    Settings.from_env(env)
    read = {name for name in env.asked if name.startswith("LASTSEEN_")}
    assert len(read) > 25  # the recording saw the real reads
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = set(re.findall(r"^\| `(LASTSEEN_[A-Z_]+)`", readme, re.MULTILINE))
    older = {"LASTSEEN_LISTEN"}  # LASTSEEN_INGEST_LISTEN's older name, in that row
    assert sorted(read - listed - older) == []  # every variable read is documented
    assert sorted(listed - read) == []  # and every one documented is read


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
