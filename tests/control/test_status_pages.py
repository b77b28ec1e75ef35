"""Status pages over real HTTP: the API, the public page and its JSON from a seeded
history, private pages, and the subscribe / confirm / unsubscribe flow through the alert
worker and a real SMTP server."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from control.crypto import Keyring

from ..support.aio import run
from ..support.alerthelp import worker
from ..support.receivers import text_of
from .conftest import Control, body, public


@pytest.fixture(scope="module")
def control_env(mailbox) -> dict[str, str]:
    return {"LASTSEEN_SMTP_URL": mailbox.url, "LASTSEEN_SUBSCRIBE_PER_IP_PER_HOUR": "1000"}


@pytest.fixture(scope="module")
def owner(control: Control) -> str:
    return control.bootstrap("acme", "owner@acme.test", "owner")


def monitor(control: Control, token: str, name: str) -> dict:
    with control.client(token) as c:
        return body(c.post("/monitors", json={"name": name, "url": "u", "intervalSec": 60}))


def test_the_api_creates_lists_updates_and_deletes_pages(control, owner):
    m = monitor(control, owner, "api")
    with control.client(owner) as c:
        created = c.post(
            "/status-pages", json={"slug": "acme-api", "title": "Acme", "monitorIds": [m["id"]]}
        )
        assert created.status_code == 201, created.text
        page = body(created)
        assert page["monitorIds"] == [m["id"]] and page["public"] is True
        assert c.post("/status-pages", json={"slug": "acme-api", "title": "Dup"}).status_code == 409
        bad = c.post("/status-pages", json={"slug": "Not A Slug", "title": "x"})
        assert bad.status_code == 422 and body(bad)["error"]["field"] == "slug"
        other = c.post(
            "/status-pages", json={"slug": "acme-x", "title": "x", "monitorIds": [999999]}
        )
        assert body(other)["error"] == {
            "code": "invalid",
            "message": "no such monitor: 999999",
            "field": "monitorIds",
        }
        assert page in body(c.get("/status-pages"))["statusPages"]
        patched = body(
            c.patch(f"/status-pages/{page['id']}", json={"title": "Acme Inc", "public": False})
        )
        assert (patched["title"], patched["public"]) == ("Acme Inc", False)
        # By slug, where a user would type it: a 422 that says what goes there instead.
        by_slug = body(c.patch("/status-pages/acme-api", json={"title": "x"}))["error"]
        assert by_slug["field"] == "pageId"
        assert "the id the API returned" in by_slug["message"]
        assert "by its slug in GET /status-pages" in by_slug["message"]
        with public(control) as p:
            assert p.get("/status/acme-api").status_code == 404  # private now
            assert p.get("/status/acme-api.json").status_code == 404
        assert c.delete(f"/status-pages/{page['id']}").status_code == 204
        assert c.get(f"/status-pages/{page['id']}").status_code == 404


def test_a_monitor_shows_under_its_public_name(control, owner):
    """An internal name ("db-backup-prod-eu") was public: a page may give each monitor
    the name it shows under, kept when the page's monitors change."""
    a, b = monitor(control, owner, "db-backup-prod-eu"), monitor(control, owner, "api-7f3")
    with control.client(owner) as c:
        page = body(c.post("/status-pages", json={
            "slug": "acme-names", "title": "Acme", "monitorIds": [a["id"], b["id"]],
            "displayNames": {str(a["id"]): "Backups"},
        }))  # fmt: skip
        assert page["displayNames"] == {str(a["id"]): "Backups"}
        with public(control) as p:
            shown = p.get("/status/acme-names").text
            names = [m["name"] for m in p.get("/status/acme-names.json").json()["monitors"]]
        assert names == ["Backups", "api-7f3"]
        assert "db-backup-prod-eu" not in shown
        path = f"/status-pages/{page['id']}"
        kept = body(c.patch(path, json={"monitorIds": [b["id"], a["id"]]}))
        assert kept["displayNames"] == {str(a["id"]): "Backups"}  # kept through a reorder
        renamed = body(c.patch(path, json={"displayNames": {str(b["id"]): "API"}}))
        assert renamed["displayNames"] == {str(b["id"]): "API"}
        stray = c.patch(path, json={"displayNames": {"999999": "Nope"}})
        assert stray.status_code == 422 and body(stray)["error"]["field"] == "displayNames"
        dropped = body(c.patch(path, json={"monitorIds": [a["id"]]}))
        assert dropped["displayNames"] == {}


