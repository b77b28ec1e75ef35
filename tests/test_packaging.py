"""`python -m build` makes an sdist and, from it, a wheel with the Cython extensions
compiled; the wheel installs into a bare venv and runs. A minute of compiling: with
LASTSEEN_SLOW=1 (make test-faults)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_the_sdist_and_the_wheel_build_and_the_wheel_runs(tmp_path: Path):
    source = tmp_path / "src"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(source)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "build"], check=True)
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    (sdist,) = (tmp_path / "dist").glob("lastseen-*.tar.gz")
    (wheel,) = (tmp_path / "dist").glob("lastseen-*.whl")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"LICENSE", "setup.py", "core/_deadline.pyx", "ingest/_fastpath.pyx"} <= names
    with zipfile.ZipFile(wheel) as whl:
        built = whl.namelist()
    assert any(n.startswith("core/_deadline.cpython-") and n.endswith(".so") for n in built)
    assert "control/web/templates/status.html" in built
    migrations = sorted(p.name for p in (ROOT / "core" / "migrations").glob("*.sql"))
    assert {f"core/migrations/{m}" for m in migrations} <= set(built)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
                   check=True, timeout=900)  # fmt: skip
    done = subprocess.run(
        [str(venv / "bin" / "lastseen"), "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("lastseen ")
    probe = "import core._deadline, ingest._fastpath; print(core._deadline.STATE_NAMES[-1])"
    done = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.strip() == "unknown"
