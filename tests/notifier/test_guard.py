"""The SSRF guard: which addresses a tenant's URL may reach, checked where we connect."""

from __future__ import annotations

import ipaddress

import pytest

from notifier.base import Settings, Transport, TransportError
from notifier.guard import is_public

from ..support.aio import run
from ..support.receivers import http_receiver

ALLOW = " (LASTSEEN_ALLOW_PRIVATE_TARGETS=1 on the server allows private targets)"

REFUSED = [
    "127.0.0.1", "127.8.9.10", "10.0.0.5", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254", "100.64.0.1", "100.127.255.254", "0.0.0.0", "224.0.0.1",
    "255.255.255.255", "198.18.0.1", "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1",
    "ff02::1", "::ffff:10.0.0.5", "::ffff:127.0.0.1", "::10.0.0.5", "64:ff9b::a00:5",
    "64:ff9b::7f00:1", "64:ff9b:1::a00:5", "2002:a00:5::1", "2002:7f00:1::",
    "2001:0:4136:e378:8000:63bf:f5ff:fffa",  # Teredo carrying 10.0.0.5
]  # fmt: skip
ALLOWED = [
    "8.8.8.8", "1.1.1.1", "151.101.1.69", "2606:4700:4700::1111", "2a00:1450:4001:81c::200e",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
]  # fmt: skip


@pytest.mark.parametrize("address", REFUSED)
def test_it_refuses_addresses_that_are_not_globally_routable(address):
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_it_allows_public_addresses_including_their_embedded_forms(address):
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_a_private_destination_is_blocked_before_any_byte_is_sent(host):
    async def post(url: str) -> None:
        async with Transport(Settings(allow_private=False)) as transport:
            await transport.post(url, content=b"{}")

    with http_receiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        with pytest.raises(TransportError) as caught:
            run(post(f"http://{host}:{port}/hook"))
        assert caught.value.permanent
        assert caught.value.message in (
            "blocked: 127.0.0.1 is not a public address" + ALLOW,
            "blocked: ::1 is not a public address" + ALLOW,
        )
        assert receiver.requests == []


def test_allow_private_targets_lifts_the_guard():
    async def post(url: str) -> int:
        async with Transport(Settings(allow_private=True)) as transport:
            return (await transport.post(url, content=b"{}")).status_code

    with http_receiver() as receiver:
        assert run(post(f"{receiver.url}/hook")) == 200
        assert len(receiver.requests) == 1
