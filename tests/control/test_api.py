"""The control API over real HTTP: PATs, monitors, and the audited secrets read."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import pytest

from core import seenlog
from core.tokens import digest

from ..support.aio import run
from .conftest import Control, body, public


def audit_rows(dsn: str) -> list[tuple]:
    async def go() -> list[tuple]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT action, outcome, target_id FROM audit_log ORDER BY id")
            return [tuple(r) for r in rows]
        finally:
            await conn.close()

    return run(go())


@pytest.fixture(scope="module")
def owner(control: Control) -> str:
    return control.bootstrap("acme", "owner@acme.test", "owner")


def test_me_names_the_caller(control, owner):
    with control.client(owner) as c:
        me = body(c.get("/me"))
    assert me["user"]["email"] == "owner@acme.test" and me["user"]["role"] == "owner"
    assert me["org"] == {"id": me["org"]["id"], "name": "acme", "plan": "business"}
    assert me["token"]["scopes"] == ["*"]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer nope", "Bearer obs_" + "a" * 49, "Basic abc"],
    ids=["missing", "malformed", "bad-checksum", "not-bearer"],
)
def test_missing_or_bad_tokens_get_401_in_the_error_shape(control, header):
    with control.client(None) as c:
        response = c.get("/me", headers={"authorization": header} if header else {})
    assert response.status_code == 401
    assert body(response)["error"]["code"] == "unauthenticated"


def test_the_docs_flow_mint_a_scoped_token_create_a_monitor_read_its_secret(control, owner):
    with control.client(owner) as c:
        minted = c.post("/me/tokens", json={
            "name": "aeoniti-heartbeat-bootstrap",
            "scopes": ["monitors:write", "secrets:read"],
        })  # fmt: skip
    assert minted.status_code == 201
    scoped = body(minted)["token"]
    with control.client(scoped) as c:
        created = c.post("/monitors", json={
            "name": "Aeoniti nightly job",
            "url": "https://aeoniti.example/heartbeat-source",
            "type": "heartbeat",
            "intervalSec": 300,
            "timeoutMs": 10000,
            "heartbeatGraceSec": 60,
            "alertEmail": "[email protected]",
        })  # fmt: skip
        assert created.status_code == 201, created.text
        monitor = body(created)
        assert monitor["heartbeatToken"].startswith('{"v":2,"kid":"default",')
        assert (monitor["state"], monitor["alertThreshold"]) == ("pending", 1)
        secret = c.get(f"/monitors/{monitor['id']}/secrets")
    assert secret.status_code == 200
    token = body(secret)["heartbeatToken"]
    assert len(token) == 64 and token not in monitor["heartbeatToken"]
    assert body(secret)["heartbeatUrl"].endswith(f"/api/v1/heartbeats/{token}")

    async def stored() -> bytes:
        conn = await asyncpg.connect(control.dsn)
        try:
            return await conn.fetchval(
                "SELECT token_digest FROM monitors WHERE id = $1", monitor["id"]
            )
        finally:
            await conn.close()

    assert run(stored()) == digest(token)
    assert ("READ_MONITOR_SECRETS", "allowed", monitor["id"]) in audit_rows(control.dsn)


def test_a_member_is_refused_the_secret_and_the_refusal_is_audited(control, owner):
    member = control.bootstrap("acme", "member@acme.test", "member")
    with control.client(owner) as c:
        monitor = body(c.post("/monitors", json={"name": "m", "url": "internal://m",
                                                   "intervalSec": 60}))  # fmt: skip
    before = audit_rows(control.dsn)
    with control.client(member) as c:
        refused = c.get(f"/monitors/{monitor['id']}/secrets")
    assert refused.status_code == 403
    assert "heartbeatToken" not in refused.text
    assert audit_rows(control.dsn)[len(before) :] == [
        ("READ_MONITOR_SECRETS", "denied", monitor["id"])
    ]


def test_another_organisations_monitor_reads_exactly_like_a_missing_one(control, owner):
    other = control.bootstrap("globex", "owner@globex.test", "owner")
    with control.client(owner) as c:
        mine = body(c.post("/monitors", json={"name": "m", "url": "u", "intervalSec": 60}))
    with control.client(other) as c:
        theirs = c.get(f"/monitors/{mine['id']}")
        missing = c.get("/monitors/999999999")
        secret = c.get(f"/monitors/{mine['id']}/secrets")
    assert theirs.status_code == missing.status_code == secret.status_code == 404
    assert theirs.content == missing.content == secret.content


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "m", "url": "u", "intervalSec": 45}, "intervalSec"),
        ({"name": "m", "url": "u", "intervalSec": 60, "type": "http"}, "type"),
        ({"name": "m", "url": "u", "intervalSec": 60, "alertThreshold": 0}, "alertThreshold"),
        ({"name": "m", "url": "u", "intervalSec": 60, "colour": "red"}, "colour"),
        ({"url": "u", "intervalSec": 60}, "name"),
        ({"name": "m", "url": "u", "intervalSec": 60, "recoveryThreshold": 0}, "recoveryThreshold"),
        (
            {"name": "m", "url": "u", "intervalSec": 60, "recoveryThreshold": 101},
            "recoveryThreshold",
        ),
    ],
    ids=[
        "interval",
        "type",
        "threshold",
        "unknown-field",
        "missing-name",
        "recovery-0",
        "recovery-101",
    ],
)
def test_invalid_monitors_get_422_naming_the_field(control, owner, payload, field):
    with control.client(owner) as c:
        response = c.post("/monitors", json=payload)
    assert response.status_code == 422
    assert body(response)["error"]["field"] == field


def test_a_token_cannot_mint_more_than_it_has_and_revocation_is_immediate(control, owner):
    with control.client(owner) as c:
        narrow = body(c.post("/me/tokens", json={"name": "r", "scopes": ["monitors:read"]}))
    with control.client(narrow["token"]) as c:
        assert c.post("/me/tokens", json={"name": "x", "scopes": ["*"]}).status_code == 403
        assert c.get("/monitors").status_code == 200
        assert c.post("/monitors", json={"name": "m", "url": "u",
                                         "intervalSec": 60}).status_code == 403  # fmt: skip
    with control.client(owner) as c:
        listed = body(c.get("/me/tokens"))["tokens"]
        assert all("token" not in t for t in listed)
        assert c.delete(f"/me/tokens/{narrow['id']}").status_code == 204
    with control.client(narrow["token"]) as c:
        assert c.get("/monitors").status_code == 401


def new_monitor(control: Control, token: str, **extra) -> dict:
    with control.client(token) as c:
        response = c.post("/monitors", json={"name": "m", "url": "u", "intervalSec": 60, **extra})
    assert response.status_code == 201, response.text
    return body(response)


def test_patch_pause_resume_rotate_and_delete(control, owner):
    monitor = new_monitor(control, owner)
    path = f"/monitors/{monitor['id']}"
    with control.client(owner) as c:
        assert monitor["recoveryThreshold"] == 1  # the first ping resolves, by default
        patched = body(c.patch(path, json={"heartbeatGraceSec": 5, "alertThreshold": 3}))
        assert (patched["heartbeatGraceSec"], patched["alertThreshold"]) == (5, 3)
        assert body(c.patch(path, json={"recoveryThreshold": 3}))["recoveryThreshold"] == 3
        nulled = c.patch(path, json={"recoveryThreshold": None})
        assert nulled.status_code == 422
        # Named as the API spells it, not as the code does (recovery_threshold).
        assert body(nulled)["error"] == {
            "code": "invalid", "field": "recoveryThreshold",
            "message": "recoveryThreshold cannot be null",
        }  # fmt: skip
        grace = body(c.patch(path, json={"heartbeatGraceSec": None}))["error"]
        assert (grace["field"], grace["message"]) == (
            "heartbeatGraceSec", "heartbeatGraceSec cannot be null",
        )  # fmt: skip
        assert c.patch(path, json={"intervalSec": 7}).status_code == 422
        assert c.patch(path, json={"name": None}).status_code == 422
        assert body(c.post(f"{path}/pause"))["paused"] is True
        assert body(c.post(f"{path}/resume"))["paused"] is False
        before = body(c.get(f"{path}/secrets"))["heartbeatToken"]
        rotated = body(c.post(f"{path}/rotate-token"))
        assert rotated["heartbeatToken"] != monitor["heartbeatToken"]
        after = body(c.get(f"{path}/secrets"))["heartbeatToken"]
        assert after != before and len(after) == 64
        assert c.delete(path).status_code == 204
        assert c.get(path).status_code == 404
        assert c.delete(path).status_code == 404
        actions = [e["action"] for e in body(c.get("/audit-log"))["entries"]]
    assert actions[:7] == [
        "DELETE_MONITOR", "READ_MONITOR_SECRETS", "ROTATE_MONITOR_TOKEN", "READ_MONITOR_SECRETS",
        "RESUME_MONITOR", "PAUSE_MONITOR", "UPDATE_MONITOR",
    ]  # fmt: skip


def test_changes_to_another_organisations_monitor_read_like_missing_and_change_nothing(
    control, owner
):
    mine = new_monitor(control, owner)
    other = control.bootstrap("initech", "owner@initech.test", "owner")
    with control.client(other) as c:
        missing = c.patch("/monitors/999999999", json={"name": "x"})
        for response in [
            c.patch(f"/monitors/{mine['id']}", json={"name": "x"}),
            c.post(f"/monitors/{mine['id']}/pause"),
            c.post(f"/monitors/{mine['id']}/rotate-token"),
            c.delete(f"/monitors/{mine['id']}"),
        ]:
            assert response.status_code == 404
            assert response.content == missing.content
    with control.client(owner) as c:
        assert body(c.get(f"/monitors/{mine['id']}")) == {**mine, "incidents": []}


def test_the_audit_log_is_for_owners_and_admins(control, owner):
    viewer = control.bootstrap("acme", "viewer@acme.test", "viewer")
    with control.client(viewer) as c:
        assert c.get("/audit-log").status_code == 403
        assert c.get("/monitors").status_code == 200
        assert c.post("/monitors", json={"name": "m", "url": "u",
                                         "intervalSec": 60}).status_code == 403  # fmt: skip


def test_monitors_and_the_audit_log_page_without_gaps_or_repeats(control):
    token = control.bootstrap("paging", "owner@paging.test", "owner")
    created = [new_monitor(control, token)["id"] for _ in range(5)]
    seen: list[int] = []
    after = 0
    with control.client(token) as c:
        while after is not None:
            page = body(c.get("/monitors", params={"limit": 2, "after": after}))
            seen += [m["id"] for m in page["monitors"]]
            after = page["nextAfter"]
        entries: list[int] = []
        before = None
        while True:
            params = {"limit": 2, **({"before": before} if before else {})}
            log = body(c.get("/audit-log", params=params))
            entries += [e["id"] for e in log["entries"]]
            before = log["nextBefore"]
            if before is None:
                break
    assert seen == created
    assert len(entries) == len(set(entries)) == 5 and entries == sorted(entries, reverse=True)


def test_an_expired_token_is_refused_like_an_unknown_one(control, owner):
    with control.client(owner) as c:
        past = c.post("/me/tokens", json={"name": "p", "scopes": ["monitors:read"],
                                          "expiresAt": "2020-01-01T00:00:00Z"})  # fmt: skip
        assert past.status_code == 422 and body(past)["error"]["field"] == "expiresAt"
        minted = body(c.post("/me/tokens", json={"name": "e", "scopes": ["monitors:read"],
                                                 "expiresAt": "2999-01-01T00:00:00Z"}))  # fmt: skip
    with control.client(minted["token"]) as c:
        assert c.get("/monitors").status_code == 200
    control.expire_token(minted["id"])
    with control.client(minted["token"]) as c:
        refused = c.get("/monitors")
    assert refused.status_code == 401


def test_last_used_at_is_written_at_most_once_a_minute(control, owner):
    with control.client(owner) as c:
        minted = body(c.post("/me/tokens", json={"name": "u", "scopes": ["monitors:read"]}))

    def last_used():
        with control.client(owner) as c:
            (row,) = [t for t in body(c.get("/me/tokens"))["tokens"] if t["id"] == minted["id"]]
        return row["lastUsedAt"]

    assert last_used() is None
    with control.client(minted["token"]) as c:
        assert c.get("/monitors").status_code == 200
        first = last_used()
        assert first is not None
        assert c.get("/monitors").status_code == 200
        assert last_used() == first  # within the minute: not written again
        control.sql(
            "UPDATE access_tokens SET last_used_at = last_used_at - interval '61 seconds'"
            " WHERE id = $1", minted["id"],
        )  # fmt: skip
        moved = last_used()
        assert c.get("/monitors").status_code == 200
    assert last_used() > moved  # a minute on: written again


def test_an_organisations_plan_sets_the_shortest_interval(control, owner):
    org = body(control.client(owner).get("/me"))["org"]["name"]
    done = subprocess.run(
        [sys.executable, "-m", "lastseen", "org", "set-plan", org, "free"],
        env=control.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{org}: plan free (shortest interval 300 s)"
    try:
        with control.client(owner) as c:
            assert body(c.get("/me"))["org"]["plan"] == "free"
            refused = c.post("/monitors", json={"name": "n", "url": "u", "intervalSec": 60})
            assert refused.status_code == 422
            assert body(refused)["error"] == {
                "code": "invalid", "field": "intervalSec",
                "message": "intervalSec must be one of 300, 900, 1800, 3600 on the free plan",
            }  # fmt: skip
            assert (
                c.post("/monitors", json={"name": "n", "url": "u", "intervalSec": 300}).status_code
                == 201
            )
            # The floor holds for a period too.
            short = c.post("/monitors", json={"name": "n", "url": "u", "periodSec": 120})
            assert (
                body(short)["error"]["message"] == "periodSec must be at least 300 on the free plan"
            )
            long = c.post("/monitors", json={"name": "n", "url": "u", "periodSec": 7200})
            assert long.status_code == 201
            # And for a schedule: the closest two of its runs.
            often = c.post("/monitors", json={"name": "n", "url": "u", "schedule": "*/2 * * * *"})
            assert body(often)["error"]["message"] == (
                "schedule runs 120 s apart at its closest; the free plan's shortest period is 300 s"
            )
            fine = c.post("/monitors", json={"name": "n", "url": "u", "schedule": "*/5 * * * *"})
            assert fine.status_code == 201
    finally:
        control.sql("UPDATE orgs SET plan = 'business' WHERE name = $1", org)
    unknown = subprocess.run(
        [sys.executable, "-m", "lastseen", "org", "set-plan", "no-such-org", "pro"],
        env=control.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert unknown.returncode == 2 and "no organisation named 'no-such-org'" in unknown.stderr


def test_a_pg_dump_holds_no_heartbeat_token_and_no_pat(control, owner):
    import subprocess
    from urllib.parse import unquote, urlsplit

    from core.pg import find_bin_dir

    monitor = new_monitor(control, owner)
    with control.client(owner) as c:
        token = body(c.get(f"/monitors/{monitor['id']}/secrets"))["heartbeatToken"]
        minted = body(c.post("/me/tokens", json={"name": "d", "scopes": ["monitors:read"]}))
    url = urlsplit(control.dsn)
    env = {**os.environ, "PGPASSWORD": unquote(url.password or "")}
    dump = subprocess.run(
        [str(find_bin_dir() / "pg_dump"), "-h", url.hostname, "-p", str(url.port),
         "-U", url.username, url.path.lstrip("/")],
        capture_output=True, text=True, check=True, timeout=60, env=env,
    ).stdout  # fmt: skip
    assert "READ_MONITOR_SECRETS" in dump  # the dump is real and has the data
    for secret in (token, owner, minted["token"]):
        assert secret not in dump


def test_twenty_failed_authentications_from_one_address_get_429(control, owner):
    # Runs last in this module: this client address stays limited for an hour.
    with control.client("obs_" + "x" * 49) as c:
        statuses = [c.get("/me").status_code for _ in range(25)]
    assert statuses.count(401) <= 20 and statuses[-1] == 429
    # Another bad token from that address: refused with 429 at once.
    with control.client("obs_" + "y" * 49) as c:
        assert c.get("/me").status_code == 429
    # A valid token is never refused for failures that are not its own (issue 16, item 5:
    # a colleague's stale tab with a revoked token on the same network).
    with control.client(owner) as c:
        assert c.get("/me").status_code == 200


def _value(control: Control, query: str, *args: object) -> int:
    async def go() -> int:
        conn = await asyncpg.connect(control.dsn)
        try:
            return int(await conn.fetchval(query, *args))
        finally:
            await conn.close()

    return run(go())


def test_last_seen_at_is_the_later_of_the_state_and_the_seen_log_and_survives_a_rotation(
    control, owner
):
    """An up monitor's pings reach the database in the seen log (core/seenlog.py), not
    in monitor_state: the API reads both. A new token may move the monitor to another
    shard, whose sections lack it: its time is kept in monitor_state first."""
    monitor = new_monitor(control, owner)
    path = f"/monitors/{monitor['id']}"
    control.sql(
        "UPDATE monitor_state SET state = 'up', last_seen_at = to_timestamp(1800000000.5)"
        " WHERE monitor_id = $1",
        monitor["id"],
    )
    shard = _value(control, "SELECT shard FROM monitors WHERE id = $1", monitor["id"])
    base_ms = 1_800_000_100_000
    packed = seenlog.pack([(shard, False, [monitor["id"]], [1800000042.25])], base_ms)
    control.sql(seenlog.WRITE, base_ms, *packed)
    with control.client(owner) as c:
        assert body(c.get(path))["lastSeenAt"] == "2027-01-15T08:00:42.250000+00:00"
        listed = body(c.get("/monitors?limit=500"))["monitors"]
        assert [m["lastSeenAt"] for m in listed if m["id"] == monitor["id"]] == [
            "2027-01-15T08:00:42.250000+00:00"
        ]
        rotated = body(c.post(f"{path}/rotate-token"))
        assert rotated["lastSeenAt"] == "2027-01-15T08:00:42.250000+00:00"
        control.sql("DELETE FROM seen_log")
        assert body(c.get(path))["lastSeenAt"] == "2027-01-15T08:00:42.250000+00:00"
        # An older time in the log changes nothing.
        packed = seenlog.pack([(shard, False, [monitor["id"]], [1800000001.0])], base_ms)
        control.sql(seenlog.WRITE, base_ms, *packed)
        assert body(c.get(path))["lastSeenAt"] == "2027-01-15T08:00:42.250000+00:00"


def test_misses_go_on_counting_while_the_incident_is_open(control, owner):
    """The API showed `misses: 1` after 4.5 minutes down on a 30 s monitor: the ingest
    stops counting when the incident opens. The API counts on from the deadline first
    missed: one then, one more each interval."""
    monitor = new_monitor(control, owner, intervalSec=30)
    control.sql(
        "UPDATE monitor_state SET state = 'down', misses = 1, incident_open = true,"
        " last_seen_at = now() - interval '300 seconds' WHERE monitor_id = $1",
        monitor["id"],
    )
    control.sql(
        "INSERT INTO incidents (org_id, monitor_id, opened_at, last_ping_at, expected_at)"
        " SELECT org_id, id, now() - interval '270 seconds', now() - interval '300 seconds',"
        " now() - interval '270 seconds' FROM monitors WHERE id = $1",
        monitor["id"],
    )
    with control.client(owner) as c:
        got = body(c.get(f"/monitors/{monitor['id']}"))
        assert (got["state"], got["misses"]) == ("down", 10)  # 1 + 270 // 30
        assert got["incidents"][0]["expectedAt"] is not None
        control.sql("UPDATE incidents SET resolved_at = now() WHERE monitor_id = $1", monitor["id"])
        control.sql("UPDATE monitor_state SET state = 'up', misses = 0 WHERE monitor_id = $1",
                    monitor["id"])  # fmt: skip
        assert body(c.get(f"/monitors/{monitor['id']}"))["misses"] == 0


def test_a_channel_that_alerts_could_not_reach_is_saved_with_a_warning(control, owner):
    """A webhook to a private address was accepted silently and failed only at the first
    alert ("blocked: ... is not a public address"). It is still saved (an operator may
    allow private targets later), with a warning naming the variable; so is a host that
    does not resolve. A public address gets none."""
    with control.client(owner) as c:

        def create(url: str) -> dict:
            response = c.post(
                "/channels", json={"type": "webhook", "name": "w", "config": {"url": url}}
            )
            assert response.status_code == 201, response.text
            return body(response)

        [warning] = create("http://127.0.0.1:9/hook")["warnings"]
        assert warning["field"] == "config.url"
        assert "127.0.0.1 is not a public address" in warning["message"]
        assert "LASTSEEN_ALLOW_PRIVATE_TARGETS=1" in warning["message"]
        [warning] = create("http://lastseen-test.invalid/hook")["warnings"]
        assert "does not resolve" in warning["message"]
        public = create("https://93.184.216.34/hook")
        assert "warnings" not in public
        patched = c.patch(f"/channels/{public['id']}", json={"config": {"url": "http://10.1.2.3/"}})
        assert "10.1.2.3 is not a public address" in body(patched)["warnings"][0]["message"]


def test_a_weekly_job_gets_a_period_beyond_an_hour(control, owner):
    """`intervalSec` is one of the hosted service's values (30 s to 1 h); `periodSec`, our
    extension, is any whole number of seconds from 60 to 365 days (never both)."""
    week = 7 * 86_400
    with control.client(owner) as c:
        weekly = body(c.post("/monitors", json={"name": "w", "url": "u", "periodSec": week}))
        assert (weekly["periodSec"], weekly["intervalSec"]) == (week, week)
        path = f"/monitors/{weekly['id']}"
        assert body(c.patch(path, json={"periodSec": 365 * 86_400}))["periodSec"] == 31_536_000
        assert body(c.patch(path, json={"intervalSec": 300}))["periodSec"] == 300

        def refused(payload: dict, where: str) -> str:
            response = c.post("/monitors", json={"name": "w", "url": "u", **payload})
            assert response.status_code == 422, response.text
            assert body(response)["error"]["field"] == where
            return body(response)["error"]["message"]

        assert "not both" in refused({"intervalSec": 60, "periodSec": 600}, "periodSec")
        assert "or periodSec" in refused({}, "intervalSec")
        refused({"periodSec": 59}, "periodSec")
        refused({"periodSec": 365 * 86_400 + 1}, "periodSec")
        refused({"periodSec": 90.5}, "periodSec")
        assert c.patch(path, json={"intervalSec": 60, "periodSec": 60}).status_code == 422


def test_a_browser_gets_pages_where_it_got_raw_json(control):
    """`/`, unknown paths and missing status pages answered raw JSON to a browser. A
    browser (Accept: text/html) now goes to the dashboard from `/` and reads an HTML 404
    elsewhere; the API's answers stay JSON for everyone."""
    html = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    with public(control) as p:
        root = p.get("/", headers=html)
        assert (root.status_code, root.headers["location"]) == (303, "/dashboard")
        assert body(p.get("/"))["api"] == "/api/v1"
        for path in ("/nowhere", "/status/no-such-page"):
            page = p.get(path, headers=html)
            assert page.status_code == 404
            assert page.headers["content-type"].startswith("text/html")
            assert "<h1>Not found</h1>" in page.text and "href='/dashboard'" in page.text
            assert body(p.get(path))["error"]["code"] == "not_found"  # not a browser: JSON
        api = p.get("/api/v1/monitors/1", headers=html)
        assert api.headers["content-type"].startswith("application/json")


