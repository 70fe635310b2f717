"""The client's address, as per-address rate limits and logs use it.

``X-Forwarded-For`` is anybody's to write, so it is believed only from a peer in
``SESAME_TRUSTED_PROXIES`` (none by default: the peer is the client). Each proxy appends
the address it heard from, so the header is read from the right: the first address that
is not a trusted proxy is the client; what lies to its left the client wrote itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

Network = IPv4Network | IPv6Network

FORWARDED_FOR = b"x-forwarded-for"


def _parse(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: IPv4Address | IPv6Address, proxies: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in proxies)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], proxies: Sequence[Network]
) -> str:
    """The right-most address not a trusted proxy, starting from the peer; ``forwarded_for``
    holds the values of every ``X-Forwarded-For`` header, in order."""
    if peer is None:
        return "unknown"
    current = _parse(peer)
    if current is None or not _trusted(current, proxies):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            break  # a proxy we trust wrote something that is not an address: stop at it
        current = address
        if not _trusted(current, proxies):
            break
    return str(current)
