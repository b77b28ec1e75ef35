"""The data-exposure search (tests/support/exposure.py) finds what it is meant to find: a pytest
run whose test leaks a secret into a log line or a response fails, naming the leak by
its first characters only; answers meant to carry the secret do not count."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from control import pat
from core.tokens import new_token

from .support.exposure import EXPOSURE, Exposure, record_response

ROOT = Path(__file__).resolve().parent.parent


def test_a_minted_token_in_a_response_or_log_is_found_and_the_secrets_answer_is_not():
    e = Exposure()
    token, other = "a1" * 32, "b2" * 32
    e.secret("heartbeat token", token)
    e.secret("channel secret (url)", "https://hooks.example/services/T0/B0/XXXXXXXX")
    e.secret("channel secret (url)", "http://127.0.0.1:8080")  # an origin: nothing secret
    e.text("GET /api/v1/monitors/1/secrets -> 200", "responses", f'{{"t":"{token}"}}', (token,))
    e.text("log control", "log records", f"pinged {other} and https://hooks.example/")
    assert e.leaks() == []
    e.text("log control", "log records", f"pinged {token}")
    e.text("GET /api/v1/channels -> 200", "responses",
           "https://hooks.example/services/T0/B0/XXXXXXXX http://127.0.0.1:8080/x")  # fmt: skip
    e.text("log uvicorn", "log records", "token " + pat.new_token())
    kinds = sorted((leak.where, leak.kind) for leak in e.leaks())
    assert kinds == [
        ("GET /api/v1/channels -> 200", "channel secret (url)"),
        ("log control", "heartbeat token"),
        ("log uvicorn", "personal access token"),
    ]
    assert all(token not in str(leak) for leak in e.leaks())


def test_the_suite_learns_tokens_minted_in_process_and_read_through_secrets():
    token = new_token()  # core.tokens.new_token, wrapped by the plugin
    assert EXPOSURE.secrets.get(token) == "heartbeat token"
    fresh = "c3" * 32
    record_response("GET", "/api/v1/monitors/7/secrets", 200, [], f'{{"heartbeatToken":"{fresh}"}}')
    assert EXPOSURE.secrets.get(fresh) == "heartbeat token"


@pytest.mark.parametrize(
    ("body", "leaks"),
    [
        ("logging.getLogger('control').info('made %s', new_token())", True),
        ("logging.getLogger('control').info('made a monitor')", False),
    ],
)
def test_a_session_with_a_leak_fails(tmp_path: Path, body: str, leaks: bool):
    (tmp_path / "conftest.py").write_text("pytest_plugins = ['tests.conftest']\n")
    (tmp_path / "test_leak.py").write_text(textwrap.dedent(f"""
        import logging
        from core.tokens import new_token

        def test_it():
            {body}
    """))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         str(tmp_path / "test_leak.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "1 passed" in done.stdout, done.stdout + done.stderr
    if leaks:
        assert done.returncode == 1, done.stdout
        assert "LEAK: heartbeat token" in done.stdout and "in log control" in done.stdout
    else:
        assert done.returncode == 0, done.stdout
        assert "0 hit(s)" in done.stdout