def test_without_mail_a_status_page_offers_no_subscription_it_cannot_confirm(control, owner):
    """On a server without SMTP the form said "a confirmation link is on its way" and
    nothing ever came. Without mail there is no form, and a post gets a 503 saying why."""
    with control.client(owner) as c:
        created = c.post("/status-pages", json={"slug": "no-mail", "title": "No mail"})
        assert created.status_code == 201, created.text
    with public(control) as p:
        page = p.get("/status/no-mail")
        assert page.status_code == 200
        assert 'class="subscribe"' not in page.text
        assert "this server sends no mail" in page.text
        answer = p.post("/status/no-mail/subscribe", data={"email": "fan@example.test"})
        assert answer.status_code == 503 and "sends no mail" in answer.text
    assert _value(control, "SELECT count(*) FROM subscribers") == 0


SCHEDULED = [
    ("*/5 * * * *", "UTC"), ("30 2 * * *", "Europe/Berlin"), ("0 9 * * MON-FRI", "America/New_York"),
    ("15 14 1 * *", "Asia/Kolkata"), ("@weekly", "Australia/Lord_Howe"), ("@yearly", "UTC"),
    ("0 0 29 2 *", "Pacific/Chatham"), ("45 1,13 * * SUN", "America/Sao_Paulo"),
]  # fmt: skip


