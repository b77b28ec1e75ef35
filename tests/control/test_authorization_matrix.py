"""Every route of the OpenAPI document against every kind of caller.

Routes come from /api/v1/openapi.json, so a new route is covered the day it is added.
Asserted for each: no token, a malformed one, a revoked one and an expired one get 401;
another organisation's owner gets exactly the bytes of a missing id on object routes;
a viewer is refused every write; and the object is unchanged afterwards.
"""

from __future__ import annotations

import re

import pytest

from .conftest import Control, body

WRITE_METHODS = {"post", "patch", "delete", "put"}
PARAM = re.compile(r"\{(\w+)\}")


@pytest.fixture(scope="module")
def control_env() -> dict[str, str]:
    # This module fails authentication on purpose, far more than 20 times.
    return {"LASTSEEN_AUTH_FAILURES_PER_HOUR": "100000"}


@pytest.fixture(scope="module")
def world(control: Control) -> dict:
    owner = control.bootstrap("alpha", "owner@alpha.test", "owner")
    viewer = control.bootstrap("alpha", "viewer@alpha.test", "viewer")
    stranger = control.bootstrap("beta", "owner@beta.test", "owner")
    with control.client(owner) as c:
        monitor = body(c.post("/monitors", json={"name": "m", "url": "u", "intervalSec": 60}))
        revoked = body(c.post("/me/tokens", json={"name": "r", "scopes": ["*"]}))
        later = {"name": "e", "scopes": ["*"], "expiresAt": "2999-01-01T00:00:00Z"}
        expiring = body(c.post("/me/tokens", json=later))
        assert c.delete(f"/me/tokens/{revoked['id']}").status_code == 204
        spare = body(c.post("/me/tokens", json={"name": "s", "scopes": ["monitors:read"]}))
        routes = body(c.get("/openapi.json"))["paths"]
    control.expire_token(expiring["id"])
    return {
        "owner": owner, "viewer": viewer, "stranger": stranger, "monitor": monitor,
        "revoked": revoked["token"], "expired": expiring["token"], "spare": spare,
        "routes": [(path, method) for path, ops in routes.items() for method in ops],
    }  # fmt: skip


def fill(path: str, world: dict, *, missing: bool = False) -> str:
    values = {"monitor_id": world["monitor"]["id"], "token_id": world["spare"]["id"]}
    return PARAM.sub(lambda m: "999999999" if missing else str(values[m.group(1)]), path)


def call(control: Control, token: str | None, method: str, path: str):
    with control.client(token) as c:
        return c.request(method.upper(), path.removeprefix("/api/v1"), json={"name": "x"}
                         if method in ("post", "patch") else None)  # fmt: skip


def test_the_document_lists_the_routes_we_test(world):
    assert len(world["routes"]) >= 12


def test_every_route_refuses_missing_malformed_revoked_and_expired_tokens(control, world):
    for path, method in world["routes"]:
        target = fill(path, world)
        for token in [None, "obs_nope", world["revoked"], world["expired"]]:
            response = call(control, token, method, target)
            assert response.status_code == 401, (method, path, token and token[:8])
            assert body(response)["error"]["code"] == "unauthenticated"


def test_another_organisation_sees_the_bytes_of_a_missing_object(control, world):
    before = body(control.client(world["owner"]).get(f"/monitors/{world['monitor']['id']}"))
    for path, method in world["routes"]:
        if "{" not in path:
            continue
        theirs = call(control, world["stranger"], method, fill(path, world))
        missing = call(control, world["stranger"], method, fill(path, world, missing=True))
        assert theirs.status_code == 404, (method, path, theirs.text)
        assert theirs.content == missing.content, (method, path)
    after = body(control.client(world["owner"]).get(f"/monitors/{world['monitor']['id']}"))
    assert after == before


def test_a_viewer_is_refused_every_write(control, world):
    for path, method in world["routes"]:
        if method not in WRITE_METHODS or path.endswith("/me/tokens"):
            continue  # a viewer may mint read-only tokens for itself
        if "{token_id}" in path:
            continue  # a token id names the caller's own tokens: another user's is missing
        response = call(control, world["viewer"], method, fill(path, world))
        assert response.status_code == 403, (method, path, response.text)
