"""A resident key's whole life — issued at move-in, used at the entrance, revoked at
move-out — in the ledger, with receipts that the holder and the partner can verify."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from sesame.ledger import entries, merkle
from sesame.ledger.note import Verifier, open_checkpoint
from tests.device_fixtures import Fleet
from tests.keys.test_keys_e2e import resident_key, resident_token
from tests.ledger.test_ledger_api import receipts_for


async def test_issued_used_and_revoked_each_have_a_receipt(fleet: Fleet) -> None:
    await fleet.run("entrance_reader")
    api, world = fleet.api, fleet.world
    admin = world.tokens["partner_admin"]
    holder = await resident_token(api, fleet.runtime, world, world.ids["person"])
    key = await resident_key(fleet)
    opened = await api.post(
        f"/v1/entrances/{world.ids['entrance']}/open", token=holder, params={"wait": 5}
    )
    assert opened.status_code == 201, opened.text
    moved = await api.patch(
        f"/v1/households/{world.ids['household']}",
        token=world.tokens["site_manager"],
        json={"move_out_on": datetime.now(UTC).date().isoformat()},
    )
    assert moved.status_code == 200

    log_key = Verifier.parse((await api.get("/v1/ledger", token=admin)).json()["log_key"])
    body = await receipts_for(api, admin, key["id"], 3)
    checkpoint, _ = open_checkpoint(body["checkpoint"], log_key)
    lives = []
    for receipt in body["receipts"]:
        raw = base64.b64decode(receipt["entry"]["body"])
        entry = entries.parse(raw)
        assert entries.signature_ok(entry, log_key)
        proof = receipt["proof"]
        hashes = [base64.b64decode(h) for h in proof["hashes"]]
        assert merkle.verify_inclusion(
            merkle.leaf_hash(raw), proof["leaf_index"], checkpoint.size, hashes, checkpoint.root
        )
        lives.append(entry)
    assert [e["type"] for e in lives] == ["key.issued", "key.used", "key.revoked"]
    issued, used, revoked = lives
    assert used["actor"] == {"kind": "resident", "person": world.ids["person"]}
    assert used["data"]["method"] == "remote"
    assert used["data"]["entrance_id_used"] == world.ids["entrance"]
    assert used["data"]["action_attempt_id"] == opened.json()["id"]
    assert revoked["data"]["reason"] == "moved_out"
    assert issued["index"] < used["index"] < revoked["index"]
    # No names or phone numbers: only opaque identifiers.
    for entry in lives:
        text = entries.canonical(entry).decode()
        assert "phone" not in text
        assert "+82" not in text  # Korean phone numbers, the residents' sign-in ids

    # The holder sees the same receipts for their own key.
    mine = await api.get(f"/v1/me/keys/{key['id']}/receipts", token=holder)
    assert mine.status_code == 200
    assert [r["entry"]["entry"]["type"] for r in mine.json()["receipts"]][:3] == [
        "key.issued",
        "key.used",
        "key.revoked",
    ]