def test_a_schedule_and_its_next_expected_time_hold_against_the_library(control, owner):
    """nextExpectedAt is the first scheduled time after the last ping (cronsim's own
    answer, computed here independently), + grace; the period shown is the schedule's
    shortest gap."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from cronsim import CronSim

    macros = {"@weekly": "0 0 * * 0", "@yearly": "0 0 1 1 *"}
    last = datetime(2026, 10, 24, 23, 59, 30, tzinfo=ZoneInfo("UTC"))
    with control.client(owner) as c:
        for expression, tz in SCHEDULED:
            created = c.post("/monitors", json={
                "name": "cron", "url": "u", "schedule": expression, "tz": tz,
                "heartbeatGraceSec": 90,
            })  # fmt: skip
            assert created.status_code == 201, created.text
            m = body(created)
            assert (m["schedule"], m["tz"], m["nextExpectedAt"]) == (expression, tz, None)
            control.sql(
                "UPDATE monitor_state SET state = 'up', last_seen_at = $2 WHERE monitor_id = $1",
                m["id"], last,
            )  # fmt: skip
            shown = body(c.get(f"/monitors/{m['id']}"))
            fields = macros.get(expression, expression)
            expected = next(CronSim(fields, last.astimezone(ZoneInfo(tz)))).timestamp() + 90
            assert datetime.fromisoformat(shown["nextExpectedAt"]).timestamp() == expected
            assert shown["periodSec"] == shown["intervalSec"] >= 300


def test_a_schedule_is_checked_and_can_be_swapped_for_a_period(control, owner):
    refusals: list[tuple[dict[str, object], str, str]] = [
        ({"schedule": "61 * * * *"}, "schedule", "not a cron expression"),
        ({"schedule": "0 3 * * *", "tz": "Mars/Olympus"}, "tz", "IANA time zone"),
        ({"schedule": "0 3 * * *", "intervalSec": 60}, "schedule", "not both"),
        ({"tz": "UTC", "intervalSec": 60}, "tz", "tz goes with schedule"),
        ({"schedule": "0 0 30 2 *"}, "schedule", "Bad day-of-month"),
    ]
    with control.client(owner) as c:
        for extra, field, says in refusals:
            refused = c.post("/monitors", json={"name": "n", "url": "u", **extra})
            assert refused.status_code == 422, extra
            error = body(refused)["error"]
            assert error["field"] == field and says in error["message"], error
        m = body(c.post("/monitors", json={"name": "n", "url": "u", "schedule": "@daily"}))
        assert (m["schedule"], m["tz"], m["periodSec"]) == ("@daily", "UTC", 86400)
        path = f"/monitors/{m['id']}"
        moved = body(c.patch(path, json={"schedule": "0 3 * * *", "tz": "Europe/Berlin"}))
        assert (moved["schedule"], moved["tz"]) == ("0 3 * * *", "Europe/Berlin")
        assert body(c.patch(path, json={"tz": "UTC"}))["error"]["field"] == "tz"
        period = body(c.patch(path, json={"periodSec": 7200}))
        assert (period["schedule"], period["tz"], period["periodSec"]) == (None, None, 7200)
        back = body(c.patch(path, json={"schedule": "*/30 * * * *"}))
        assert (back["schedule"], back["tz"], back["periodSec"]) == ("*/30 * * * *", "UTC", 1800)
        nulled = body(c.patch(path, json={"schedule": None}))
        assert (nulled["schedule"], nulled["periodSec"]) == (None, 1800)  # the period it showed


def test_a_monitors_timeline_is_its_share_of_each_period_in_an_incident(control, owner):
    import time
    from datetime import UTC, datetime, timedelta

    m = new_monitor(control, owner)
    now = datetime.now(UTC)
    if now.minute == 59 and now.second >= 50:  # the server's hour must be this one
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    control.sql(
        "INSERT INTO monitor_events (monitor_id, kind, occurred_at) VALUES ($1, 'up', $2)",
        m["id"], hour - timedelta(hours=5),
    )  # fmt: skip
    control.sql(
        "INSERT INTO incidents (org_id, monitor_id, opened_at, resolved_at, resolved_by)"
        " SELECT org_id, id, $2, $3, 'ping' FROM monitors WHERE id = $1",
        m["id"], hour - timedelta(hours=3) + timedelta(minutes=15),
        hour - timedelta(hours=3) + timedelta(minutes=45),
    )  # fmt: skip
    with control.client(owner) as c:
        day = body(c.get(f"/monitors/{m['id']}/uptime", params={"period": "hour"}))
        assert day["period"] == "hour" and len(day["periods"]) == 24
        last = day["periods"][-1]
        assert datetime.fromisoformat(last["start"]) == hour
        shares = {datetime.fromisoformat(p["start"]): p["share"] for p in day["periods"]}
        assert shares[hour - timedelta(hours=6)] is None  # before its first ping: no data
        assert shares[hour - timedelta(hours=5)] == 0
        assert shares[hour - timedelta(hours=3)] == 0.5  # 30 of its 60 minutes
        observed = sum(p["observedSeconds"] for p in day["periods"])
        assert day["availability"] == pytest.approx(1 - 1800 / observed, abs=1e-3)
        quarter = body(c.get(f"/monitors/{m['id']}/uptime"))
        assert quarter["period"] == "day" and len(quarter["periods"]) == 90
        assert sum(p["downSeconds"] for p in quarter["periods"]) == 1800
        assert c.get(f"/monitors/{m['id']}/uptime", params={"period": "week"}).status_code == 422


def test_a_scheduled_monitor_counts_its_missed_runs_not_its_shortest_gap():
    """09:00 and 17:00 daily: down since Monday 09:00, read on Tuesday at 10:00, it has
    missed Monday 09:00, 17:00 and Tuesday 09:00 (3), not 1 + 25 h // 8 h (4); a
    minutely job down for 2,000 minutes has missed 2,001 (beyond 1,000 runs counted one
    by one, by their average gap)."""
    from datetime import UTC, datetime, timedelta

    from control.api.monitors import _misses

    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    row = {
        "state": "down", "misses": 1, "down_since": monday, "schedule": "0 9,17 * * *",
        "tz": "UTC", "grace_sec": 0, "interval_sec": 8 * 3600,
        "read_at": monday + timedelta(hours=25),
    }  # fmt: skip
    assert _misses(row) == 3
    late = {**row, "grace_sec": 3600, "down_since": monday + timedelta(hours=1)}  # 10:00
    assert _misses({**late, "read_at": monday + timedelta(hours=25) - timedelta(seconds=1)}) == 2
    assert _misses({**late, "read_at": monday + timedelta(hours=25)}) == 3  # Tuesday's too
    minutely = {**row, "schedule": "* * * * *", "interval_sec": 60,
                "read_at": monday + timedelta(minutes=2000)}  # fmt: skip
    assert _misses(minutely) == 2001
