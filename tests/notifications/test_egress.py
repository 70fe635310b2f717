"""Nobody makes the server send a request home: webhook URLs and Web Push endpoints that
are, or come to resolve to, this machine or a private network are refused when
registered and again when delivered, and the local server hears nothing."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sesame.kit.db import write_intent
from sesame.kit.egress import EgressPolicy
from sesame.kit.ids import new_id
from sesame.models import Destination, DestinationKind
from sesame.notifications.service import digest
from sesame.notifications.testing.serving import BackgroundServer
from sesame.runtime import Runtime
from tests.keys.test_keys_e2e import sign_in
from tests.kit.test_egress import LOCAL_SPELLINGS
from tests.notifications.conftest import Providers, notifying
from tests.support import Api, World, eventually, unique_phone


@dataclass
class Dns:
    """A resolver the test steers: what each name answers right now."""

    answers: dict[str, Sequence[str]] = field(default_factory=dict)

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return self.answers[host]


@pytest.fixture
def dns(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Dns:
    """The policy as outside development, on the shared runtime, with a steerable DNS."""
    steered = Dns()
    monkeypatch.setattr(runtime, "egress", EgressPolicy(resolver=steered.resolve))
    return steered


@dataclass
class InternalAdmin:
    """A service on this machine that must never hear from the notification senders."""

    url: str
    port: int
    requests: list[str]


@pytest.fixture
async def internal_admin() -> AsyncIterator[InternalAdmin]:
    seen: list[str] = []

    async def anything(request: Request) -> PlainTextResponse:
        seen.append(str(request.url))
        return PlainTextResponse("reset done")

    server = BackgroundServer(
        Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])])
    )
    url = await server.start()
    yield InternalAdmin(url, int(url.rsplit(":", 1)[1]), seen)
    await server.stop()


async def resident(api: Api, world: World, runtime: Runtime) -> tuple[str, str]:
    """A person living in the world's unit, signed in: (person id, resident token)."""
    admin = world.tokens["partner_admin"]
    phone = unique_phone()
    person = await api.create(
        "/v1/people", admin, {"site_id": world.site_id, "phone": phone, "name": "주민"}
    )
    await api.create(
        "/v1/households",
        admin,
        {"person_id": person["id"], "unit_id": world.ids["unit"], "role": "member"},
    )
    return str(person["id"]), await sign_in(api, runtime, phone)


def as_https(url: str) -> str:
    return "https://" + url.split("://", 1)[1]


async def test_every_local_spelling_is_refused_at_registration(
    api: Api, world: World, runtime: Runtime, dns: Dns, providers: Providers
) -> None:
    """Webhook URLs (created or changed) and push endpoints: a 422 naming the field."""
    dns.answers["home.sesame.test"] = ["127.0.0.1"]
    dns.answers["mixed.sesame.test"] = ["93.184.216.34", "10.0.0.9"]
    admin = world.tokens["partner_admin"]
    _, token = await resident(api, world, runtime)
    keys = providers.push.subscribe().keys
    endpoint = await api.create(
        "/v1/webhook-endpoints", admin, {"url": "https://partner.sesame.test/hooks"}
    )
    urls = [
        *LOCAL_SPELLINGS,
        "https://home.sesame.test/hooks",
        "https://mixed.sesame.test/hooks",
    ]
    for url in urls:
        created = await api.post("/v1/webhook-endpoints", token=admin, json={"url": url})
        changed = await api.patch(
            f"/v1/webhook-endpoints/{endpoint['id']}", token=admin, json={"url": url}
        )
        push = await api.post(
            "/v1/me/notification-destinations",
            token=token,
            json={"kind": "webpush", "endpoint": as_https(url), "keys": keys},
        )
        for response, where in ((created, "url"), (changed, "url"), (push, "endpoint")):
            assert response.status_code == 422, (url, response.text)
            [error] = response.json()["errors"]
            assert (error["path"], error["code"]) == (["body", where], "internal_address"), url
    plain = await api.post(
        "/v1/me/notification-destinations",
        token=token,
        json={"kind": "webpush", "endpoint": "http://93.184.216.34/push/1", "keys": keys},
    )
    assert plain.status_code == 422
    assert plain.json()["errors"][0]["code"] == "not_https"
    kept = await api.get(f"/v1/webhook-endpoints/{endpoint['id']}", token=admin)
    assert kept.json()["url"] == "https://partner.sesame.test/hooks"
    mine = await api.get("/v1/me/notification-destinations", token=token)
    assert mine.json() == []


async def store_directly(runtime: Runtime, person_id: str, endpoint: str, keys: Any) -> None:
    """A subscription that got in anyway: before the check existed, or by another path."""
    with write_intent():
        async with runtime.session_factory() as session:
            session.add(
                Destination(
                    id=new_id(),
                    partner_id=None,
                    person_id=UUID(person_id),
                    kind=DestinationKind.WEBPUSH,
                    address=endpoint,
                    address_digest=digest(endpoint),
                    keys=keys,
                    active=True,
                )
            )
            await session.commit()


