"""When checkpoints are signed and cosigned: as soon as entries are appended, at most once
per interval; cosigning beside sealing, so a slow witness does not hold up the next
checkpoint; and any number of sealers sign one consistent sequence of checkpoints.

Time is a ``FrozenClock`` the tests move, and a witness is slow because a test holds its
answer back, so nothing here depends on how fast the machine is. Each test gets a
database of its own, so that no other process's ledger signs behind its back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from sesame.kit.clock import Clock, FrozenClock
from sesame.kit.db import write_intent
from sesame.ledger import merkle
from sesame.ledger.note import Verifier
from sesame.ledger.repository import LedgerRepository
from sesame.ledger.service import Ledger, next_due
from sesame.ledger.witness import Witness, create_app, generate_key, load_signer, trusted_logs
from sesame.ledger.witnesses import WitnessPool
from sesame.models import LedgerCheckpoint
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime, build_runtime
from tests.conftest import test_settings
from tests.support import ShiftableClock, eventually

INTERVAL = 60.0  # seconds; with a frozen clock, only the test moves time on
START = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)


@pytest.fixture
def url(own_database_url: str) -> str:
    return own_database_url


class Witnesses(httpx.AsyncBaseTransport):
    """In-process tlog-witnesses, one per host name, each of which can be held: a held
    witness takes requests and answers none until it is released."""

    def __init__(self, tmp_path: Path, names: list[str]) -> None:
        self.signers = {name: load_signer(generate_key(f"{name}.test/witness")) for name in names}
        self._path = tmp_path
        self._apps: dict[str, httpx.ASGITransport] = {}
        self._open = {name: asyncio.Event() for name in names}
        for gate in self._open.values():
            gate.set()
        self.waiting = dict.fromkeys(names, 0)
        self.sizes: dict[str, list[int]] = {name: [] for name in names}  # sizes offered
        self.down: set[str] = set()  # witnesses that do not answer at all
        self.witness: dict[str, Witness] = {}

    def settings(self) -> list[dict[str, str]]:
        return [
            {"url": f"http://{name}", "vkey": signer.verifier.vkey}
            for name, signer in self.signers.items()
        ]

    def signers_names(self) -> set[str]:
        return {signer.name for signer in self.signers.values()}

    def trust(self, log_key: Verifier) -> None:
        """Start the witnesses, trusting the log's key."""
        for name, signer in self.signers.items():
            self.witness[name] = Witness(
                signer, trusted_logs([log_key.vkey]), self._path / f"{name}.sqlite"
            )
            self._apps[name] = httpx.ASGITransport(app=create_app(self.witness[name]))

    def hold(self, name: str) -> None:
        self._open[name].clear()

    def release(self, name: str) -> None:
        self._open[name].set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = request.url.host
        body = await request.aread()
        self.sizes[name].append(int(body.split(b"\n\n", 1)[1].split(b"\n")[1]))
        if name in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        self.waiting[name] += 1
        try:
            await self._open[name].wait()
        finally:
            self.waiting[name] -= 1
        return await self._apps[name].handle_async_request(request)


def settings_for(url: str, witnesses: Witnesses | None = None, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "ledger_checkpoint_interval_seconds": INTERVAL,
        "ledger_witnesses": witnesses.settings() if witnesses else [],
        "ledger_witness_timeout_seconds": 60,
    }
    return test_settings(url, **{**values, **overrides})


async def start(
    url: str, clock: Clock, witnesses: Witnesses | None = None, **overrides: Any
) -> tuple[Runtime, Ledger]:
    runtime = build_runtime(settings_for(url, witnesses, **overrides), clock=clock)
    ledger = Ledger(runtime)
    if witnesses is not None:
        witnesses.trust((await ledger.published()).verifier)
        ledger.witnesses = WitnessPool(runtime.settings, transport=witnesses)
    return runtime, ledger


@contextlib.asynccontextmanager
async def running(*ledgers: Ledger) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(ledger.run()) for ledger in ledgers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for ledger in ledgers:
            await ledger.witnesses.close()
            await ledger.runtime.close()


async def emit(runtime: Runtime, *ledgers: Ledger, count: int = 1) -> None:
    """A key operation that commits ``count`` ledger events, and what its commit tells
    the ledgers of the process (``sesame.ledger.install``)."""
    with write_intent():
        async with runtime.session_factory() as session:
            await outbox.append(
                session,
                [
                    outbox.message("key.issued", partner_id=None, aggregate_id=uuid.uuid4())
                    for _ in range(count)
                ],
            )
            await session.commit()
    for ledger in ledgers:
        ledger.committed()


