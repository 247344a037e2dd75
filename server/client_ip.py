"""Find the visitor's IP address behind trusted reverse proxies (X-Forwarded-For).

The address is only used for the geo lookup and then discarded; it is never stored.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Parse trusted proxies given as addresses ("127.0.0.1", "::1") or networks ("10.0.0.0/8")."""
    networks: list[Network] = []
    for value in values:
        text = value.strip()
        if not text:
            continue  # tolerate "a, b," from a comma-separated setting
        try:
            # strict=False: "10.0.0.1/8" is taken to mean 10.0.0.0/8.
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(
                f"invalid trusted proxy {value!r}: expected an IP address or a network "
                "such as 10.0.0.0/8"
            ) from None
    return tuple(networks)


def client_ip(
    peer: str | None,
    forwarded_for: str | None,
    trusted_proxies: Sequence[Network],
) -> str | None:
    """The visitor's address, or None when the direct peer is not an IP address.

    X-Forwarded-For is believed only when the direct peer is a trusted proxy: anyone
    else can write anything in it. Each proxy appends the address it saw, so the list
    is walked from the right, skipping trusted proxies, and the first untrusted address
    is the client. A malformed entry ends the walk, because nothing to its left can be
    vouched for: the last valid hop (or the peer) is returned instead.
    """
    peer_address = _parse_address(peer)
    if peer_address is None:
        return None
    if not forwarded_for or not _is_trusted(peer_address, trusted_proxies):
        return str(peer_address)
    last_valid = peer_address
    for entry in reversed(forwarded_for.split(",")):
        address = _parse_address(entry)
        if address is None:
            break
        if not _is_trusted(address, trusted_proxies):
            return str(address)
        last_valid = address
    return str(last_valid)


def is_trusted_peer(peer: str | None, trusted_proxies: Sequence[Network]) -> bool:
    """Whether the direct peer is a trusted proxy (so its X-Forwarded-* headers count)."""
    address = _parse_address(peer)
    return address is not None and _is_trusted(address, trusted_proxies)


def _is_trusted(address: Address, trusted_proxies: Sequence[Network]) -> bool:
    # `in` is False (not an error) across IP versions.
    return any(address in network for network in trusted_proxies)


@functools.lru_cache(maxsize=4096)
def _parse_address(value: str | None) -> Address | None:
    """Parse "1.2.3.4", "1.2.3.4:80", "2001:db8::1", "[2001:db8::1]:443"; None if invalid.
    Remembered for the last few thousand (addresses are immutable): every request parses
    its peer's, and ipaddress does so in Python."""
    if not value:
        return None
    text = value.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port; bare IPv6 has several colons
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # Dual-stack listeners report IPv4 clients as ::ffff:a.b.c.d; unwrap so that
    # "127.0.0.1" in the trusted list matches them.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
