"""docs/api.md describes every route of the OpenAPI document, under a heading that names
its method and path exactly as the document does."""

from __future__ import annotations

import re
from pathlib import Path

from control.app import create_app
from control.crypto import Keyring

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_every_route_in_the_openapi_document_is_in_docs_api_md():
    document = create_app("postgresql://unused/unused", Keyring.generate()).openapi()
    routes = {
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert len(routes) > 20  # the document is the real one
    text = DOCS.read_text()
    headed = set(re.findall(r"^### `([A-Z]+ /api/v1/\S+)`", text, re.MULTILINE))
    assert sorted(routes - headed) == []  # every route described
    assert sorted(headed - routes) == []  # and no route that is not there


def test_the_documented_signature_check_accepts_our_signature_and_nothing_else():
    """The Python in docs/api.md, run as written, against what the webhook channel signs."""
    import time

    from notifier.webhook import signature

    [code] = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    namespace: dict = {}
    exec(code, namespace)  # the docs' own snippet
    verify = namespace["verify"]
    secret, body, now = "whsec_" + "k" * 43, b'{"event":"test"}', int(time.time())
    header = signature(secret, now, body)
    assert verify(secret, header, body)
    assert not verify(secret.removeprefix("whsec_"), header, body)  # the prefix is the key's
    assert not verify(secret, header, body + b" ")
    assert not verify(secret, signature(secret, now - 3600, body), body)  # too old