async def checkpoints(runtime: Runtime) -> list[LedgerCheckpoint]:
    async with runtime.read_session_factory() as session:
        found = await session.scalars(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size))
        return list(found)


def sized(runtime: Runtime, size: int) -> Callable[[], Any]:
    """A check for ``eventually``: the checkpoint of ``size`` entries, once signed."""

    async def check() -> LedgerCheckpoint | None:
        async with runtime.read_session_factory() as session:
            return await LedgerRepository(session).checkpoint(size)

    return check


def served(ledger: Ledger, size: int) -> Callable[[], Any]:
    """A check for ``eventually``: the served checkpoint covers ``size`` entries."""

    async def check() -> bool:
        note = await ledger.served_checkpoint()
        return note is not None and int(note.split("\n")[1]) == size

    return check


def test_the_next_checkpoint_is_due_an_interval_after_the_last() -> None:
    """Due at once without a checkpoint, an interval after the last one, and at once if
    the last one is in the future (a clock set back must not stop checkpoints)."""
    assert next_due(None, INTERVAL, START) == START
    last = START - timedelta(seconds=10)
    assert next_due(last, INTERVAL, START) == last + timedelta(seconds=INTERVAL)
    assert next_due(START + timedelta(hours=1), INTERVAL, START) == START


async def test_a_checkpoint_follows_an_append_as_soon_as_the_interval_allows(url: str) -> None:
    """The first entry is checkpointed at once; the next one exactly when the interval
    since the last checkpoint has passed, not an interval after that; and an entry after a
    quiet spell at once."""
    clock = FrozenClock(START)
    runtime, ledger = await start(url, clock)
    async with running(ledger):
        await emit(runtime, ledger)
        first = await eventually(sized(runtime, 1))
        assert first.created_at == START

        clock.advance(INTERVAL / 3)
        await emit(runtime, ledger)
        due = START + timedelta(seconds=INTERVAL)
        await eventually(lambda: ledger.next_checkpoint_at == due)
        assert await sized(runtime, 2)() is None  # the sealer waits for the interval

        clock.set(due)
        ledger.poke()  # what the sealer's own timer does when the interval is up
        second = await eventually(sized(runtime, 2))
        assert second.created_at == due

        clock.advance(10 * INTERVAL)  # quiet: nothing to sign for a while
        await emit(runtime, ledger)
        third = await eventually(sized(runtime, 3))
        assert third.created_at == due + timedelta(seconds=10 * INTERVAL)


async def test_a_slow_witness_does_not_delay_the_next_checkpoint(url: str, tmp_path: Path) -> None:
    """While one witness sits on its answer, the next checkpoint is signed on time; once it
    answers, the newest checkpoint is the one cosigned and served."""
    clock = FrozenClock(START)
    witnesses = Witnesses(tmp_path, ["w1", "w2"])
    runtime, ledger = await start(url, clock, witnesses)  # quorum: both
    witnesses.hold("w2")
    async with running(ledger):
        await emit(runtime, ledger)
        await eventually(lambda: witnesses.waiting["w2"] == 1)
        assert await ledger.served_checkpoint() is None

        clock.advance(INTERVAL)
        await emit(runtime, ledger)
        second = await eventually(sized(runtime, 2))
        assert second.created_at == START + timedelta(seconds=INTERVAL)
        assert witnesses.waiting["w2"] == 1  # still answering the first

        witnesses.release("w2")
        await eventually(served(ledger, 2))
    origin = second.note.split("\n")[0]
    for name, witness in witnesses.witness.items():
        head = witness.latest(origin)
        assert head is not None
        assert head.size == 2
        assert witnesses.sizes[name] == [1, 2]  # each checkpoint once, in order


