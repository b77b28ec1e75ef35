"""The status page and the dashboard in a real browser (Debian's Chromium, driven by
Playwright), against `lastseen serve` with a real SMTP server and a real webhook receiver.

`LASTSEEN_SCREENSHOTS=1` writes the screenshots to docs/img/ (as the README shows them).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ..conftest import fresh_database
from ..support.aio import run
from ..support.receivers import HttpReceiver, Mailbox, http_receiver, smtp_server, text_of
from ..support.serving import Served, serving, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS_IMG = Path(__file__).parents[2] / "docs" / "img"


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture(scope="module")
def receiver() -> Iterator[HttpReceiver]:
    with http_receiver() as r:

        def rule(request):
            if request.path.startswith("/gone"):
                return 404, {}, b"no_service"
            return 200, {}, b"ok"

        r.rule = rule
        yield r


@pytest.fixture(scope="module")
def served(postgres_url, tmp_path_factory, mailbox) -> Iterator[Served]:
    for dsn in fresh_database(postgres_url):
        data_dir = tmp_path_factory.mktemp("serve")
        with serving(dsn, data_dir, LASTSEEN_SMTP_URL=mailbox.url,
                     LASTSEEN_ALLOW_PRIVATE_TARGETS="1") as s:  # fmt: skip
            yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "needs Debian's chromium: apt-get install chromium"
    # Playwright makes its loop with asyncio.new_event_loop(); once the ingest's tests have
    # imported trio-asyncio, that would be trio-asyncio's loop. Give it plain asyncio's.
    original = asyncio.new_event_loop
    asyncio.new_event_loop = asyncio.SelectorEventLoop
    try:
        manager = sync_playwright()
        p = manager.__enter__()
    finally:
        asyncio.new_event_loop = original
    try:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    yield context.new_page()
    context.close()


def screenshot(page: Page, name: str, tmp_path: Path) -> None:
    target = DOCS_IMG if os.environ.get("LASTSEEN_SCREENSHOTS") else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / name), full_page=True)


def api(served: Served) -> httpx.Client:
    return httpx.Client(
        base_url=served.api, headers={"authorization": f"Bearer {served.pat}"}, timeout=10
    )


def sql(served: Served, query: str, *args) -> None:
    async def go():
        conn = await asyncpg.connect(served.dsn)
        try:
            await conn.execute(query, *args)
        finally:
            await conn.close()

    run(go())


def new_monitor(served: Served, name: str) -> dict:
    with api(served) as c:
        created = c.post("/monitors", json={"name": name, "url": "u", "intervalSec": 60})
        assert created.status_code == 201, created.text
        return created.json()


def test_the_status_page_shows_states_and_bars_for_a_seeded_history(
    served: Served, browser: Browser, tmp_path: Path
) -> None:
    names = ["API", "Nightly backup", "Billing sync"]
    api_m, backup, billing = (new_monitor(served, n) for n in names)
    now = datetime.now(UTC)
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    ids = [api_m["id"], backup["id"], billing["id"]]
    sql(
        served,
        "UPDATE monitors SET created_at = $1 WHERE id = ANY($2::bigint[])",
        today - timedelta(days=120),
        ids,
    )
    sql(
        served,
        "UPDATE monitor_state SET state = 'up', last_seen_at = now() WHERE monitor_id = ANY($1::bigint[])",
        ids[:2],
    )
    sql(served, "UPDATE monitor_state SET state = 'down' WHERE monitor_id = $1", billing["id"])
    for monitor_id, days_ago, minutes in [
        (backup["id"], 2, 50),
        (backup["id"], 12, 300),
        (backup["id"], 61, 5),
        (billing["id"], 30, 20),
    ]:
        opened = today - timedelta(days=days_ago) + timedelta(hours=3)
        sql(served, "INSERT INTO incidents (org_id, monitor_id, opened_at, resolved_at) SELECT org_id, id, $2, $3"
                    " FROM monitors WHERE id = $1", monitor_id, opened, opened + timedelta(minutes=minutes))  # fmt: skip
    sql(served, "INSERT INTO incidents (org_id, monitor_id, opened_at) SELECT org_id, id, $2 FROM monitors"
                " WHERE id = $1", billing["id"], now - timedelta(minutes=12))  # fmt: skip
    with api(served) as c:
        assert (
            c.post(
                "/status-pages", json={"slug": "acme", "title": "Acme Cloud", "monitorIds": ids}
            ).status_code
            == 201
        )

    for javascript in (True, False):  # readable without JavaScript
        context = browser.new_context(
            java_script_enabled=javascript, viewport={"width": 1100, "height": 900}
        )
        page = context.new_page()
        assert page.goto(f"{served.origin}/status/acme").status == 200
        expect(page.get_by_role("heading", level=1)).to_have_text("Acme Cloud")
        expect(page.get_by_role("status")).to_have_text("Some systems are down")
        sections = page.locator("section.monitor")
        expect(sections).to_have_count(3)
        assert [s.locator("h2").inner_text() for s in sections.all()] == names
        assert [s.locator(".state").inner_text() for s in sections.all()] == [
            "Operational",
            "Operational",
            "Down",
        ]
        bars = [s.locator(".bars li") for s in sections.all()]
        assert [b.count() for b in bars] == [90, 90, 90]
        assert sections.nth(0).locator(".bars li.up").count() == 90
        day = lambda n: (today - timedelta(days=n)).date().isoformat()  # noqa: E731
        backup_bar = sections.nth(1).locator(".bars")
        # 50 min of a day is 3.5% (partial), 300 min is 20.8% (major), 5 min is 0.3% (minor).
        expect(backup_bar.locator(f'li[data-date="{day(2)}"]')).to_have_class("partial")
        expect(backup_bar.locator(f'li[data-date="{day(12)}"]')).to_have_class("major")
        expect(backup_bar.locator(f'li[data-date="{day(61)}"]')).to_have_class("minor")
        expect(backup_bar.locator(f'li[data-date="{day(12)}"]')).to_have_attribute(
            "title", f"{day(12)}: down 5 h 0 min (20.8%)"
        )
        assert backup_bar.locator("li.up").count() == 87
        expect(sections.nth(1).locator(".incidents li")).to_have_count(2)  # the last 30 days
        expect(sections.nth(2).locator(".incidents li").first).to_contain_text("Ongoing incident")
        expect(sections.nth(2).locator(".bars")).to_have_attribute(
            "aria-label", re.compile(r"Billing sync: 99\.\d\d% available")
        )
        if javascript:
            screenshot(page, "status-page.png", tmp_path)
        context.close()

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = phone.new_page()
    page.goto(f"{served.origin}/status/acme")
    assert page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    phone.close()


def test_subscribe_confirm_alert_and_unsubscribe(served, page, mailbox):
    m = new_monitor(served, "Checkout")
    with api(served) as c:
        assert (
            c.post(
                "/status-pages", json={"slug": "shop", "title": "Shop", "monitorIds": [m["id"]]}
            ).status_code
            == 201
        )

    def subscribe(address: str) -> str:
        page.goto(f"{served.origin}/status/shop")
        page.get_by_label("Email address").fill(address)
        before = len(mailbox.messages)
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("status")).to_contain_text("a confirmation link is on its way")
        mail = mailbox.wait_for(before + 1, within=20)[before]
        assert (
            mail["To"] == address
            and mail["Subject"] == "[lastseen] Confirm your subscription to Shop"
        )
        return re.search(r"Confirm: (\S+)", text_of(mail)).group(1)

    for address in ("alice@example.test", "bob@example.test"):
        page.goto(subscribe(address))
        expect(page.get_by_role("status")).to_contain_text("You are subscribed")

    before = len(mailbox.messages)
    opened = datetime.now(UTC)
    sql(
        served,
        "INSERT INTO monitor_events (monitor_id, kind, occurred_at) VALUES ($1, 'incident_opened', $2)",
        m["id"],
        opened,
    )
    mails = mailbox.wait_for(before + 2, within=20)[before:]
    assert sorted(x["To"] for x in mails) == ["alice@example.test", "bob@example.test"]
    assert {x["Subject"] for x in mails} == {"[lastseen] DOWN: Checkout"}
    alice = next(x for x in mails if x["To"] == "alice@example.test")
    unsubscribe = re.search(r"Unsubscribe: (\S+)", text_of(alice)).group(1)
    page.goto(unsubscribe)
    expect(page.get_by_role("status")).to_have_text(
        "You are unsubscribed. No more emails will be sent."
    )

    before = len(mailbox.messages)
    sql(served, "INSERT INTO monitor_events (monitor_id, kind, occurred_at) VALUES ($1, 'incident_resolved', $2)",
        m["id"], opened + timedelta(minutes=3))  # fmt: skip
    (recovery,) = mailbox.wait_for(before + 1, within=20)[before:]
    assert (
        recovery["To"] == "bob@example.test"
        and recovery["Subject"] == "[lastseen] RECOVERED: Checkout"
    )
    page.goto(unsubscribe)  # a used link
    expect(page.get_by_role("status")).to_contain_text("invalid")

    # The incident's page in the dashboard says who was told, and how it went; a
    # subscriber's address stays theirs.
    sign_in(page, served, served.pat)
    page.locator("#incidents tr", has_text="Checkout").get_by_role("link", name="resolved").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Checkout")
    rows = page.locator("#deliveries tbody tr")  # bob's two (alice left: hers went with her)
    expect(rows).to_have_count(2)
    expect(page.locator('#deliveries tr[data-status="delivered"]')).to_have_count(2, timeout=20_000)
    texts = rows.all_inner_texts()
    assert all("a status-page subscriber" in t for t in texts)
    assert sorted(t.split("\t")[2] for t in texts) == ["down", "recovered"]
    assert not any("example.test" in t for t in texts)


def sign_in(page: Page, served: Served, token: str) -> None:
    page.goto(f"{served.origin}/dashboard")
    page.get_by_label("Personal access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Monitors")).to_be_visible()


def test_the_dashboard_creates_reveals_watches_and_tests_a_monitor(
    served, page, receiver, mailbox, tmp_path
):
    mailbox.refuse.add("gone@example.test")
    sign_in(page, served, served.pat)
    cookie = next(c for c in page.context.cookies() if c["name"] == "lastseen_session")
    assert (
        cookie["httpOnly"] and cookie["sameSite"] == "Strict" and served.pat not in cookie["value"]
    )

    form = page.get_by_role("region", name="New heartbeat monitor")
    form.get_by_label("Name").fill("nightly-backup")
    form.get_by_label("Interval").select_option("60")
    form.get_by_label("Alert email").fill("gone@example.test")
    form.get_by_role("button", name="Create monitor").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("nightly-backup")
    expect(page.locator("#state")).to_have_text("pending")
    monitor_id = int(page.url.split("/monitors/")[1].split("?")[0])
    assert page.url.endswith(f"/dashboard/monitors/{monitor_id}")  # its own address

    # The ping URL at once, with lines ready to paste, and a copy button that copies it.
    url = page.locator("#ping-url").inner_text()
    assert (
        url.startswith(f"{served.origin}/api/v1/heartbeats/") and len(url.rsplit("/", 1)[1]) == 64
    )
    assert page.locator("#ping-url").evaluate("e => getComputedStyle(e).whiteSpace") == "pre"
    assert page.locator("#ping-cron").inner_text().startswith("* * * * * /path/to/job && curl")
    assert page.locator("#ping-curl").inner_text().endswith(f"-X POST {url}")
    assert f'Request("{url}", method="POST")' in page.locator("#ping-python").inner_text()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served.origin)
    page.locator('button[data-copy="ping-url"]').click()
    expect(page.locator('button[data-copy="ping-url"]')).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == url
    page.get_by_role("button", name="Reveal ping URL").click()  # later, on demand
    assert page.locator("#ping-url").inner_text() == url
    # Shown in answer to a POST, on the monitor's own address: a reload is a GET, and the
    # secret is not on screen any more (nothing stale, nothing sent twice).
    assert page.url == f"{served.origin}/dashboard/monitors/{monitor_id}"
    page.reload()
    expect(page.locator("#ping-url")).to_have_count(0)

    page.goto(f"{served.origin}/dashboard")
    row = page.locator(f'#monitors tr[data-id="{monitor_id}"]')
    expect(row.locator("[data-field=state]")).to_have_text("pending")
    up, pending = (
        int(page.locator(f"#summary [data-count={s}]").inner_text()) for s in ("up", "pending")
    )
    ping = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", url],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert ping.stdout == "204"
    # Live: the row turns up without a reload.
    page.evaluate("window.notReloaded = true")
    expect(row.locator("[data-field=state]")).to_have_text("up", timeout=15_000)
    assert page.evaluate("window.notReloaded") is True
    # Counts, a relative time with the exact one (in UTC) on hover, a human period.
    expect(page.locator("#summary [data-count=up]")).to_have_text(str(up + 1))
    expect(page.locator("#summary [data-count=pending]")).to_have_text(str(pending - 1))
    expect(row.locator("[data-field=lastSeenAt]")).to_have_text(re.compile(r"^\d+ s ago$"))
    assert row.locator("[data-field=lastSeenAt]").get_attribute("title").endswith(" UTC")
    assert row.locator("td").nth(4).inner_text() == "1 min"
    # When it goes late if silent: a minute and its grace after the ping, counting down.
    expect(row.locator("[data-field=nextExpectedAt]")).to_have_text(
        re.compile(r"^in ([12] min|[0-9]+ s)$"), timeout=15_000
    )
    assert row.locator("[data-field=nextExpectedAt]").get_attribute("title").endswith(" UTC")

    # The form asks for what the chosen type needs, and nothing else.
    form = page.get_by_role("form", name="New channel")
    form.get_by_label("Type").select_option("telegram")
    expect(form.get_by_label("Bot token")).to_be_visible()
    expect(form.get_by_label("Webhook URL")).to_be_hidden()
    form.get_by_label("Type").select_option("email")
    expect(form.get_by_label("Email address")).to_be_visible()
    expect(form.get_by_label("Chat id")).to_be_hidden()
    for kind, name, url_ in [
        ("webhook", "ops-hook", f"{receiver.url}/ok"),
        ("slack", "old-slack", f"{receiver.url}/gone"),
    ]:
        form = page.get_by_role("form", name="New channel")
        form.get_by_label("Type").select_option(kind)
        form.get_by_label("Name").fill(name)
        form.get_by_label("Webhook URL").fill(url_)
        form.get_by_role("button", name="Add channel").click()
        expect(page.locator(".flash")).to_contain_text(f"Channel {name} created.")
    expect(page.locator("#channels tbody tr")).to_have_count(2)

    page.goto(f"{served.origin}/dashboard/monitors/{monitor_id}")
    page.get_by_label("ops-hook (webhook)").check()
    page.get_by_label("old-slack (slack)").check()
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash")).to_have_text("Saved.")
    page.reload()  # a message is shown once
    expect(page.locator(".flash")).to_have_count(0)

    before = len(receiver.requests)
    page.get_by_role("button", name="Send test alert").click()
    results = page.locator("#test-results li")
    expect(results).to_have_count(3, timeout=20_000)
    expect(page.locator("#test-results li.ok")).to_have_count(1)
    expect(page.locator("#test-results li.fail")).to_have_count(2)
    texts = results.all_inner_texts()
    # Each channel by its name, as the user named it.
    assert "ops-hook (webhook): delivered" in texts
    assert "old-slack (slack): HTTP 404 from 127.0.0.1: no_service" in texts
    assert "gone@example.test (email, the alert email): SMTP 550 5.1.1 user unknown" in texts
    assert {r.path for r in receiver.requests[before:]} == {"/ok", "/gone"}
    screenshot(page, "monitor-page.png", tmp_path)

    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#state")).to_have_text("paused")


def test_a_viewer_sees_no_write_buttons_and_the_server_refuses_them_anyway(served, page):
    monitor = new_monitor(served, "viewer-can-see")
    done = subprocess.run(
        [sys.executable, "-m", "lastseen", "bootstrap", "--org", "default", "--email", "viewer@example.test",
         "--role", "viewer", "--data-dir", str(served.data_dir)],
        env={**os.environ, "LASTSEEN_DATABASE_URL": served.dsn}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sign_in(page, served, done.stdout.strip().splitlines()[-1])
    expect(page.get_by_role("button", name="Create monitor")).to_have_count(0)
    page.goto(f"{served.origin}/dashboard/monitors/{monitor['id']}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("viewer-can-see")
    # Check-ins carry job output: a viewer (no pings:read) is not shown them.
    expect(page.get_by_role("heading", name="Check-ins")).to_have_count(0)
    for name in ("Send test alert", "Pause", "Delete", "Reveal ping URL", "Save"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "lastseen_csrf")
    forged = page.request.post(
        f"{served.origin}/dashboard/monitors/{monitor['id']}/pause", form={"csrf": csrf}
    )
    assert forged.ok  # redirected back to the page, which says why
    assert "this needs the monitors:write scope" in forged.text()
    no_csrf = page.request.post(
        f"{served.origin}/dashboard/monitors/{monitor['id']}/pause", form={"csrf": "nope"}
    )
    assert no_csrf.status == 403
    with api(served) as c:
        assert c.get(f"/monitors/{monitor['id']}").json()["paused"] is False


def test_a_failed_runs_output_is_one_click_away(served, page, tmp_path):
    monitor = new_monitor(served, "nightly-export")
    with api(served) as c:
        token = c.get(f"/monitors/{monitor['id']}/secrets").json()["heartbeatToken"]
    ping = f"{served.api}/heartbeats/{token}"
    rid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert httpx.post(f"{ping}/start?rid={rid}", timeout=10).status_code == 204
    output = "exporting...\nerror: <disk full> & more\n"
    assert httpx.post(f"{ping}/2?rid={rid}", content=output, timeout=10).status_code == 204
    with api(served) as c:
        wait_until(lambda: len(c.get(f"/monitors/{monitor['id']}/pings").json()["pings"]) == 2, 10)
        # The ping history is written every 0.5 s, the state within 1.5 s (the flush, after
        # the hand-off to the owner): the page, rendered once, waits for both.
        wait_until(lambda: c.get(f"/monitors/{monitor['id']}").json()["state"] == "down", 3)
    sign_in(page, served, served.pat)
    page.goto(f"{served.origin}/dashboard/monitors/{monitor['id']}")
    expect(page.locator("#state")).to_have_text("down")  # failed: down at once
    checkins = page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="Output"))
    failed = checkins.locator("tr.checkin-fail")
    expect(failed).to_contain_text("fail (exit status 2)")
    expect(failed.locator("pre.output")).to_have_text(output)  # open: the latest failure
    expect(checkins.locator("tr.checkin-start")).to_contain_text("start")
    # Its timelines: 24 hours by the hour, 90 days by the day; the current ones red.
    expect(page.locator("#timeline-hour li")).to_have_count(24)
    expect(page.locator("#timeline-day li")).to_have_count(90)
    expect(page.locator("#timeline-hour li").last).to_have_class("major")
    screenshot(page, "dashboard-checkins.png", tmp_path)


def test_a_cron_monitor_is_made_and_changed_in_the_dashboard(served, page, tmp_path):
    sign_in(page, served, served.pat)
    form = page.get_by_role("region", name="New heartbeat monitor")
    form.get_by_label("Name").fill("nightly-report")
    form.get_by_label("Or a cron schedule").fill("30 2 * * *")
    form.get_by_label("Time zone").fill("Europe/Berlin")
    form.get_by_label("Max run time (s)").fill("900")
    form.get_by_role("button", name="Create monitor").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("nightly-report")
    summary = page.locator("main p.muted").first
    expect(summary).to_contain_text("Runs at 30 2 * * * (Europe/Berlin)")
    expect(summary).to_contain_text("A run may take 15 min")
    monitor_id = int(page.url.split("/monitors/")[1].split("?")[0])
    with api(served) as c:
        m = c.get(f"/monitors/{monitor_id}").json()
    assert (m["schedule"], m["tz"], m["maxRuntimeSec"]) == ("30 2 * * *", "Europe/Berlin", 900)
    # A wrong zone is refused with the API's words, and nothing changes.
    settings = page.get_by_role("region", name="Settings")
    settings.get_by_label("Time zone").fill("Berlin")
    settings.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("tz must be an IANA time zone name")
    # Emptied, the schedule gives way to the interval; the run time to none.
    settings = page.get_by_role("region", name="Settings")
    settings.get_by_label("Or a cron schedule").fill("")
    settings.get_by_label("Interval").select_option("3600")
    settings.get_by_label("Max run time (s)").fill("")
    settings.get_by_role("button", name="Save").click()
    expect(page.locator("main p.muted").first).to_contain_text("Every 1 h")
    with api(served) as c:
        m = c.get(f"/monitors/{monitor_id}").json()
    assert (m["schedule"], m["intervalSec"], m["maxRuntimeSec"]) == (None, 3600, None)
