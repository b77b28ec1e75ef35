"""The holes found by probing a running instance (issue 16), each reproduced against a
real `lastseen control` process, a real SMTP server and the real alert worker: bad input
gets a 4xx (never a 500, never a traceback in the log), one address per address field,
subscribers counted however their address is written, test alerts bounded."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from control.alerting import utcnow

from ..aio import run
from ..receivers import Mailbox, smtp_server
from .alerthelp import worker
from .conftest import Control, body


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture(scope="module")
def control_env(mailbox) -> dict[str, str]:
    return {"LASTSEEN_SMTP_URL": mailbox.url, "LASTSEEN_ALLOW_PRIVATE_TARGETS": "1"}


@pytest.fixture(scope="module")
def owner(control: Control) -> str:
    return control.bootstrap("acme", "owner@acme.test", "owner")


def public(control: Control) -> httpx.Client:
    return httpx.Client(base_url=control.base.removesuffix("/api/v1"), timeout=10)


@pytest.fixture(scope="module")
def page(control: Control, owner: str) -> str:
    with control.client(owner) as c:
        m = body(c.post("/monitors", json={"name": "m", "url": "u", "intervalSec": 60}))
        made = c.post("/status-pages", json={"slug": "probe", "title": "Probe\nTitle",
                                             "monitorIds": [m["id"]]})  # fmt: skip
    assert made.status_code == 201, made.text
    return "probe"


BEYOND_BIGINT = "99999999999999999999999"


@pytest.mark.parametrize(
    "path",
    ["/status/a%00b", "/status/a%00b.json", "/status/%ED%A0%80", "/status/probe/confirm?s="
     + BEYOND_BIGINT + "&t=x", "/status/probe/confirm?s=1&t=%C3%A9", "/status/probe/unsubscribe?s="
     + BEYOND_BIGINT + "&t=x", "/status/probe/unsubscribe?s=1&t=%C3%A9%00"],
)  # fmt: skip
def test_odd_public_urls_get_a_4xx_not_a_500(control, page, path):
    with public(control) as p:
        answer = p.get(path)
    assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text[:200])


@pytest.mark.parametrize(
    "address",
    ["a\x00b@example.test", "a<victim@example.test>", "x@example.test, y@example.test",
     "x@example.test\r\nBcc: y@example.test", "Fan <fan@example.test>"],
)  # fmt: skip
def test_the_subscribe_form_takes_exactly_one_address(control, page, address):
    with public(control) as p:
        answer = p.post(f"/status/{page}/subscribe", data={"email": address})
    assert answer.status_code == 422, answer.text[:200]


def test_subscribers_are_one_per_mailbox_whatever_the_case(control, page):
    with public(control) as p:
        for written in ("Case@Example.test", "case@example.TEST", "CASE@example.test"):
            assert p.post(f"/status/{page}/subscribe", data={"email": written}).status_code in (
                200,
                429,
            )
    rows = _subscribers(control)
    assert [r for r in rows if r.lower() == "case@example.test"] == ["Case@example.test"]


def _subscribers(control: Control) -> list[str]:
    import asyncpg

    async def go() -> list[str]:
        conn = await asyncpg.connect(control.dsn)
        try:
            return [r["email"] for r in await conn.fetch("SELECT email FROM subscribers")]
        finally:
            await conn.close()

    return run(go())


def test_the_per_address_limit_counts_an_address_however_it_is_written(control, page):
    statuses = []
    with public(control) as p:
        for written in ("Victim@example.test", "victim@EXAMPLE.test", "VICTIM@example.test",
                        "victim@example.test", "vIctim@example.test"):  # fmt: skip
            statuses.append(
                p.post(f"/status/{page}/subscribe", data={"email": written}).status_code
            )
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]


@pytest.mark.parametrize(
    "value",
    ["a@b.example\r\nBcc: x@y.example", "a@b.example, c@d.example", "x\x00@b.example", "nope"],
)  # fmt: skip
def test_alert_email_is_one_checked_address(control, owner, value):
    with control.client(owner) as c:
        made = c.post("/monitors", json={"name": "x", "url": "u", "intervalSec": 60,
                                         "alertEmail": value})  # fmt: skip
    assert made.status_code == 422
    assert body(made)["error"]["field"] == "alertEmail"


def test_alert_email_is_normalised(control, owner):
    with control.client(owner) as c:
        made = c.post("/monitors", json={"name": "x", "url": "u", "intervalSec": 60,
                                         "alertEmail": " Ops@Example.TEST "})  # fmt: skip
    assert body(made)["alertEmail"] == "Ops@example.test"


def test_test_alerts_are_throttled_per_monitor(control, owner, mailbox):
    with control.client(owner) as c:
        m = body(c.post("/monitors", json={"name": "t", "url": "u", "intervalSec": 60,
                                           "alertEmail": "ops@example.test"}))  # fmt: skip
        before = len(mailbox.messages)
        statuses = [c.post(f"/monitors/{m['id']}/test-alert").status_code for _ in range(8)]
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429] * 3
    assert len(mailbox.messages) - before == 5


def test_a_forwarded_for_that_is_no_address_does_not_break_an_audited_write(control, owner):
    # The test client is on 127.0.0.1, a trusted proxy: its X-Forwarded-For is believed.
    with control.client(owner) as c:
        made = c.post(
            "/monitors",
            json={"name": "xff", "url": "u", "intervalSec": 60},
            headers={"x-forwarded-for": "not-an-ip"},
        )
    assert made.status_code == 201, made.text


def test_a_line_break_in_a_page_title_does_not_stop_subscriber_mail(control, page, mailbox):
    before = len(mailbox.messages)
    with public(control) as p:
        answer = p.post(f"/status/{page}/subscribe", data={"email": "title@example.test"})
    assert answer.status_code == 200

    async def deliver() -> int:
        async with worker(
            control.dsn, clock=utcnow, keyring=_keyring(control), smtp_url=mailbox.url
        ) as w:
            return await w.run_once()

    run(deliver())
    mails = mailbox.wait_for(before + 1)
    confirm = mails[-1]
    assert confirm["To"] == "title@example.test"
    assert confirm["Subject"] == "[lastseen] Confirm your subscription to Probe Title"


def _keyring(control: Control):
    from control.crypto import Keyring

    return Keyring.from_json(control.env["LASTSEEN_KEYRING"])


def test_nothing_above_logged_a_traceback(control):
    # Runs last in the module: every request above is in this output.
    output = control.output()
    assert "Traceback" not in output, output[-3000:]
    assert "Exception in ASGI application" not in output
