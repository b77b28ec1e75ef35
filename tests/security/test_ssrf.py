"""SSRF: a tenant's alert URL never reaches an internal address.

Listeners on 127.0.0.1 count every connection; each hostile URL is sent through the same
transport the channels use, with the guard on. Addresses where no listener can run here
(RFC 1918, link-local, metadata) must be refused by name before any connect.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from notifier import channels
from notifier.base import Settings, Transport, TransportError
from notifier.schema import ConfigError

from ..support.aio import run
from ..support.receivers import http_receiver, status

pytestmark = pytest.mark.security


@contextmanager
def counting_listener() -> Iterator[tuple[int, list[int]]]:
    """A TCP listener on 127.0.0.1 that counts (and drops) every connection."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(0.1)
    accepted = [0]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            accepted[0] += 1
            conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        sock.close()


# Reach the listener on 127.0.0.1:{p} by every spelling of loopback.
LOOPBACK = [
    "http://127.0.0.1:{p}/", "http://127.0.0.2:{p}/", "http://127.1:{p}/", "http://2130706433:{p}/",
    "http://0x7f000001:{p}/", "http://0x7f.0.0.1:{p}/", "http://0177.0.0.1:{p}/",
    "http://017700000001:{p}/", "http://localhost:{p}/", "http://localhost.:{p}/",
    "http://LOCALHOST:{p}/", "http://[::1]:{p}/", "http://[::ffff:127.0.0.1]:{p}/",
    "http://[::ffff:7f00:1]:{p}/", "http://[64:ff9b::7f00:1]:{p}/", "http://[2002:7f00:1::1]:{p}/",
    "http://[::127.0.0.1]:{p}/", "http://0.0.0.0:{p}/", "http://0:{p}/", "http://[::]:{p}/",
    "http://user:pass@127.0.0.1:{p}/", "http://hooks.slack.com@127.0.0.1:{p}/services/x",
    "https://127.0.0.1:{p}/", "http://127.0.0.1:{p}/#@hooks.slack.com/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/",
]  # fmt: skip
# Internal addresses with no listener here: refused by the guard, by name, before a connect.
INTERNAL = [
    ("http://10.0.0.5/", "10.0.0.5"), ("http://10.255.255.254/", "10.255.255.254"),
    ("http://172.16.0.1/", "172.16.0.1"), ("http://172.31.255.1/", "172.31.255.1"),
    ("http://192.168.0.1/", "192.168.0.1"), ("http://192.168.255.254/x", "192.168.255.254"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("http://100.64.0.1/", "100.64.0.1"), ("http://100.127.255.254/", "100.127.255.254"),
    ("http://198.18.0.1/", "198.18.0.1"), ("http://[fc00::1]/", "fc00::1"),
    ("http://[fd12:3456::1]/", "fd12:3456::1"), ("http://[fe80::1]/", "fe80::1"),
    ("http://[::ffff:10.0.0.5]/", "::ffff:a00:5"), ("http://[::ffff:192.168.1.1]/", "::ffff:c0a8:101"),
    ("http://[64:ff9b::a00:5]/", "64:ff9b::a00:5"), ("http://[2002:a00:5::1]/", "2002:a00:5::1"),
    ("http://224.0.0.1/", "224.0.0.1"), ("http://255.255.255.255/", "255.255.255.255"),
    ("http://0x0a000005/", "10.0.0.5"), ("http://167772165/", "10.0.0.5"),
]  # fmt: skip
NOT_HTTP = ["ftp://127.0.0.1/", "file:///etc/passwd", "gopher://127.0.0.1:70/", "dict://127.0.0.1:11211/",
            "ldap://127.0.0.1/", "javascript:alert(1)", "//127.0.0.1/x", "127.0.0.1:80"]  # fmt: skip


def post(url: str) -> TransportError:
    async def go() -> None:
        async with Transport(Settings(allow_private=False, timeout=2)) as transport:
            await transport.post(url, content=b"{}")

    with pytest.raises(TransportError) as caught:
        run(go())
    return caught.value


def test_there_are_at_least_40_hostile_targets():
    assert len(LOOPBACK) + len(INTERNAL) + len(NOT_HTTP) >= 40


@pytest.mark.parametrize("template", LOOPBACK)
def test_no_spelling_of_loopback_reaches_a_listener(template):
    with counting_listener() as (port, accepted):
        error = post(template.format(p=port))
    assert accepted[0] == 0, template
    # Refused by the guard, or not even a valid address or a resolvable name here.
    assert error.message.startswith(("blocked: ", "cannot resolve ", "the URL ")), error.message


@pytest.mark.parametrize(("url", "address"), INTERNAL)
def test_internal_addresses_are_refused_before_any_connect(url, address):
    error = post(url)
    assert error.permanent
    assert error.message == (
        f"blocked: {address} is not a public address"
        " (LASTSEEN_ALLOW_PRIVATE_TARGETS=1 on the server allows private targets)"
    )


@pytest.mark.parametrize("url", NOT_HTTP)
def test_other_schemes_are_refused_when_a_channel_is_configured(url):
    for kind in ("webhook", "slack", "discord", "teams"):
        with pytest.raises(ConfigError) as caught:
            channels.validate(kind, {"url": url})
        assert caught.value.field == "config.url"


def test_a_redirect_to_an_internal_host_is_not_followed():
    """Even with the guard lifted for the first hop, a 3xx is an answer, not a new hop."""
    with counting_listener() as (port, accepted), http_receiver() as receiver:
        receiver.rule = status(302, location=f"http://127.0.0.1:{port}/admin")

        async def go() -> None:
            async with Transport(Settings(allow_private=True)) as transport:
                await transport.post(receiver.url, content=b"{}")

        with pytest.raises(TransportError) as caught:
            run(go())
    assert caught.value.permanent
    assert caught.value.message == "HTTP 302 from 127.0.0.1: redirects are not followed"
    assert accepted[0] == 0
