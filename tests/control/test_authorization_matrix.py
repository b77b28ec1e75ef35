"""Every route of the OpenAPI document against every kind of caller.

Routes come from /api/v1/openapi.json, so a new route is covered the day it is added.
Asserted for each: no token, a malformed one, a revoked one and an expired one get 401;
another organisation's owner gets exactly the bytes of a missing id on object routes;
a viewer is refused every write; and the object is unchanged afterwards. Then every
route x role x scope: refused (403) exactly when the role and the token's one scope do
not both allow what the route needs (NEEDS, the specification, must name every route).
"""

from __future__ import annotations

import re

import pytest

from control.access import ROLES, SCOPES, WILDCARD, effective

from .conftest import Control, body

pytestmark = pytest.mark.security

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
        channel = body(c.post("/channels", json={"type": "email", "name": "ops",
                                                 "config": {"to": "ops@alpha.test"}}))  # fmt: skip
        revoked = body(c.post("/me/tokens", json={"name": "r", "scopes": ["*"]}))
        later = {"name": "e", "scopes": ["*"], "expiresAt": "2999-01-01T00:00:00Z"}
        expiring = body(c.post("/me/tokens", json=later))
        assert c.delete(f"/me/tokens/{revoked['id']}").status_code == 204
        spare = body(c.post("/me/tokens", json={"name": "s", "scopes": ["monitors:read"]}))
        routes = body(c.get("/openapi.json"))["paths"]
    control.expire_token(expiring["id"])
    control.sql(
        "INSERT INTO incidents (org_id, monitor_id, opened_at)"
        " SELECT org_id, id, now() FROM monitors WHERE id = $1", monitor["id"],
    )  # fmt: skip
    with control.client(owner) as c:
        (incident,) = body(c.get("/incidents"))["incidents"]
        page = body(c.post("/status-pages", json={"slug": "alpha", "title": "Alpha",
                                                  "monitorIds": [monitor["id"]]}))  # fmt: skip
    return {
        "owner": owner, "viewer": viewer, "stranger": stranger, "monitor": monitor,
        "channel": channel, "incident": incident, "page": page,
        "revoked": revoked["token"], "expired": expiring["token"], "spare": spare,
        "routes": [(path, method) for path, ops in routes.items() for method in ops],
    }  # fmt: skip


def fill(path: str, world: dict, *, missing: bool = False) -> str:
    values = {"monitor_id": world["monitor"]["id"], "token_id": world["spare"]["id"],
              "channel_id": world["channel"]["id"], "incident_id": world["incident"]["id"],
              "page_id": world["page"]["id"]}  # fmt: skip
    return PARAM.sub(lambda m: "999999999" if missing else str(values[m.group(1)]), path)


def sample_body(method: str, path: str) -> dict | None:
    """A body every write accepts as far as its shape goes (a PATCH of a name or title)."""
    if method not in ("post", "patch"):
        return None
    return {"title": "x"} if "/status-pages" in path else {"name": "x"}


def call(control: Control, token: str | None, method: str, path: str):
    with control.client(token) as c:
        return c.request(
            method.upper(), path.removeprefix("/api/v1"), json=sample_body(method, path)
        )


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
    def snapshot():
        with control.client(world["owner"]) as c:
            objects = [body(c.get(f"/{kind}/{world[kind[:-1]]['id']}"))
                       for kind in ("monitors", "channels", "incidents")]  # fmt: skip
            return [*objects, body(c.get(f"/status-pages/{world['page']['id']}"))]

    before = snapshot()
    for path, method in world["routes"]:
        if "{" not in path:
            continue
        theirs = call(control, world["stranger"], method, fill(path, world))
        missing = call(control, world["stranger"], method, fill(path, world, missing=True))
        assert theirs.status_code == 404, (method, path, theirs.text)
        assert theirs.content == missing.content, (method, path)
    assert snapshot() == before


def test_a_viewer_is_refused_every_write(control, world):
    for path, method in world["routes"]:
        if method not in WRITE_METHODS or path.endswith("/me/tokens"):
            continue  # a viewer may mint read-only tokens for itself
        if "{token_id}" in path:
            continue  # a token id names the caller's own tokens: another user's is missing
        response = call(control, world["viewer"], method, fill(path, world))
        assert response.status_code == 403, (method, path, response.text)