def test_the_public_page_shows_states_bars_and_incidents_from_history(control, owner):
    steady = monitor(control, owner, "steady")
    flaky = monitor(control, owner, "flaky")
    broken = monitor(control, owner, "broken")
    now = datetime.now(UTC)
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    control.sql("UPDATE monitors SET created_at = $1 WHERE id = ANY($2::bigint[])",
                today - timedelta(days=100), [steady["id"], flaky["id"], broken["id"]])  # fmt: skip
    control.sql("UPDATE monitor_state SET state = 'up' WHERE monitor_id = ANY($1::bigint[])",
                [steady["id"], flaky["id"]])  # fmt: skip
    control.sql("UPDATE monitor_state SET state = 'down' WHERE monitor_id = $1", broken["id"])
    history = [
        # flaky: 36 min down 3 days ago (2.5%), 3 h down 10 days ago (12.5%), 10 min 40 days ago (0.7%)
        (flaky["id"], today - timedelta(days=3, hours=-2), timedelta(minutes=36)),
        (flaky["id"], today - timedelta(days=10, hours=-5), timedelta(hours=3)),
        (flaky["id"], today - timedelta(days=40, hours=-1), timedelta(minutes=10)),
    ]
    for monitor_id, opened, lasted in history:
        control.sql("INSERT INTO incidents (org_id, monitor_id, opened_at, resolved_at)"
                    " SELECT org_id, id, $2, $3 FROM monitors WHERE id = $1",
                    monitor_id, opened, opened + lasted)  # fmt: skip
    opened = now - timedelta(minutes=5)
    control.sql("INSERT INTO incidents (org_id, monitor_id, opened_at)"
                " SELECT org_id, id, $2 FROM monitors WHERE id = $1", broken["id"], opened)  # fmt: skip
    with control.client(owner) as c:
        ids = [steady["id"], flaky["id"], broken["id"]]
        assert (
            c.post(
                "/status-pages", json={"slug": "acme", "title": "Acme status", "monitorIds": ids}
            ).status_code
            == 201
        )
    with public(control) as p:
        data = p.get("/status/acme.json").json()
        html = p.get("/status/acme")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert data["title"] == "Acme status" and data["overall"] == "down"
    by_name = {m["name"]: m for m in data["monitors"]}
    assert [m["name"] for m in data["monitors"]] == ["steady", "flaky", "broken"]
    assert [by_name[n]["state"] for n in ("steady", "flaky", "broken")] == ["up", "up", "down"]
    assert all(len(m["days"]) == 90 for m in data["monitors"])
    assert by_name["steady"]["availability"] == 1.0, by_name["steady"]["days"][:3]
    assert {d["downSeconds"] for d in by_name["steady"]["days"]} == {0}
    flaky_days = {d["date"]: d for d in by_name["flaky"]["days"]}
    on = lambda n: flaky_days[(today - timedelta(days=n)).date().isoformat()]  # noqa: E731
    assert on(3)["downSeconds"] == 36 * 60 and on(3)["share"] == pytest.approx(0.025)
    assert on(10)["downSeconds"] == 3 * 3600 and on(10)["share"] == pytest.approx(0.125)
    assert on(40)["downSeconds"] == 600
    assert sum(d["downSeconds"] for d in by_name["flaky"]["days"]) == 36 * 60 + 3 * 3600 + 600
    # Resolved incidents of the last 30 days only; the open one for broken.
    assert [i["durationSeconds"] for i in by_name["flaky"]["resolvedIncidents"]] == [
        36 * 60,
        3 * 3600,
    ]
    assert len(by_name["broken"]["openIncidents"]) == 1
    assert by_name["broken"]["days"][-1]["downSeconds"] >= 300
    # The HTML shows the same: the states, and bars coloured by share, with tooltips.
    page = html.text
    assert page.count('class="state state-up"') == 2 and page.count('class="state state-down"') == 1
    flaky_section = page[page.index(f'id="m{flaky["id"]}"') : page.index(f'id="m{broken["id"]}"')]
    assert f'class="partial" data-date="{on(3)["date"]}"' in flaky_section
    assert f'class="major" data-date="{on(10)["date"]}"' in flaky_section
    assert f'class="minor" data-date="{on(40)["date"]}"' in flaky_section
    assert f'title="{on(10)["date"]}: down 3 h 0 min (12.5%)"' in flaky_section
    assert "Ongoing incident" in page and "Some systems are down" in page
    assert '<main id="main">' in page and '<label for="email">' in page


