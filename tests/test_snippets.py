"""The API docs' snippets, as written, against `lastseen serve` with BASE pointed at it:
the curl commands (mint a scoped token, create, read the secret, POST and HEAD pings),
the Python snippet, and the TypeScript snippet compiled with tsc and run on Node's fetch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import fresh_database
from .support.serving import Served, serving, wait_until

SNIPPETS = Path(__file__).parent / "snippets"
DOCS_BASE = "https://api.24observe.com/api/v1"


@pytest.fixture(scope="module")
def served(postgres_url: str, tmp_path_factory) -> Iterator[Served]:
    for dsn in fresh_database(postgres_url):
        with serving(dsn, tmp_path_factory.mktemp("serve")) as s:
            yield s


def pointed(source: str, base: str) -> str:
    """The snippet with BASE pointed at lastseen: the one change the docs invite."""
    line = f"BASE = '{DOCS_BASE}'"
    assert source.count(line) == 1
    return source.replace(line, f"BASE = '{base}'")


def curl(*args: str) -> str:
    done = subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_curl_commands(served):
    minted = json.loads(curl(
        "-X", "POST", f"{served.api}/me/tokens",
        "-H", f"Authorization: Bearer {served.pat}",
        "-H", "Content-Type: application/json",
        "-d", '{\n"name": "aeoniti-heartbeat-bootstrap",\n"scopes": ["monitors:write", "secrets:read"]\n}',
    ))  # fmt: skip
    scoped = minted["token"]
    created = json.loads(curl(
        "-X", "POST", f"{served.api}/monitors",
        "-H", f"Authorization: Bearer {scoped}",
        "-H", "Content-Type: application/json",
        "-d", '{\n"name": "Aeoniti nightly job",\n"url": "https://aeoniti.example/heartbeat-source",\n'
              '"type": "heartbeat",\n"intervalSec": 300,\n"timeoutMs": 10000,\n'
              '"heartbeatGraceSec": 60,\n"alertEmail": "[email protected]"\n}',
    ))  # fmt: skip
    assert created["heartbeatToken"].startswith('{"v":2,"kid":"default"')
    secret = json.loads(curl(f"{served.api}/monitors/{created['id']}/secrets",
                             "-H", f"Authorization: Bearer {scoped}"))  # fmt: skip
    assert len(secret["heartbeatToken"]) == 64
    url = f"{served.api}/heartbeats/{secret['heartbeatToken']}"
    assert secret["heartbeatUrl"] == url
    wait_until(
        lambda: curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", url) == "204", 10
    )
    curl("-fsS", "-X", "POST", url)
    assert curl("-fsS", "--head", url).startswith("HTTP/1.1 204")


def test_the_python_snippet(served, tmp_path):
    script = tmp_path / "provision.py"
    script.write_text(pointed((SNIPPETS / "provision.py").read_text(), served.api))
    env = {**os.environ, "OBSERVE24_PAT": served.pat, "OPS_EMAIL": "ops@example.test"}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(f"{served.api}/heartbeats/")


def test_the_typescript_snippet(served, tmp_path):
    tsc = SNIPPETS / "node_modules" / ".bin" / "tsc"
    assert shutil.which("node"), "Node.js is needed (apt-get install nodejs)"
    assert tsc.exists(), "run `make install` (npm ci in tests/snippets) first"
    source = tmp_path / "provision.ts"
    source.write_text(pointed((SNIPPETS / "provision.ts").read_text(), served.api))
    compiled = subprocess.run(
        [str(tsc), "--target", "ES2022", "--module", "commonjs", "--lib", "ES2022,DOM",
         "--types", "node", "--typeRoots", str(SNIPPETS / "node_modules" / "@types"),
         "--strict", "--skipLibCheck", "--outDir", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    env = {**os.environ, "OBSERVE24_PAT": served.pat, "OPS_EMAIL": "ops@example.test"}
    done = subprocess.run(["node", str(tmp_path / "provision.js")], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heartbeatUrl"].startswith(f"{served.api}/heartbeats/")