async def test_a_resident_cannot_make_the_server_post_to_a_local_server(
    api: Api,
    world: World,
    runtime: Runtime,
    dns: Dns,
    providers: Providers,
    internal_admin: InternalAdmin,
) -> None:
    """The attack as it happened: push endpoints aimed at an internal admin port. Refused
    when registered; and when one got stored anyway, or its name later answers this
    machine, the delivery fails and the admin port receives nothing."""
    person_id, token = await resident(api, world, runtime)
    keys = providers.push.subscribe().keys
    reset = "/internal-admin/reset?all=1"
    direct = await api.post(
        "/v1/me/notification-destinations",
        token=token,
        json={"kind": "webpush", "endpoint": internal_admin.url + reset, "keys": keys},
    )
    assert direct.status_code == 422, direct.text
    dns.answers["push.sesame.test"] = ["93.184.216.34"]  # public when registered
    rebinding = f"https://push.sesame.test:{internal_admin.port}{reset}"
    registered = await api.post(
        "/v1/me/notification-destinations",
        token=token,
        json={"kind": "webpush", "endpoint": rebinding, "keys": keys},
    )
    assert registered.status_code == 201, registered.text
    await store_directly(
        runtime, person_id, f"https://2130706433:{internal_admin.port}{reset}", keys
    )
    await store_directly(runtime, person_id, f"https://127.1:{internal_admin.port}{reset}", keys)

    async with notifying(runtime, providers):
        dns.answers["push.sesame.test"] = ["127.0.0.1"]  # and this machine when sending
        admin = world.tokens["partner_admin"]
        key = await api.create(
            "/v1/keys", admin, {"person_id": person_id, "kind": "staff", "site_id": world.site_id}
        )
        assert (await api.delete(f"/v1/keys/{key['id']}", token=admin)).status_code == 204

        async def settled() -> list[dict[str, Any]] | None:
            page = (await api.get("/v1/me/notifications", token=token)).json()
            pushes = [d for d in page["items"] if d["channel"] == "webpush"]
            done = [d for d in pushes if d["status"] != "queued"]
            return done if len(done) >= 3 and len(done) == len(pushes) else None

        done = await eventually(settled)
    # Each destination fails on its first delivery and is deactivated; a later one for the
    # same destination then finds it inactive.
    assert {d["status"] for d in done} == {"failed"}
    codes = [d["error_code"] for d in done]
    assert set(codes) <= {"internal_address", "destination_inactive"}
    assert codes.count("internal_address") >= 3
    assert internal_admin.requests == []
    destinations = (await api.get("/v1/me/notification-destinations", token=token)).json()
    assert [(d["active"], d["deactivated_reason"]) for d in destinations] == [
        (False, "provider_gone")
    ] * 3


async def test_a_webhook_whose_name_turns_local_fails_without_a_request(
    api: Api,
    world: World,
    runtime: Runtime,
    dns: Dns,
    providers: Providers,
    internal_admin: InternalAdmin,
) -> None:
    """Checked at delivery, not only at registration: the partner's name answering this
    machine (DNS rebinding) fails the delivery instead of reaching the local port."""
    admin = world.tokens["partner_admin"]
    dns.answers["hooks.sesame.test"] = ["93.184.216.34"]
    url = f"https://hooks.sesame.test:{internal_admin.port}/internal-admin/reset"
    await api.create("/v1/webhook-endpoints", admin, {"url": url})
    person_id, _ = await resident(api, world, runtime)
    async with notifying(runtime, providers):
        dns.answers["hooks.sesame.test"] = ["127.0.0.1"]
        await api.create(
            "/v1/keys", admin, {"person_id": person_id, "kind": "staff", "site_id": world.site_id}
        )

        async def failed() -> list[dict[str, Any]] | None:
            page = await api.get(
                "/v1/notifications/deliveries", token=admin, params={"channel": "webhook"}
            )
            items = [d for d in page.json()["items"] if d["status"] != "queued"]
            return items or None

        [delivery, *_] = await eventually(failed)
    assert (delivery["status"], delivery["error_code"]) == ("failed", "internal_address")
    assert internal_admin.requests == []


async def test_the_allow_list_lets_an_operators_internal_receiver_through(
    api: Api, world: World, runtime: Runtime, providers: Providers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the receiver's network allow-listed, the same local URL is accepted and served."""
    allowed = EgressPolicy.from_entries(["127.0.0.0/8"], enforced=True)
    monkeypatch.setattr(runtime, "egress", allowed)
    admin = world.tokens["partner_admin"]
    created = await api.post(
        "/v1/webhook-endpoints", token=admin, json={"url": providers.hooks.url()}
    )
    assert created.status_code == 201, created.text
    refused = await api.post(
        "/v1/webhook-endpoints", token=admin, json={"url": "http://10.0.0.1/hooks"}
    )
    assert refused.status_code == 422