def test_subscribers_confirm_hear_of_incidents_and_unsubscribe_in_one_click(
    control, owner, mailbox
):
    m = monitor(control, owner, "subscribed")
    with control.client(owner) as c:
        c.post("/status-pages", json={"slug": "subs", "title": "Subs", "monitorIds": [m["id"]]})

    def deliver():
        async def go():
            keyring = Keyring.from_json(control.env["LASTSEEN_KEYRING"])
            clock = lambda: datetime.now(UTC)  # noqa: E731
            async with worker(control.dsn, clock, keyring, smtp_url=mailbox.url) as w:
                return await w.run_once()

        return run(go())

    with public(control) as p:
        first = p.post("/status/subs/subscribe", data={"email": "fan@example.test"})
        again = p.post("/status/subs/subscribe", data={"email": "fan@example.test"})
        assert first.status_code == again.status_code == 200
        assert first.text == again.text  # nothing says whether it was known
        assert p.post("/status/subs/subscribe", data={"email": "not an address"}).status_code == 422
    before = len(mailbox.messages)
    deliver()
    confirmations = mailbox.messages[before:]
    assert {m["Subject"] for m in confirmations} == {"[lastseen] Confirm your subscription to Subs"}
    link = re.search(r"Confirm: (\S+)", text_of(confirmations[-1])).group(1)
    leave_early = re.search(r"Unsubscribe: (\S+)", text_of(confirmations[-1])).group(1)
    assert confirmations[-1]["List-Unsubscribe"] == f"<{leave_early}>"
    path = link[link.index("/status/") :]

    # Unconfirmed: an incident sends it nothing.
    async def incident(kind: str, at: datetime) -> None:
        conn = await asyncpg.connect(control.dsn)
        await conn.execute(
            "INSERT INTO monitor_events (monitor_id, kind, occurred_at) VALUES ($1, $2, $3)",
            m["id"],
            kind,
            at,
        )
        await conn.close()

    t0 = datetime.now(UTC)
    run(incident("incident_opened", t0))
    before = len(mailbox.messages)
    deliver()
    assert [x["To"] for x in mailbox.messages[before:]] == []

    with public(control) as p:
        forged = p.get(path[:-3] + "abc")
        assert forged.status_code == 400
        confirmed = p.get(path)
        assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    run(incident("incident_resolved", t0 + timedelta(minutes=1)))
    before = len(mailbox.messages)
    deliver()
    (mail,) = mailbox.messages[before:]
    assert (
        mail["To"] == "fan@example.test" and mail["Subject"] == "[lastseen] RECOVERED: subscribed"
    )
    unsubscribe = re.search(r"Unsubscribe: (\S+)", text_of(mail)).group(1)
    assert mail["List-Unsubscribe"] == f"<{unsubscribe}>"
    with public(control) as p:
        left = p.get(unsubscribe[unsubscribe.index("/status/") :])
        assert left.status_code == 200 and "unsubscribed" in left.text
        assert p.get(unsubscribe[unsubscribe.index("/status/") :]).status_code == 400
    run(incident("incident_opened", t0 + timedelta(minutes=2)))
    before = len(mailbox.messages)
    deliver()
    assert mailbox.messages[before:] == []


