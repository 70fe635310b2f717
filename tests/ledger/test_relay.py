"""The relay from the outbox to the log: every ledger event is appended exactly once, in
commit order, across failures and with several sequencers; its lag is measured; and the
log refuses to sign a checkpoint over a rewritten history.

Each test gets a database of its own, so that no other sequencer (such as the shared
app's) appends behind its back."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, func, select, update

from sesame.kit.db import write_intent
from sesame.ledger import entries, merkle
from sesame.ledger.repository import LedgerRepository
from sesame.ledger.service import Ledger, LedgerInconsistent
from sesame.models import LedgerCheckpoint, LedgerEntry, LedgerNode, OutboxMessage
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime, build_runtime
from tests.conftest import test_settings
from tests.support import ShiftableClock


@pytest.fixture
def url(own_database_url: str) -> str:
    return own_database_url


@pytest.fixture
async def runtime(url: str) -> AsyncIterator[Runtime]:
    runtime = build_runtime(test_settings(url), clock=ShiftableClock())
    yield runtime
    await runtime.close()


async def emit(runtime: Runtime, *topics: str, commit: bool = True) -> None:
    """One domain transaction that emits ``topics``."""
    with write_intent():
        async with runtime.session_factory() as session:
            await outbox.append(
                session,
                [
                    outbox.message(topic, partner_id=None, aggregate_id=uuid.uuid4(), max_uses=n)
                    for n, topic in enumerate(topics)
                ],
            )
            if commit:
                await session.commit()
            else:
                await session.rollback()


async def stored(runtime: Runtime) -> list[LedgerEntry]:
    async with runtime.read_session_factory() as session:
        return list(await LedgerRepository(session).entries(0, 1_000_000))


async def ledger_topics_in_outbox(runtime: Runtime) -> list[int]:
    async with runtime.read_session_factory() as session:
        rows = await outbox.read_after(session, 0, topics=entries.TOPICS, limit=100_000)
    return [row.id for row in rows]


async def test_each_event_is_appended_once_in_commit_order(runtime: Runtime) -> None:
    await emit(runtime, "key.issued", "device.telemetry", "key.shared")
    await emit(runtime, "doorbell.rang")
    await emit(runtime, "key.revoked", commit=False)  # rolled back: never happened
    await emit(runtime, "pin_code.set", "key.revoked")

    ledger = Ledger(runtime)
    assert [await ledger.append_batch(limit=2) for _ in range(4)] == [2, 2, 0, 0]
    assert await Ledger(runtime).append_batch() == 0  # a restarted process finds nothing new

    rows = await stored(runtime)
    assert [row.idx for row in rows] == [0, 1, 2, 3]
    assert [row.topic for row in rows] == [
        "key.issued",
        "key.shared",
        "pin_code.set",
        "key.revoked",
    ]
    assert [row.outbox_id for row in rows] == await ledger_topics_in_outbox(runtime)
    for row in rows:
        entry = entries.parse(row.body)
        assert entry["index"] == row.idx
        assert entries.signature_ok(entry, (await ledger.published()).verifier)
        assert row.leaf_hash == merkle.leaf_hash(row.body)
    # The stored full nodes give the root of the entries as they are.
    fresh = Ledger(runtime)
    assert await fresh.synced() == 4
    assert fresh.tree.root(4) == merkle.root_of([merkle.leaf_hash(row.body) for row in rows])


async def test_a_failure_mid_append_appends_nothing_and_the_next_step_everything(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await emit(runtime, "key.issued", "key.used", "key.revoked")
    ledger = Ledger(runtime)
    real = LedgerRepository.add_nodes

    async def crash(self: LedgerRepository, nodes: object) -> None:
        raise ConnectionError("the database went away mid-transaction")

    monkeypatch.setattr(LedgerRepository, "add_nodes", crash)
    with pytest.raises(ConnectionError):
        await ledger.append_batch()
    assert await stored(runtime) == []
    assert ledger.tree.size == 0  # the in-memory tree was rolled back with the transaction
    async with runtime.read_session_factory() as session:
        assert (await LedgerRepository(session).state()).outbox_cursor == 0

    monkeypatch.setattr(LedgerRepository, "add_nodes", real)
    assert await ledger.append_batch() == 3
    rows = await stored(runtime)
    assert [row.topic for row in rows] == ["key.issued", "key.used", "key.revoked"]
    assert [row.outbox_id for row in rows] == await ledger_topics_in_outbox(runtime)


async def test_two_sequencers_with_writers_append_everything_exactly_once(url: str) -> None:
    runtimes = [build_runtime(test_settings(url)) for _ in range(3)]
    writer, *sequencers = runtimes
    ledgers = [Ledger(r) for r in sequencers]
    done = asyncio.Event()

    async def write() -> None:
        for _ in range(40):
            await emit(writer, "key.issued", "device.telemetry", "key.used")
        done.set()

    async def sequence(ledger: Ledger) -> int:
        appended = 0
        while True:
            finished = done.is_set()
            count = await ledger.append_batch(limit=7)
            appended += count
            if finished and count == 0:
                return appended
            await asyncio.sleep(0)

    try:
        _, first, second = await asyncio.gather(write(), *(sequence(x) for x in ledgers))
        rows = await stored(writer)
        assert first + second == 80 == len(rows)
        assert [row.idx for row in rows] == list(range(80))
        assert [row.outbox_id for row in rows] == await ledger_topics_in_outbox(writer)
    finally:
        for r in runtimes:
            await r.close()


async def test_the_relays_lag_is_a_metric(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, ShiftableClock)
    ledger = Ledger(runtime)
    await emit(runtime, "key.issued")
    clock.advance(timedelta(seconds=42))
    await ledger.measure_lag()
    assert REGISTRY.get_sample_value("sesame_ledger_lag_seconds") >= 42
    appended_before = REGISTRY.get_sample_value("sesame_ledger_entries_appended_total")
    assert await ledger.append_batch() == 1
    assert REGISTRY.get_sample_value("sesame_ledger_lag_seconds") == 0
    assert REGISTRY.get_sample_value("sesame_ledger_entries_appended_total") == appended_before + 1
    assert REGISTRY.get_sample_value("sesame_ledger_size") == 1


async def rewrite_history(runtime: Runtime, index: int) -> None:
    """What an operator with database access and the log's key would do to change the
    past: re-sign one entry differently and recompute every stored node to match."""
    ledger = Ledger(runtime)
    signer = await ledger.signer()
    rows = await stored(runtime)
    entry = entries.parse(rows[index].body)
    del entry["sig"], entry["index"]
    entry["data"] = {**entry["data"], "n": 99}
    forged = entries.seal(entry, index, entries.sign(entry, signer), signer.verifier)
    tree = merkle.Tree()
    created = tree.append(
        merkle.leaf_hash(forged if row.idx == index else row.body) for row in rows
    )
    with write_intent():
        async with runtime.session_factory() as session:
            await session.execute(
                update(LedgerEntry)
                .where(LedgerEntry.idx == index)
                .values(body=forged, leaf_hash=merkle.leaf_hash(forged))
            )
            await session.execute(delete(LedgerNode))
            await LedgerRepository(session).add_nodes(created)
            await session.commit()


async def test_a_checkpoint_over_a_rewritten_history_is_refused(runtime: Runtime) -> None:
    await emit(runtime, "key.issued", "key.used", "key.used", "key.revoked")
    ledger = Ledger(runtime)
    assert await ledger.append_batch() == 4
    first = await ledger.checkpoint()
    assert first is not None
    assert first.size == 4
    assert await ledger.checkpoint() is None  # nothing new, nothing signed

    await rewrite_history(runtime, index=1)
    await emit(runtime, "key.issued")
    restarted = Ledger(runtime)  # a process that reads the tree from the database
    assert await restarted.append_batch() == 1
    refused_before = REGISTRY.get_sample_value("sesame_ledger_inconsistent_total") or 0
    with pytest.raises(LedgerInconsistent, match="does not extend the signed checkpoint of 4"):
        await restarted.checkpoint()
    assert REGISTRY.get_sample_value("sesame_ledger_inconsistent_total") == refused_before + 1
    async with runtime.read_session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(LedgerCheckpoint)) == 1
    served = await restarted.served_checkpoint()
    assert served is not None
    assert served.split("\n")[1] == "4"


async def test_events_signed_as_they_commit_are_appended_with_that_signature(
    runtime: Runtime,
) -> None:
    ledger = Ledger(runtime)
    verifier = (await ledger.published()).verifier
    outbox.set_sealer(runtime.engine, ledger.seal_row)
    try:
        await emit(runtime, "key.issued", "device.telemetry", "key.used")
    finally:
        outbox.set_sealer(runtime.engine, None)
    await emit(runtime, "key.revoked")  # committed by a process without the ledger
    async with runtime.read_session_factory() as session:
        rows = await outbox.read_after(session, 0, limit=10)
    assert [row.seal is not None for row in rows] == [True, False, True, False]

    # What is logged is what was signed at commit, whatever happens to the row later.
    with write_intent():
        async with runtime.session_factory() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == rows[2].id)
                .values(payload={**rows[2].payload, "max_uses": 7})
            )
            await session.commit()
    assert await ledger.append_batch() == 3
    stored_rows = await stored(runtime)
    for row in stored_rows:
        assert entries.signature_ok(entries.parse(row.body), verifier)
    assert [row.topic for row in stored_rows] == ["key.issued", "key.used", "key.revoked"]
    used = entries.parse(stored_rows[1].body)
    assert base64.b64decode(used["sig"]["ed25519"]) == rows[2].seal[:64]
    assert used["data"]["max_uses"] == 2
    assert used["at"] == entries.timestamp(rows[2].created_at)
