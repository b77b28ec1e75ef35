"""The systemd units in deploy/systemd pass `systemd-analyze verify` (every directive
known, every command executable) with the paths of this checkout, and the example
environment file holds only variables lastseen reads (README, Configuration)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import READ_BY, Settings

UNITS = Path(__file__).resolve().parents[1] / "deploy" / "systemd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_units_verify_cleanly(tmp_path: Path):
    lastseen = Path(sys.executable).parent / "lastseen"
    env = tmp_path / "lastseen.env"
    shutil.copy(UNITS / "lastseen.env.example", env)
    for unit in UNITS.iterdir():
        if unit.suffix in (".service", ".target"):
            text = unit.read_text().replace("/opt/lastseen/.venv/bin/lastseen", str(lastseen))
            (tmp_path / unit.name).write_text(text.replace("/etc/lastseen/lastseen.env", str(env)))
    names = ["lastseen.target", "lastseen-migrate.service", "lastseen-control.service",
             "lastseen-worker.service", "lastseen-ingest@9108.service"]  # fmt: skip
    done = subprocess.run(
        ["systemd-analyze", "verify", *(f"./{n}" for n in names)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_example_environment_sets_only_what_lastseen_reads():
    text = (UNITS / "lastseen.env.example").read_text()
    given = dict(re.findall(r"^(LASTSEEN_[A-Z_]+)=(.*)$", text, re.MULTILINE))
    assert given and set(given) <= set(READ_BY), set(given) - set(READ_BY)
    Settings.from_env(given)  # and every value it shows is allowed