def test_the_subscribe_form_is_rate_limited_per_address(control, owner):
    m = monitor(control, owner, "limited")
    with control.client(owner) as c:
        c.post("/status-pages", json={"slug": "limited", "title": "L", "monitorIds": [m["id"]]})
    with public(control) as p:
        codes = [
            p.post("/status/limited/subscribe", data={"email": "spam@example.test"}).status_code
            for _ in range(5)
        ]
    assert codes == [200, 200, 200, 429, 429]


def test_availability_counts_from_the_first_ping_and_a_waiting_monitor_has_no_data(control, owner):
    """A monitor created 10 minutes ago, first pinged 5 minutes ago, down for the last
    minute: 80% available, not 90% (the minutes before its first ping were not watched).
    One never pinged has no data, not 100%."""
    fresh, waiting = monitor(control, owner, "fresh"), monitor(control, owner, "waiting")
    now = datetime.now(UTC)
    control.sql("UPDATE monitors SET created_at = $1 WHERE id = $2",
                now - timedelta(minutes=10), fresh["id"])  # fmt: skip
    control.sql("UPDATE monitor_state SET state = 'down' WHERE monitor_id = $1", fresh["id"])
    control.sql("INSERT INTO monitor_events (monitor_id, kind, occurred_at) VALUES ($1, 'up', $2)",
                fresh["id"], now - timedelta(minutes=5))  # fmt: skip
    control.sql("INSERT INTO incidents (org_id, monitor_id, opened_at)"
                " SELECT org_id, id, $2 FROM monitors WHERE id = $1",
                fresh["id"], now - timedelta(minutes=1))  # fmt: skip
    with control.client(owner) as c:
        created = c.post("/status-pages", json={
            "slug": "acme-fresh", "title": "Acme", "monitorIds": [fresh["id"], waiting["id"]],
        })  # fmt: skip
        assert created.status_code == 201
    with public(control) as p:
        shown = {m["name"]: m for m in p.get("/status/acme-fresh.json").json()["monitors"]}
    assert abs(shown["fresh"]["availability"] - 0.80) < 0.01
    assert shown["waiting"]["availability"] is None
    assert all(day["share"] is None for day in shown["waiting"]["days"])


def test_monitors_missed_while_lastseen_was_blind_show_unknown_not_green_nor_red(control, owner):
    """The ingest writes 'unknown' for a monitor missed while it could not see pings
    (ingest/sight.py): the page says so, and so does the API."""
    seen = monitor(control, owner, "seen")
    unseen = monitor(control, owner, "unseen")
    control.sql("UPDATE monitor_state SET state = 'up' WHERE monitor_id = $1", seen["id"])
    control.sql("UPDATE monitor_state SET state = 'unknown' WHERE monitor_id = $1", unseen["id"])
    with control.client(owner) as c:
        assert c.post("/status-pages", json={
            "slug": "blind", "title": "Blind", "monitorIds": [seen["id"], unseen["id"]],
        }).status_code == 201  # fmt: skip
        shown = body(c.get(f"/monitors/{unseen['id']}"))
        assert shown["state"] == "unknown" and shown["nextExpectedAt"] is None
    with public(control) as p:
        data = p.get("/status/blind.json").json()
        page = p.get("/status/blind").text
    assert data["overall"] == "unknown"
    assert [(m["state"], m["stateLabel"]) for m in data["monitors"]] == [
        ("up", "Operational"), ("unknown", "Unknown"),
    ]  # fmt: skip
    assert 'class="overall overall-unknown"' in page
    assert "cannot see these systems" in page and 'class="state state-unknown"' in page
