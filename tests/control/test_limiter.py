"""The failure limiter and who counts as one client (issue 16, item 5), on an injected
clock: per address and per token, IPv6 by its /64, mapped addresses as IPv4, bounded
memory; and one definition of trusted proxies for every process (the control process
hands the same list to uvicorn, which picks the client out of X-Forwarded-For)."""

from __future__ import annotations

import pytest

from control.auth import Limiter, address_key
from core.proxies import TrustedProxies, normalise


def test_a_key_gets_its_limit_per_window_then_starts_again():
    now = [0.0]
    limiter = Limiter(3, 60.0, clock=lambda: now[0])
    for _ in range(3):
        assert not limiter.exceeded("a")
        limiter.count("a")
    assert limiter.exceeded("a") and not limiter.exceeded("b")
    now[0] = 60.0
    assert not limiter.exceeded("a")


def test_a_hundred_thousand_one_off_addresses_cost_bounded_memory():
    limiter = Limiter(20, 3600.0, max_keys=1000, clock=lambda: 0.0)
    for i in range(100_000):
        limiter.count(f"address:10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(limiter) == 1000
    # The most recent are the ones kept.
    assert limiter._counts.get("address:10.1.134.159") is not None


def test_one_client_is_one_ipv4_address_or_one_ipv6_64():
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"


def test_trusted_proxies_take_networks_and_name_the_variable_when_wrong():
    proxies = TrustedProxies.parse("10.0.0.0/8, 2001:db8::/32")
    assert "10.1.2.3" in proxies and "::ffff:10.1.2.3" in proxies
    assert "2001:db8::5" in proxies and "192.0.2.1" not in proxies
    assert "garbage" not in proxies
    with pytest.raises(ValueError, match="LASTSEEN_TRUSTED_PROXIES: 'ten' is not"):
        TrustedProxies.parse("10.0.0.1, ten")
    assert normalise("[::1]") == "::1" and normalise("nope") is None
