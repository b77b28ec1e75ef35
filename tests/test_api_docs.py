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
