"""The egress policy: no spelling of a local address gets through, a name passes only if
every address it has does, and the transport connects to the very address it checked."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sesame.kit.egress import EgressPolicy, EgressRefused, Unresolvable
from sesame.notifications.testing.serving import BackgroundServer

LOCAL_SPELLINGS = (
    "http://127.0.0.1/",
    "http://2130706433/",  # decimal
    "http://0x7f000001/",  # hex
    "http://0x7f.1/",
    "http://127.1/",  # shortened
    "http://0177.0.0.1/",  # octal
    "http://017700000001/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://admin.localhost/",
    "http://0/",
    "http://0.0.0.0/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://224.0.0.1/",  # multicast
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[2002:7f00:1::]/",  # 6to4 around 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 around 169.254.169.254
    "http://[64:ff9b:1::1]/",  # NAT64, local use
    "http://[2001::1]/",  # Teredo
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
)


def resolving(answers: dict[str, Sequence[str]]) -> EgressPolicy:
    async def resolver(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return answers[host]

    return EgressPolicy(resolver=resolver)


@pytest.mark.parametrize("url", LOCAL_SPELLINGS)
async def test_every_spelling_of_a_local_address_is_refused(url: str) -> None:
    """Decimal, hex, octal, short IPv4, localhost names and IPv6 wrappers all stay home."""
    with pytest.raises(EgressRefused) as refused:
        await EgressPolicy().check_url(url)
    assert refused.value.reason == "internal_address"


async def test_public_addresses_pass_even_inside_ipv6_wrappers() -> None:
    """What wraps a public IPv4 address (6to4, NAT64) is as public as it."""
    policy = EgressPolicy()
    for url in (
        "https://93.184.216.34/h",
        "https://[2606:4700::1111]/h",
        "https://[2002:5db8:d822::1]/h",
        "https://[64:ff9b::5db8:d822]/h",
    ):
        await policy.check_url(url, https_only=True)


async def test_a_name_passes_only_if_every_address_it_has_is_public() -> None:
    """One private address among public ones is enough to refuse the name."""
    policy = resolving(
        {"mixed.test": ["93.184.216.34", "10.0.0.7"], "fine.test": ["93.184.216.34"]}
    )
    with pytest.raises(EgressRefused) as refused:
        await policy.check_url("https://mixed.test/h")
    assert refused.value.reason == "internal_address"
    await policy.check_url("https://fine.test/h")
    with pytest.raises(Unresolvable):
        await policy.check_url("https://nowhere.test/h")


async def test_https_only_refuses_plain_http_unless_allow_listed() -> None:
    policy = EgressPolicy.from_entries(["10.20.0.0/16", "push.internal"], enforced=True)
    with pytest.raises(EgressRefused) as refused:
        await policy.check_url("http://93.184.216.34/push", https_only=True)
    assert refused.value.reason == "not_https"
    await policy.check_url("http://10.20.3.4/push", https_only=True)


async def test_the_allow_list_admits_networks_and_names_and_refuses_typos() -> None:
    """An operator's internal receivers pass; everything else internal still does not."""
    policy = EgressPolicy.from_entries(
        ["10.20.0.0/16", " 192.168.5.9 ", "Hooks.Internal."], enforced=True
    )
    assert policy.allows_host("hooks.internal")
    await policy.check_url("http://10.20.3.4/h")
    await policy.check_url("http://192.168.5.9/h")
    with pytest.raises(EgressRefused):
        await policy.check_url("http://10.21.0.1/h")
    with pytest.raises(EgressRefused):
        await policy.check_url("http://127.0.0.1/h")
    with pytest.raises(ValueError, match="not a CIDR"):
        EgressPolicy.from_entries(["10.0.0.0/8", "not a host!"], enforced=True)


async def test_off_it_lets_everything_through() -> None:
    """Development: the stand-ins on this machine are reachable without configuration."""
    await EgressPolicy(enforced=False).check_url("http://127.0.0.1:9/h", https_only=True)


@pytest.fixture
async def local_server() -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP server on this machine that records every request it receives."""
    seen: list[str] = []

    async def anything(request: Request) -> PlainTextResponse:
        seen.append(request.url.path)
        return PlainTextResponse("ok")

    server = BackgroundServer(
        Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])])
    )
    url = await server.start()
    yield url, seen
    await server.stop()


async def test_the_transport_refuses_a_name_that_now_resolves_home(
    local_server: tuple[str, list[str]],
) -> None:
    """DNS rebinding: whatever the name said before, at connection time it answers this
    machine, and no request leaves."""
    url, seen = local_server
    port = url.rsplit(":", 1)[1]
    policy = resolving({"rebound.test": ["127.0.0.1"]})
    async with httpx.AsyncClient(transport=policy.transport()) as client:
        for target in (
            f"http://rebound.test:{port}/reset",
            f"{url}/reset",
            f"http://127.1:{port}/",
        ):
            with pytest.raises(EgressRefused):
                await client.post(target)
    assert seen == []


async def test_the_transport_connects_to_the_address_it_checked(
    local_server: tuple[str, list[str]],
) -> None:
    """The connection goes to the policy's own answer: the system resolver has never
    heard of this name, so a second lookup would have failed."""
    url, seen = local_server
    port = url.rsplit(":", 1)[1]

    async def resolver(host: str, port: int) -> Sequence[str]:
        return ["127.0.0.1"] if host == "receiver.test" else []

    policy = EgressPolicy.from_entries(["127.0.0.1"], enforced=True, resolver=resolver)
    async with httpx.AsyncClient(transport=policy.transport()) as client:
        response = await client.post(f"http://receiver.test:{port}/fine")
    assert response.status_code == 200
    assert seen == ["/fine"]