# What each route needs (None: any valid token). The specification the code is held to.
NEEDS = {
    ("get", "/me"): None,
    ("get", "/me/tokens"): None,
    ("post", "/me/tokens"): "tokens:write",
    ("delete", "/me/tokens/{token_id}"): "tokens:write",
    ("get", "/monitors"): "monitors:read",
    ("post", "/monitors"): "monitors:write",
    ("get", "/monitors/{monitor_id}"): "monitors:read",
    ("patch", "/monitors/{monitor_id}"): "monitors:write",
    ("delete", "/monitors/{monitor_id}"): "monitors:write",
    ("post", "/monitors/{monitor_id}/pause"): "monitors:write",
    ("post", "/monitors/{monitor_id}/resume"): "monitors:write",
    ("post", "/monitors/{monitor_id}/rotate-token"): "monitors:write",
    ("post", "/monitors/{monitor_id}/test-alert"): "monitors:write",
    ("get", "/monitors/{monitor_id}/secrets"): "secrets:read",
    ("get", "/monitors/{monitor_id}/events"): "monitors:read",
    ("get", "/monitors/{monitor_id}/uptime"): "monitors:read",
    ("get", "/monitors/{monitor_id}/pings"): "pings:read",
    ("get", "/status-pages"): "status-pages:write",
    ("post", "/status-pages"): "status-pages:write",
    ("get", "/status-pages/{page_id}"): "status-pages:write",
    ("patch", "/status-pages/{page_id}"): "status-pages:write",
    ("delete", "/status-pages/{page_id}"): "status-pages:write",
    ("get", "/channels"): "channels:read",
    ("post", "/channels"): "channels:write",
    ("get", "/channels/{channel_id}"): "channels:read",
    ("patch", "/channels/{channel_id}"): "channels:write",
    ("delete", "/channels/{channel_id}"): "channels:write",
    ("get", "/incidents"): "incidents:read",
    ("get", "/incidents/{incident_id}"): "incidents:read",
    ("get", "/audit-log"): "audit:read",
}


def test_the_specification_names_every_route(world):
    documented = {(m, p.removeprefix("/api/v1")) for p, m in world["routes"]}
    documented.discard(("get", "/openapi.json"))
    assert documented == set(NEEDS)


def test_every_route_role_and_scope(control, world):
    """Allowed calls aim at missing ids (404) or send an invalid body (422), so nothing
    changes; the secrets read aims at the real monitor and is audited every time."""

    def secret_reads() -> int:
        with control.client(world["owner"]) as c:
            entries = body(c.get("/audit-log?limit=500"))["entries"]
        assert len(entries) < 500
        return sum(e["action"] == "READ_MONITOR_SECRETS" for e in entries)

    reads_before = secret_reads()
    secrets_calls = 0
    checked = 0
    for role in ROLES:
        for scope in (*SCOPES, WILDCARD):
            token = control.token("alpha", f"{role}@matrix.test", role, [scope])
            with control.client(token) as c:
                for (method, path), needed in NEEDS.items():
                    real = path.endswith("/secrets")
                    target = fill("/api/v1" + path, world, missing=not real)
                    response = c.request(method.upper(), target.removeprefix("/api/v1"),
                                         json=sample_body(method, path))  # fmt: skip
                    allowed = needed is None or needed in effective(role, [scope])
                    if allowed:
                        assert response.status_code not in (401, 403), (role, scope, method, path)
                    else:
                        assert response.status_code == 403, (
                            role,
                            scope,
                            method,
                            path,
                            response.text,
                        )
                        assert body(response)["error"]["code"] == "forbidden"
                    secrets_calls += real
                    checked += 1
    # Secrets: owners and admins holding secrets:read (or *), no one else.
    for role in ROLES:
        for scope in (*SCOPES, WILDCARD):
            expected = role in ("owner", "admin") and scope in ("secrets:read", WILDCARD)
            assert ("secrets:read" in effective(role, [scope])) == expected, (role, scope)
    print(f"\n{checked} route x role x scope calls checked")
    assert secret_reads() - reads_before == secrets_calls == len(ROLES) * (len(SCOPES) + 1)
