"""Where requests to addresses someone else chose may go: the egress policy.

A URL a user hands over (a partner's webhook, a browser's push endpoint) makes this server
send a request wherever it points. Left unchecked, that reaches what only the server
can: its own admin ports, the database, a cloud's metadata service. The policy refuses
every address that is not public unicast — loopback, private, shared, link-local,
multicast, reserved, unspecified, documentation — in every spelling: IPv4 in decimal,
hex, octal or shortened form (``2130706433``, ``0x7f000001``, ``127.1``), names that
resolve there (``localhost`` and its subdomains without asking), and IPv6 forms that
carry an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo).

- A host is resolved and **every** address it has must pass, so a name with one public
  and one private address is refused.
- ``transport()`` makes an ``httpx`` transport that resolves and checks at connection
  time and then connects to the checked address itself, so a name that answers a
  public address to the check and a private one to the connection (DNS rebinding) gets
  nowhere. Connections are reused only for the same origin, already checked.
- The operator's allow-list (CIDRs, addresses or host names) admits real internal
  receivers; an allowed host name is trusted whatever it resolves to.

The policy knows nothing of webhooks or push: it answers for hosts and URLs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Ranges Python's ``is_global`` lets through (as of 3.11) that no receiver of ours lives in.
_NOT_PUBLIC: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # carrier-grade NAT
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/3",  # multicast and reserved, up to broadcast
        "::/96",  # IPv4-compatible (deprecated) and unspecified
        "64:ff9b:1::/48",  # NAT64, local use (RFC 8215)
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, Teredo among them
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fec0::/10",  # site-local (deprecated)
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address in the low bits
_LOCALHOST = ("localhost", "localhost.localdomain")


class EgressRefused(Exception):
    """The policy refuses this destination. ``reason`` is stable and carries no address."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Unresolvable(EgressRefused):
    """The host has no address now (or the lookup timed out): nothing to connect to."""


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (without IPv6 scope ids)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: IPv4-mapped, 6to4 or NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """A public unicast address: one a request to a stranger's receiver may go to."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public(inner)
    if not address.is_global or address.is_multicast or address.is_reserved:
        return False
    return not any(address in network for network in _NOT_PUBLIC)


def ip_literal(host: str) -> IPAddress | None:
    """The address a host names by itself, in any spelling a resolver or browser accepts
    (``inet_aton``: ``127.1``, ``0x7f000001``, ``017700000001``, ``2130706433``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host or not all(c.isalnum() or c == "." for c in host) or not host[0].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _normalised(host: str) -> str:
    return host.strip().lower().removesuffix(".").removeprefix("[").removesuffix("]")


@dataclass(frozen=True)
class EgressPolicy:
    """``enforced`` off: everything goes (development). Otherwise only public addresses,
    the allow-listed ``networks`` and the allow-listed ``hosts``."""

    enforced: bool = True
    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    resolver: Resolver = field(default=system_resolver, compare=False)
    resolve_timeout_seconds: float = 5.0

    @classmethod
    def from_entries(
        cls, entries: Iterable[str], *, enforced: bool, **options: Any
    ) -> EgressPolicy:
        """An allow-list from ``10.0.0.0/8``, ``192.168.1.20`` or ``hooks.internal`` entries;
        raises ``ValueError`` for an entry that is none of them."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = _normalised(raw)
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if not all(c.isalnum() or c in "-." for c in entry) or entry[0] == "-":
                raise ValueError(f"not a CIDR, an address or a host name: {raw!r}")
            hosts.add(entry)
        return cls(enforced=enforced, networks=tuple(networks), hosts=frozenset(hosts), **options)

    def allows_address(self, address: IPAddress) -> bool:
        if not self.enforced or any(address in network for network in self.networks):
            return True
        return is_public(address)

    def allows_host(self, host: str) -> bool:
        """Allow-listed by name (or as an address in an allowed network): trusted as is."""
        name = _normalised(host)
        if name in self.hosts:
            return True
        literal = ip_literal(name)
        return literal is not None and any(literal in network for network in self.networks)

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for ``host``, every one of them allowed; raises
        ``EgressRefused`` (``Unresolvable`` when there are none)."""
        name = _normalised(host)
        literal = ip_literal(name)
        if literal is not None:
            found: list[IPAddress] = [literal]
        else:
            localhost = name in _LOCALHOST or name.endswith(".localhost")
            if localhost and self.enforced and name not in self.hosts:
                raise EgressRefused("internal_address", "the host names this machine")
            try:
                async with asyncio.timeout(self.resolve_timeout_seconds):
                    raw = await self.resolver(name, port)
            except (OSError, UnicodeError, TimeoutError) as exc:
                raise Unresolvable("unresolvable", "the host does not resolve") from exc
            found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in raw]
            if not found:
                raise Unresolvable("unresolvable", "the host does not resolve")
        trusted = not self.enforced or name in self.hosts
        if not trusted and not all(self.allows_address(a) for a in found):
            raise EgressRefused(
                "internal_address", "the host is, or resolves to, a non-public address"
            )
        return found

    async def check_url(self, url: str, *, https_only: bool = False) -> None:
        """Refuse a URL the policy would not send to (``EgressRefused``). With
        ``https_only``, plain http is refused too, unless the host is allow-listed."""
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise EgressRefused("invalid_url", "not an http(s) URL")
        if not self.enforced:
            return
        if https_only and parts.scheme != "https" and not self.allows_host(host):
            raise EgressRefused("not_https", "must be an https URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise EgressRefused("invalid_url", "the port is not a number") from exc
        await self.addresses(host, port)

    def transport(self, **options: Any) -> httpx.AsyncHTTPTransport:
        """An ``httpx`` transport that connects only where the policy allows, to the very
        address it checked. ``options`` are ``httpx.AsyncHTTPTransport``'s (no proxy)."""
        return _CheckedTransport(self, **options)


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Resolve, check, then connect to an address (not a name): no second lookup."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._policy.addresses(host, port)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # addresses is never empty
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("internal_address", "no unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _CheckedTransport(httpx.AsyncHTTPTransport):
    """``httpx``'s transport over a connection pool whose network backend is checked.

    httpx has no option for a network backend, so the pool it builds is replaced by an
    equal one that has it; httpx's request and error mapping stay as they are.
    """

    def __init__(self, policy: EgressPolicy, **options: Any) -> None:
        if options.get("proxy") is not None or options.get("uds") is not None:
            raise ValueError("a checked transport connects directly")
        options["trust_env"] = False
        super().__init__(**options)
        limits: httpx.Limits = options.get("limits", httpx.Limits())
        verify = options.get("verify", True)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=options.get("http1", True),
            http2=options.get("http2", False),
            retries=options.get("retries", 0),
            network_backend=_CheckedBackend(policy),
        )
