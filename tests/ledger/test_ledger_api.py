"""The ledger through its API: a key's life appears in it, with receipts that verify
against the signed checkpoint using nothing but the log's published key."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx

from sesame.app import create_app
from sesame.ledger import entries, merkle
from sesame.ledger.note import Verifier, open_checkpoint
from sesame.ledger.service import Ledger
from sesame.runtime import Runtime, build_runtime
from tests.conftest import test_settings
from tests.support import Api, World


async def wait_for_checkpoint(api: Api, token: str, size: int) -> str:
    """The served checkpoint once it covers at least ``size`` entries."""
    for _ in range(100):
        response = await api.get("/v1/ledger/checkpoint", token=token)
        if response.status_code == 200:
            note = response.text
            if int(note.split("\n")[1]) >= size:
                return note
        await asyncio.sleep(0.1)
    raise AssertionError("no checkpoint covering the entries")


async def receipts_for(api: Api, token: str, key_id: str, count: int) -> dict[str, Any]:
    for _ in range(100):
        body = (await api.get(f"/v1/keys/{key_id}/receipts", token=token)).json()
        proven = [r for r in body["receipts"] if r["proof"] is not None]
        if len(proven) >= count:
            return dict(body)
        await asyncio.sleep(0.1)
    raise AssertionError(f"receipts for {key_id} never arrived: {body}")


async def test_a_keys_life_is_in_the_ledger_with_receipts(
    api: Api, world: World, runtime: Runtime
) -> None:
    token = world.tokens["partner_admin"]
    info = (await api.get("/v1/ledger", token=token)).json()
    log_key = Verifier.parse(info["log_key"])
    assert log_key.name == info["origin"]

    key = await api.create(
        "/v1/keys",
        token,
        {
            "person_id": world.ids["person"],
            "kind": "courier",
            "carrier": "CJ Logistics",
            "building_id": world.ids["building"],
        },
    )
    assert (await api.delete(f"/v1/keys/{key['id']}", token=token)).status_code == 204

    body = await receipts_for(api, token, key["id"], 2)
    checkpoint, cosigned = open_checkpoint(body["checkpoint"], log_key)
    assert cosigned == []  # no witnesses configured here
    types = []
    for receipt in body["receipts"]:
        raw = base64.b64decode(receipt["entry"]["body"])
        entry = entries.parse(raw)
        assert entry == receipt["entry"]["entry"]
        assert entries.signature_ok(entry, log_key)
        assert entry["subject"] == {"key": key["id"]}
        proof = receipt["proof"]
        assert proof["tree_size"] == checkpoint.size
        assert merkle.verify_inclusion(
            merkle.leaf_hash(raw),
            proof["leaf_index"],
            proof["tree_size"],
            [base64.b64decode(h) for h in proof["hashes"]],
            checkpoint.root,
        )
        types.append(entry["type"])
    assert types[:2] == ["key.issued", "key.revoked"]
    issued = entries.parse(base64.b64decode(body["receipts"][0]["entry"]["body"]))
    assert issued["actor"]["kind"] == "staff"
    assert issued["actor"]["role"] == "partner_admin"
    assert issued["partner"] == world.partner_id


async def test_another_partners_key_has_no_receipts(
    api: Api, world: World, other_world: World
) -> None:
    key = await api.create(
        "/v1/keys",
        world.tokens["partner_admin"],
        {
            "person_id": world.ids["person"],
            "kind": "courier",
            "carrier": "CJ Logistics",
            "building_id": world.ids["building"],
        },
    )
    response = await api.get(
        f"/v1/keys/{key['id']}/receipts", token=other_world.tokens["partner_admin"]
    )
    assert response.status_code == 404


async def test_the_ledger_is_readable_by_whom_the_operator_chooses(
    api: Api, world: World, database_url: str
) -> None:
    # Authenticated (the default): nobody anonymous, anyone signed in.
    assert (await api.get("/v1/ledger/checkpoint")).status_code == 401
    assert (await api.get("/v1/ledger/entries", params={"start": 0, "end": 1})).status_code == 401
    signed_in = await api.get("/v1/ledger", token=world.tokens["partner_admin"])
    assert signed_in.status_code == 200

    # Public: a second server on the same database, configured so, answers anyone.
    public = build_runtime(test_settings(database_url, ledger_access="public"))
    try:
        public.ledger = Ledger(public)
        transport = httpx.ASGITransport(app=create_app(runtime=public))
        async with httpx.AsyncClient(transport=transport, base_url="http://sesame.test") as client:
            anonymous = await client.get("/v1/ledger")
            assert anonymous.status_code == 200
            assert anonymous.json()["log_key"] == signed_in.json()["log_key"]
            entries_page = await client.get("/v1/ledger/entries", params={"start": 0, "end": 1})
            assert entries_page.status_code == 200
            # Receipts stay with the key's own readers, whatever the ledger's access.
            key_id = "00000000-0000-0000-0000-000000000001"
            assert (await client.get(f"/v1/keys/{key_id}/receipts")).status_code == 401
    finally:
        await public.close()
