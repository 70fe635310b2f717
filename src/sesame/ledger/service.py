"""The log: its key, the sequencer that appends from the outbox, checkpoints and proofs.

- **Appending.** Any process may run the sequencer; one at a time does (a transaction
  advisory lock on PostgreSQL, the write lock on SQLite). Each step reads ledger events
  from the outbox after the stored cursor — in commit order, see ``sesame.outbox`` — signs
  and hashes them, and in *one* transaction inserts the entries, the new full nodes and
  the new cursor. A crash before the commit appends nothing; after it, everything; the
  outbox id is unique among entries, so nothing is appended twice.
- **Checkpoints.** As soon as the tree has grown, and at most once per
  ``SESAME_LEDGER_CHECKPOINT_INTERVAL_SECONDS`` across all processes, the new root is
  signed — only after a consistency proof from the last signed checkpoint, computed from
  the stored nodes, verifies against that checkpoint's root. A tree rewritten under the
  log is thereby refused instead of signed. Witnesses are then asked to cosign, beside
  the signing of the next checkpoint (see ``Ledger.run`` for the latency this gives).
- **Proofs** come from the full nodes held in memory by every serving process and
  brought up to date from the database on demand.

The ledger never blocks key operations: they only write outbox rows; if the ledger's
work fails it is logged, counted and retried, and the rows wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from prometheus_client import Counter, Gauge, Histogram

from sesame.kit.db import write_intent
from sesame.kit.logging import get_logger
from sesame.kit.loop import keep_running, woken_within
from sesame.kit.retry import backoff_delay
from sesame.ledger import entries, merkle
from sesame.ledger.note import Checkpoint, Signer, Verifier, sign_checkpoint
from sesame.ledger.repository import LedgerRepository
from sesame.ledger.witnesses import Outcome, WitnessPool
from sesame.models import LedgerCheckpoint, LedgerKey
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime

log = get_logger("sesame.ledger")

SIGNATURE_SIZE = 64  # Ed25519
SEQUENCER_LOCK = 0x5E5A_1ED6  # pg advisory lock keys: "sesame ledger"
CHECKPOINT_LOCK = 0x5E5A_1ED7
POLL_SECONDS = 0.2  # for what other processes did; this process's own work wakes at once
APPEND_SETTLE_SECONDS = 0.1  # after a wake: one step for the burst, not one per commit

APPENDED = Counter("sesame_ledger_entries_appended_total", "Entries appended to the ledger")
LAG = Gauge(
    "sesame_ledger_lag_seconds",
    "Age of the oldest ledger event not yet appended (0 when caught up)",
    multiprocess_mode="livemax",
)
SIZE = Gauge("sesame_ledger_size", "Entries in the ledger", multiprocess_mode="livemax")
FAILURES = Counter("sesame_ledger_failures_total", "Ledger work that failed", ["stage"])
REFUSED = Counter(
    "sesame_ledger_inconsistent_total",
    "Checkpoints refused because the stored tree no longer extends the last signed one",
)


SPACING = Histogram(
    "sesame_ledger_checkpoint_spacing_seconds",
    "Time from one signed checkpoint to the next (at least the configured interval)",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0, 60.0, 600.0),
)
COSIGNED = Histogram(
    "sesame_ledger_cosigned_seconds",
    "Time from signing a checkpoint to its quorum of cosignatures",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0),
)


class LedgerInconsistent(RuntimeError):
    """The stored tree does not extend the last signed checkpoint: it was rewritten."""


@dataclass(frozen=True)
class Published:
    """What outsiders need to check the log."""

    origin: str
    verifier: Verifier


class Ledger:
    """One per process: the in-memory tree and the log's signer."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.tree = merkle.Tree()
        self._tree_lock = asyncio.Lock()
        # The ledger's own write transactions take turns here, in order, rather than
        # through SQLite's busy handler, which sleeps and retries (up to 100 ms a time).
        self._writing = asyncio.Lock()
        self._signer: Signer | None = None
        self.witnesses = WitnessPool(runtime.settings)
        self._wake = asyncio.Event()  # the sequencer's: ledger events were committed
        self._grown = asyncio.Event()  # the sealer's: entries were appended
        self._replan = asyncio.Event()  # the sealer's: look at the schedule again
        self._signed = asyncio.Event()  # the cosigner's: this process signed a checkpoint
        self._signed_size = -1
        # When the sealer means to sign the next checkpoint; None: nothing new to sign.
        self.next_checkpoint_at: datetime | None = None

    # -- the log's key ------------------------------------------------------------------------

    async def signer(self) -> Signer:
        if self._signer is None:
            self._signer = await self._load_or_create_key()
        return self._signer

    async def published(self) -> Published:
        signer = await self.signer()
        return Published(signer.name, signer.verifier)

    async def _load_or_create_key(self) -> Signer:
        runtime = self.runtime
        async with runtime.read_session_factory() as session:
            stored = await LedgerRepository(session).key()
        if stored is None:
            # The first process to start creates the key; any racing one keeps the winner's.
            private = Ed25519PrivateKey.generate()
            raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            origin = runtime.settings.new_ledger_origin()
            candidate = LedgerKey(
                id=1,
                origin=origin,
                public_key=private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
                sealed_private_key=runtime.keys.ledger_key.seal(raw, origin.encode()),
                created_at=runtime.clock.now(),
            )
            with write_intent():
                async with runtime.session_factory() as session:
                    await LedgerRepository(session).add_key(candidate)
                    await session.commit()
        async with runtime.session_factory() as session:
            stored = await LedgerRepository(session).key()
            assert stored is not None
            configured = runtime.settings.ledger_origin
            if configured and configured != stored.origin:
                raise RuntimeError(
                    f"SESAME_LEDGER_ORIGIN is {configured!r} but this log is {stored.origin!r};"
                    " a log's origin cannot change (start a new database for a new log)"
                )
            raw = runtime.keys.ledger_key.unseal(stored.sealed_private_key, stored.origin.encode())
            return Signer(stored.origin, Ed25519PrivateKey.from_private_bytes(raw))

    # -- the tree -----------------------------------------------------------------------------

    async def _sync(self, repository: LedgerRepository, size: int) -> None:
        """Bring the in-memory tree up to ``size`` leaves from the stored full nodes.
        Callers hold ``_tree_lock``."""
        if self.tree.size > size:
            self.tree.truncate(size)
        if self.tree.size == size:
            return
        level = 0
        while (size >> level) > 0:
            have = self.tree.count(level)
            want = size >> level
            if want > have:
                hashes = await repository.nodes(level, have, want)
                if len(hashes) != want - have:
                    raise LedgerInconsistent(f"nodes missing at level {level}")
                for offset, value in enumerate(hashes):
                    self.tree.load(level, have + offset, value)
            level += 1

    async def synced(self, size: int | None = None) -> int:
        """Make sure proofs can be computed up to ``size`` (default: the stored size)."""
        async with self.runtime.read_session_factory() as session:
            repository = LedgerRepository(session)
            stored = await repository.size()
            size = stored if size is None else size
            if size > stored:
                raise merkle.ProofError(f"the log has {stored} entries, not {size}")
            if self.tree.size < size:
                async with self._tree_lock:
                    await self._sync(repository, size)
        return size

    # -- appending ---------------------------------------------------------------------------

    async def append_batch(self, limit: int | None = None) -> int:
        """One sequencer step: append what the outbox holds, up to ``limit`` entries."""
        limit = limit or self.runtime.settings.ledger_batch_size
        # A read first: the sequencer looks several times a second for other processes'
        # events and most looks find nothing; those take no write lock (SQLite has one,
        # which the command path needs) and no advisory lock.
        async with self.runtime.read_session_factory() as reader:
            if await LedgerRepository(reader).cursor() == await outbox.last_id(reader):
                LAG.set(0)
                return 0
        signer = await self.signer()
        appended = 0
        with write_intent():
            async with self._writing, self.runtime.session_factory() as session:
                repository = LedgerRepository(session)
                if not await repository.try_lock(SEQUENCER_LOCK):
                    return 0  # another process is sequencing
                state = await repository.state(for_update=True)
                now = self.runtime.clock.now()
                upper = await outbox.last_id(session)
                # Sealed rows carry their entry; only the others need their payload.
                rows = await outbox.read_after(
                    session,
                    state.outbox_cursor,
                    up_to=upper,
                    topics=entries.TOPICS,
                    limit=limit,
                    columns=("id", "topic", "seal", "created_at"),
                )
                unsealed = await outbox.by_ids(session, [r.id for r in rows if r.seal is None])
                cursor = rows[-1].id if len(rows) == limit else upper
                if not rows:
                    if cursor != state.outbox_cursor:
                        state.outbox_cursor = cursor
                        await session.commit()
                    LAG.set(0)
                    return 0
                # Lag without another query: none if this batch takes all there is, else
                # (about) the age of what the batch leaves behind.
                lag = (now - rows[-1].created_at).total_seconds() if len(rows) == limit else 0.0
                async with self._tree_lock:
                    before = state.size
                    await self._sync(repository, before)
                    records, leaves = [], []
                    for offset, row in enumerate(rows):
                        entry, signature = self._sealed(row, unsealed.get(row.id), signer)
                        body = entries.seal(entry, before + offset, signature, signer.verifier)
                        leaf = merkle.leaf_hash(body)
                        leaves.append(leaf)
                        records.append(
                            {
                                "idx": before + offset,
                                "outbox_id": row.id,
                                "topic": row.topic,
                                "subject_id": _subject(entry),
                                "leaf_hash": leaf,
                                "body": body,
                                "appended_at": now,
                            }
                        )
                    nodes = self.tree.append(leaves)
                    try:
                        await repository.add_entries(records)
                        await repository.add_nodes(nodes)
                        state.size = before + len(records)
                        state.outbox_cursor = cursor
                        state.updated_at = now
                        await session.commit()
                    except BaseException:
                        self.tree.truncate(before)
                        raise
                    appended = len(records)
                    size = state.size
        APPENDED.inc(appended)
        SIZE.set(size)
        LAG.set(max(0.0, lag))
        self._grown.set()
        return appended

    # -- signing -------------------------------------------------------------------------------

    def seal_row(self, row: dict[str, Any]) -> None:
        """Sign a ledger event as it commits (an outbox sealer, see ``sesame.outbox``).

        The row's ``seal`` is the signature ‖ the canonical entry it signs, so the
        sequencer logs exactly what was signed and only orders and hashes: the signing
        work is spread over every process that commits events."""
        if row["topic"] not in entries.TOPICS or self._signer is None:
            return
        row["created_at"] = self.runtime.clock.now()
        entry = _entry(row["topic"], row["created_at"], row)
        message = entries.signed_message(entry)
        row["seal"] = self._signer.private.sign(message) + message[len(entries.CONTEXT) :]

    def _sealed(self, row: Any, whole: Any, signer: Signer) -> tuple[dict[str, Any], bytes]:
        """The entry of an outbox row and the log's signature over it: as sealed when it
        committed, or made now for events committed by a process without the ledger
        (a command-line tool, say)."""
        seal = row.seal
        if seal is not None and len(seal) > SIGNATURE_SIZE:
            return orjson.loads(seal[SIGNATURE_SIZE:]), bytes(seal[:SIGNATURE_SIZE])
        entry = _entry(whole.topic, whole.created_at, whole._mapping)
        return entry, entries.sign(entry, signer)

    async def measure_lag(self) -> None:
        """The age of the oldest ledger event not yet appended, by query: for when the
        sequencer is failing and its batches say nothing."""
        async with self.runtime.read_session_factory() as session:
            cursor = (await LedgerRepository(session).state()).outbox_cursor
            pending = await outbox.read_after(session, cursor, topics=entries.TOPICS, limit=1)
        if pending:
            LAG.set(max(0.0, (self.runtime.clock.now() - pending[0].created_at).total_seconds()))
        else:
            LAG.set(0)

    # -- checkpoints -------------------------------------------------------------------------

    async def seal_due(self, interval: float) -> datetime | None:
        """When the next checkpoint may be signed (perhaps already), or None if the log has
        not grown since the last one. Read-only: the sealer's plan, checked again by
        ``checkpoint`` under the lock."""
        async with self.runtime.read_session_factory() as session:
            repository = LedgerRepository(session)
            latest = await repository.latest_checkpoint()
            size = await repository.size()
        if size == 0 or (latest is not None and latest.size >= size):
            return None
        last_signed_at = None if latest is None else latest.created_at
        return next_due(last_signed_at, interval, self.runtime.clock.now())

    async def checkpoint(self, *, interval: float = 0.0) -> LedgerCheckpoint | None:
        """Sign a checkpoint for the current size if the log grew and the last checkpoint,
        whichever process signed it, is at least ``interval`` seconds old; None if there
        is nothing to sign or it is not yet due.

        Both conditions are checked under the checkpoint lock, in the transaction that
        stores the checkpoint, so however many processes seal, checkpoints are signed
        once per size, in order of size, at most one per interval."""
        if await self.seal_due(interval) is None:
            return None  # nothing new: no need for the write lock
        return await self._sign(interval)

    async def _sign(self, interval: float) -> LedgerCheckpoint | None:
        """``checkpoint`` without the read-only look first, for the sealer, which just had it."""
        signer = await self.signer()
        with write_intent():
            async with self._writing, self.runtime.session_factory() as session:
                repository = LedgerRepository(session)
                if not await repository.try_lock(CHECKPOINT_LOCK):
                    return None
                size = await repository.size()
                latest = await repository.latest_checkpoint()
                now = self.runtime.clock.now()
                if latest is not None and (
                    latest.size >= size or next_due(latest.created_at, interval, now) > now
                ):
                    return None
                async with self._tree_lock:
                    await self._sync(repository, size)
                    root = self.tree.root(size)
                    if latest is not None:
                        proof = self.tree.consistency_proof(latest.size, size)
                        if (
                            not merkle.verify_consistency(
                                latest.size, size, latest.root, root, proof
                            )
                            or self.tree.root(latest.size) != latest.root
                        ):
                            REFUSED.inc()
                            raise LedgerInconsistent(
                                f"the stored tree of {size} entries does not extend the signed"
                                f" checkpoint of {latest.size}: refusing to sign"
                            )
                note = sign_checkpoint(Checkpoint(signer.name, size, root), signer)
                record = LedgerCheckpoint(
                    size=size,
                    root=root,
                    note=note,
                    cosignatures="",
                    cosigners=0,
                    created_at=now,
                )
                await repository.add_checkpoint(record)
                await session.commit()
        if latest is not None:
            SPACING.observe(max(0.0, (now - latest.created_at).total_seconds()))
        self._signed_size = size
        self._signed.set()
        log.info("ledger_checkpoint_signed", size=size)
        return record

    async def cosign(self, record: LedgerCheckpoint) -> int:
        """Ask every witness to cosign; store what verified. Returns how many cosignatures
        the checkpoint has, once its quorum has answered (or every witness has): the
        answers of witnesses slower than the quorum are stored when they come.

        What is stored never goes backwards: a witness's size only grows, and cosignatures
        are only ever added (two processes may ask at once)."""
        if not self.witnesses.configured:
            return 0
        if self.tree.size < record.size:
            await self.synced(record.size)  # the proofs come from this process's tree
        async with self.runtime.read_session_factory() as session:
            sizes = await LedgerRepository(session).witness_sizes()

        async def proof(old: int) -> list[bytes]:
            async with self._tree_lock:
                return self.tree.consistency_proof(old, record.size)

        async def store(outcomes: list[Outcome]) -> int:
            with write_intent():
                async with self._writing, self.runtime.session_factory() as session:
                    repository = LedgerRepository(session)
                    for outcome in outcomes:
                        if outcome.size is not None:
                            await repository.set_witness_size(outcome.name, outcome.size)
                    count = await repository.add_cosignatures(
                        record.size, [o.line for o in outcomes if o.line]
                    )
                    await session.commit()
            return count

        async def late(outcome: Outcome) -> None:
            try:
                await store([outcome])
            except Exception as exc:  # the quorum is stored; this one is a bonus
                log.warning("ledger_late_cosignature_lost", error_type=type(exc).__name__)

        outcomes = await self.witnesses.cosign(
            record.note,
            record.size,
            sizes,
            proof,
            enough=self.runtime.settings.ledger_quorum,
            late=late,
        )
        return await store(outcomes)

    async def served_checkpoint(self) -> str | None:
        """The newest checkpoint with enough cosignatures, as a note with all of them."""
        async with self.runtime.read_session_factory() as session:
            record = await LedgerRepository(session).latest_checkpoint(
                min_cosigners=self.runtime.settings.ledger_quorum
            )
        return None if record is None else record.note + record.cosignatures

    # -- the loops -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Append, checkpoint and collect cosignatures for as long as the process lives.

        Three loops, so that none waits for another's slow step:

        - the **sequencer** appends ``APPEND_SETTLE_SECONDS`` after this process commits
          ledger events (``committed``), and every ``POLL_SECONDS`` for other processes'
          commits;
        - the **sealer** wakes when entries are appended and signs a checkpoint at once if
          the last one is at least an interval old, else when it will be;
        - the **cosigner** asks the witnesses (all at once, each with a timeout) to cosign
          the newest checkpoint this process signed, while the sealer goes on.

        So an entry appended at *t* is in a checkpoint signed by *t + I + S* (interval,
        signing time) and served by *t + I + S + W* (the witnesses' round trip) while
        *W ≤ I*; a slower witness adds at most one more round trip. A checkpoint short of
        its quorum is retried with backoff and jitter — the newest one, never one a newer
        checkpoint replaced; on start-up, and when the process that signed it seems gone,
        the newest checkpoint is picked up if it lacks its quorum."""
        async with asyncio.TaskGroup() as loops:
            loops.create_task(self._sequence_loop())
            loops.create_task(self._seal_loop())
            if self.witnesses.configured:
                loops.create_task(self._cosign_loop())

    async def _sequence_loop(self) -> None:
        async def drain() -> None:
            try:
                while await self.append_batch() > 0:
                    pass
            except Exception:
                FAILURES.labels("append").inc()
                with contextlib.suppress(Exception):
                    await self.measure_lag()
                raise

        # Woken, it waits APPEND_SETTLE_SECONDS first: a resident's open commits a key
        # event, and appending each one at once (about ten statements) ran in the middle
        # of the next open, one entry per step (measured: the ledger's statements were
        # more than half of what a resident's sequential opens made the server run). The
        # settle is part of the checkpoint's latency budget (docs/ledger.md).
        await keep_running(
            drain,
            self._wake,
            name="ledger.sequencer",
            poll_seconds=POLL_SECONDS,
            settle_seconds=APPEND_SETTLE_SECONDS,
        )

    async def _seal_loop(self) -> None:
        interval = self.runtime.settings.ledger_checkpoint_interval_seconds
        failures = 0
        while True:
            self._grown.clear()
            self._replan.clear()
            delay, wake = POLL_SECONDS, self._grown
            try:
                due = self.next_checkpoint_at = await self.seal_due(interval)
                if due is not None:
                    # Something to sign: more appends change nothing until it is due.
                    delay, wake = (due - self.runtime.clock.now()).total_seconds(), self._replan
                    if delay <= 0:
                        # Signed, or another process holds the lock: look again shortly.
                        delay = 0 if await self._sign(interval) else interval / 4
                failures = 0
            except LedgerInconsistent as exc:
                FAILURES.labels("consistency").inc()
                log.error("ledger_inconsistent", error=str(exc))
                failures += 1
            except Exception as exc:
                FAILURES.labels("checkpoint").inc()
                log.warning(
                    "ledger_checkpoint_failed", error_type=type(exc).__name__, error=str(exc)[:300]
                )
                failures += 1
            if failures:
                delay = backoff(failures)
            if delay > 0:
                await _wait(wake, delay)

    async def cosign_newest(self, *, retry: bool = False, adopt: bool = False) -> bool | None:
        """One cosigning step: ask the witnesses to cosign the newest checkpoint if it lacks
        its quorum and is this process's to ask for — signed here, or ``adopt`` (start-up),
        or ``retry``, or left alone for a while (its process seems gone). True if it now
        has its quorum, False if not, None if there was nothing to ask for.

        Only ever the newest: a checkpoint that a newer one replaced is never offered
        again (a witness that cosigned the newer one would refuse it anyway)."""
        quorum = self.runtime.settings.ledger_quorum
        async with self.runtime.read_session_factory() as session:
            newest = await LedgerRepository(session).latest_checkpoint()
        if newest is None or newest.cosigners >= quorum:
            return None
        orphaned_after = 2 * self.witnesses.timeout + (
            self.runtime.settings.ledger_checkpoint_interval_seconds
        )
        age = (self.runtime.clock.now() - newest.created_at).total_seconds()
        if not (adopt or retry or newest.size == self._signed_size or age >= orphaned_after):
            return None
        asked = time.monotonic()
        if await self.cosign(newest) < quorum:
            return False
        COSIGNED.observe(max(0.0, (self.runtime.clock.now() - newest.created_at).total_seconds()))
        log.info(
            "ledger_checkpoint_served",
            size=newest.size,
            cosigning_ms=round((time.monotonic() - asked) * 1000, 1),
        )
        return True

    async def _cosign_loop(self) -> None:
        attempts = 0
        adopt = True  # on start-up, the newest checkpoint, whoever signed it
        while True:
            self._signed.clear()
            try:
                served = await self.cosign_newest(retry=attempts > 0, adopt=adopt)
                adopt = False
            except Exception as exc:
                FAILURES.labels("cosign").inc()
                log.warning(
                    "ledger_cosign_failed", error_type=type(exc).__name__, error=str(exc)[:300]
                )
                served = False
            if served:
                attempts = 0
                continue  # a newer checkpoint may be waiting
            if served is None:
                attempts, delay = 0, POLL_SECONDS * 5
            else:
                attempts += 1
                delay = backoff(attempts)
            await _wait(self._signed, delay)

    def committed(self) -> None:
        """New ledger events were committed in this process: append them (after the
        settle). The sealer hears of them once they are appended: until then they change
        nothing in its schedule, and waking it on every commit only made it read that
        schedule again (two queries per key event)."""
        self._wake.set()

    def poke(self) -> None:
        """Append and look at the checkpoint schedule without waiting (the clock moved,
        or a checkpoint's time has come)."""
        self._wake.set()
        self._grown.set()
        self._replan.set()


def next_due(last_signed_at: datetime | None, interval: float, now: datetime) -> datetime:
    """When the next checkpoint may be signed: ``interval`` seconds after the last one, or
    now if there was none — or if the last one is in the future (the clock was set back),
    which must not stop checkpoints until the clock catches up."""
    if last_signed_at is None or last_signed_at > now:
        return now
    return last_signed_at + timedelta(seconds=interval)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` pass."""
    await woken_within(event, seconds)


def backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1, 2, …): at least 0.1 s, then full jitter."""
    return 0.1 + backoff_delay(attempt, base=0.5, cap=30.0)


def _entry(topic: str, at: Any, row: Any) -> dict[str, Any]:
    return entries.build(
        topic=topic,
        at=at,
        partner_id=row["partner_id"],
        aggregate_id=row["aggregate_id"],
        payload=row["payload"],
    )


def _subject(entry: dict[str, Any]) -> UUID | None:
    """The key, code or device the entry is about: what receipts are looked up by."""
    return _uuid(next(iter((entry.get("subject") or {}).values()), None))


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None