async def test_two_sealers_never_sign_conflicting_checkpoints(url: str, tmp_path: Path) -> None:
    """Two processes sealing and cosigning the same log at the shortest interval sign one
    sequence of checkpoints, each extending the one before, at most one per interval,
    and the witness never sees a fork or a bad proof."""
    interval = 0.05
    witnesses = Witnesses(tmp_path, ["w1"])
    first = await start(
        url, ShiftableClock(), witnesses, ledger_checkpoint_interval_seconds=interval
    )
    second = build_runtime(
        settings_for(url, witnesses, ledger_checkpoint_interval_seconds=interval),
        clock=ShiftableClock(),
    )
    other = Ledger(second)
    other.witnesses = WitnessPool(second.settings, transport=witnesses)
    runtime, ledger = first
    async with running(ledger, other):
        for n in range(30):
            await emit(runtime if n % 2 else second, ledger, other, count=1 + n % 3)
            await asyncio.sleep(0)
        total = sum(1 + n % 3 for n in range(30))
        await eventually(served(ledger, total))
        signed = await checkpoints(runtime)
        async with runtime.read_session_factory() as session:
            bodies = [e.body for e in await LedgerRepository(session).entries(0, total)]
    tree = merkle.Tree()
    tree.append(merkle.leaf_hash(body) for body in bodies)
    assert [c.size for c in signed] == sorted({c.size for c in signed})
    assert signed[-1].size == total
    for checkpoint in signed:
        assert checkpoint.root == tree.root(checkpoint.size)  # one history, no fork
    for earlier, later in itertools.pairwise(signed):
        assert later.created_at - earlier.created_at >= timedelta(seconds=interval)
    origin = signed[-1].note.split("\n")[0]
    head = witnesses.witness["w1"].latest(origin)
    assert head is not None
    assert head.size == total
    assert witnesses.witness["w1"].refusals(origin) == []


async def test_a_checkpoint_a_newer_one_replaced_is_not_offered_again(
    url: str, tmp_path: Path
) -> None:
    """A process whose checkpoint fell short of its quorum retries the newest checkpoint,
    not its own stale one: when another process's newer checkpoint is already cosigned,
    there is nothing to retry."""
    clock = FrozenClock(START)
    witnesses = Witnesses(tmp_path, ["w1"])
    runtime, ledger = await start(url, clock, witnesses)
    _, other = await start(url, clock, witnesses)  # a second process on the same log
    try:
        witnesses.down.add("w1")
        await emit(runtime)
        assert await ledger.append_batch() == 1
        assert (await ledger.checkpoint()) is not None
        assert await ledger.cosign_newest() is False  # the witness is down
        assert await other.cosign_newest() is None  # not the other process's to ask for

        witnesses.down.clear()
        await emit(runtime)
        assert await other.append_batch() == 1
        assert (await other.checkpoint()) is not None
        assert await other.cosign_newest() is True
        assert await ledger.cosign_newest(retry=True) is None
        assert witnesses.sizes["w1"] == [1, 2]  # checkpoint 1 was never offered again
        assert await served(ledger, 2)()
    finally:
        for each in (ledger, other):
            await each.witnesses.close()
            await each.runtime.close()


async def test_a_checkpoint_its_process_left_uncosigned_is_picked_up(
    url: str, tmp_path: Path
) -> None:
    """A checkpoint lacking its quorum is another process's to ask for only once its own
    process has had time to (it seems gone), or when a process starts."""
    clock = FrozenClock(START)
    witnesses = Witnesses(tmp_path, ["w1"])
    runtime, ledger = await start(url, clock, witnesses)
    _, other = await start(url, clock, witnesses)  # a second process on the same log
    try:
        await emit(runtime)
        assert await ledger.append_batch() == 1
        assert (await ledger.checkpoint()) is not None  # and its process stops here
        assert await other.cosign_newest() is None
        assert await other.cosign_newest(adopt=True) is True  # as on start-up
        await emit(runtime)
        assert await ledger.append_batch() == 1
        assert (await ledger.checkpoint()) is not None
        clock.advance(2 * other.runtime.settings.ledger_witness_timeout_seconds + INTERVAL)
        assert await other.cosign_newest() is True
        assert await served(other, 2)()
    finally:
        for each in (ledger, other):
            await each.witnesses.close()
            await each.runtime.close()


async def test_a_witness_slower_than_the_quorum_delays_nothing(url: str, tmp_path: Path) -> None:
    """With two of three witnesses enough, a checkpoint is served once two have cosigned;
    the third's cosignature is added when it comes."""
    clock = FrozenClock(START)
    witnesses = Witnesses(tmp_path, ["w1", "w2", "w3"])
    runtime, ledger = await start(url, clock, witnesses)  # quorum: a majority
    witnesses.hold("w3")
    async with running(ledger):
        await emit(runtime, ledger)
        await eventually(served(ledger, 1))
        first = await sized(runtime, 1)()
        assert first.cosigners == 2
        assert witnesses.waiting["w3"] == 1

        witnesses.release("w3")
        await eventually(lambda: _cosigners(runtime, 1, 3))
        note = await ledger.served_checkpoint()
        assert note is not None
        names = {line.split(" ")[1] for line in note.split("\n\n", 1)[1].splitlines()}
        assert names == {first.note.split("\n")[0], *witnesses.signers_names()}


async def _cosigners(runtime: Runtime, size: int, count: int) -> bool:
    checkpoint = await sized(runtime, size)()
    return checkpoint is not None and checkpoint.cosigners == count
