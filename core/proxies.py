"""Which peers may speak for other clients: the trusted proxies, one definition for every
process.

``LASTSEEN_TRUSTED_PROXIES`` is a comma-separated list of addresses and networks
(``10.0.0.5, 192.168.0.0/24, ::1``); by default only this host's loopback addresses
127.0.0.1 and ::1 (where the ingest forwards from, and where a local TLS proxy sits).
A trusted peer's ``X-Forwarded-For``/``-Proto``/``-Host`` are believed; it is exempt from
the ingest's per-address connection share, since it carries many clients. IPv4-mapped
IPv6 addresses (``::ffff:127.0.0.1``, what a dual-stack listener reports) count as the
IPv4 address they carry, everywhere.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping

DEFAULT = "127.0.0.1,::1"
VARIABLE = "LASTSEEN_TRUSTED_PROXIES"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalise(address: str) -> str | None:
    """The canonical text of an IP address (mapped IPv6 as IPv4), or None if it is none."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class TrustedProxies:
    """A set of addresses and networks; `address in proxies` for a peer's address."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrustedProxies) and self.networks == other.networks

    def __hash__(self) -> int:
        return hash(self.networks)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        networks: list[Network] = []
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(
                    f"{VARIABLE}: {item!r} is not an IP address or network (e.g. 10.0.0.0/8)"
                ) from None
        return cls(networks)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> TrustedProxies:
        return cls.parse(env.get(VARIABLE) or DEFAULT)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        known = self._cache.get(address)
        if known is None:
            text = normalise(address)
            ip = ipaddress.ip_address(text) if text is not None else None
            known = ip is not None and any(ip in net for net in self.networks)
            if len(self._cache) < 1024:  # peers are few; addresses of clients are not kept
                self._cache[address] = known
        return known

    def uvicorn_hosts(self) -> list[str]:
        """The same list in the form uvicorn's proxy-headers middleware takes."""
        return [str(net) for net in self.networks]
