"""schemathesis against the OpenAPI document, as an owner, every phase (stateful too):
no server errors, and no answer that contradicts the document.

Not checked: "schema-valid request rejected", for the rules a JSON schema cannot state
(a channel's config per type, an expiry in the future, text PostgreSQL cannot store);
each is refused with a 422 that names the field. `LASTSEEN_SLOW=1` runs 500 examples per
operation instead of 25; `LASTSEEN_SCHEMATHESIS_SEED` replays a run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Control

pytestmark = pytest.mark.security

CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance", "response_headers_conformance", "negative_data_rejection",
    "missing_required_header", "unsupported_method",
])  # fmt: skip


@pytest.fixture(scope="module")
def control_env() -> dict[str, str]:
    return {"LASTSEEN_AUTH_FAILURES_PER_HOUR": "1000000"}


def test_the_api_holds_to_its_openapi_document(control: Control, tmp_path: Path):
    owner = control.bootstrap("fuzzed", "owner@fuzzed.test", "owner")
    examples = "500" if os.environ.get("LASTSEEN_SLOW") else "25"
    seed = os.environ.get("LASTSEEN_SCHEMATHESIS_SEED", "20261126")
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{control.base}/openapi.json",
         "--header", f"Authorization: Bearer {owner}", "--checks", CHECKS,
         "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", examples,
         "--seed", seed, "--generation-allow-x00", "false",
         # Revoking the token the run itself uses would end the run.
         "--exclude-path-regex", r"/me/tokens/\{token_id\}",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    summary = done.stdout[done.stdout.rfind("SUMMARY") :]
    print(summary)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
