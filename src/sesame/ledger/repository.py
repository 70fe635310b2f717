"""SQL for the ledger's tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast
from uuid import UUID

from sqlalchemy import Table, func, insert, select

from sesame.kit.db import dialect_insert
from sesame.kit.repository import SessionRepository
from sesame.ledger.merkle import HASH_SIZE
from sesame.models import (
    LedgerCheckpoint,
    LedgerEntry,
    LedgerKey,
    LedgerNode,
    LedgerState,
    LedgerWitnessState,
)


def _signer_name(line: str) -> str:
    """The key name of a signature line, ``— <name> <base64>``."""
    return line.split(" ", 2)[1]


ENTRIES = cast(Table, LedgerEntry.__table__)
NODES = cast(Table, LedgerNode.__table__)
STATE_ROW = 1
KEY_ROW = 1


class LedgerRepository(SessionRepository):
    # -- sequencer state ---------------------------------------------------------------------

    async def cursor(self) -> int | None:
        """The sequencer's outbox cursor, read without a lock (None before the first step)."""
        found = await self.session.execute(
            select(LedgerState.outbox_cursor).where(LedgerState.id == STATE_ROW)
        )
        cursor: int | None = found.scalar()
        return cursor

    async def state(self, *, for_update: bool = False) -> LedgerState:
        statement = select(LedgerState).where(LedgerState.id == STATE_ROW)
        if for_update:
            statement = statement.with_for_update()
        state = (await self.session.execute(statement)).scalar_one_or_none()
        if state is not None:
            return state
        insert_ = dialect_insert(self.session.get_bind().dialect)
        await self.session.execute(  # the first use: whoever comes first creates the row
            insert_(LedgerState)
            .values(id=STATE_ROW, size=0, outbox_cursor=0)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        return (await self.session.execute(statement)).scalar_one()

    async def size(self) -> int:
        result = await self.session.execute(
            select(LedgerState.size).where(LedgerState.id == STATE_ROW)
        )
        return int(result.scalar() or 0)

    # Core inserts (one executemany), not ORM bulk inserts: the sequencer's hot path.

    async def add_entries(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(ENTRIES), rows)

    async def add_nodes(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        """Store new interior full nodes (level 0, the leaves, are the entries' own
        ``leaf_hash``): one row per run of consecutive nodes of a level."""
        runs: list[dict[str, Any]] = []
        for level, index, value in sorted(node for node in nodes if node[0] > 0):
            run = runs[-1] if runs else None
            if run is not None and run["level"] == level and run["stop"] == index:
                run["stop"] += 1
                run["hashes"].append(value)
            else:
                runs.append({"level": level, "start": index, "stop": index + 1, "hashes": [value]})
        for run in runs:
            run["hashes"] = b"".join(run["hashes"])
        if runs:
            await self.session.execute(insert(NODES), runs)

    async def nodes(self, level: int, start: int, end: int) -> list[bytes]:
        """The full nodes ``start .. end - 1`` of ``level``, as far as they are stored."""
        if level == 0:
            leaves = await self.session.execute(
                select(LedgerEntry.leaf_hash)
                .where(LedgerEntry.idx >= start, LedgerEntry.idx < end)
                .order_by(LedgerEntry.idx)
            )
            return list(leaves.scalars().all())
        runs = await self.session.execute(
            select(LedgerNode.start, LedgerNode.hashes)
            .where(LedgerNode.level == level, LedgerNode.stop > start, LedgerNode.start < end)
            .order_by(LedgerNode.start)
        )
        found: list[bytes] = []
        for run_start, hashes in runs.all():
            first = max(start, run_start) - run_start
            last = min(end, run_start + len(hashes) // HASH_SIZE) - run_start
            found.extend(hashes[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(first, last))
        return found

    # -- entries -----------------------------------------------------------------------------

    async def entries(self, start: int, end: int) -> Sequence[LedgerEntry]:
        result = await self.session.execute(
            select(LedgerEntry)
            .where(LedgerEntry.idx >= start, LedgerEntry.idx < end)
            .order_by(LedgerEntry.idx)
        )
        return result.scalars().all()

    async def index_of(self, leaf_hash: bytes) -> int | None:
        result = await self.session.execute(
            select(LedgerEntry.idx).where(LedgerEntry.leaf_hash == leaf_hash)
        )
        value = result.scalar()
        return None if value is None else int(value)

    async def of_subject(self, subject_id: UUID, limit: int = 500) -> Sequence[LedgerEntry]:
        result = await self.session.execute(
            select(LedgerEntry)
            .where(LedgerEntry.subject_id == subject_id)
            .order_by(LedgerEntry.idx)
            .limit(limit)
        )
        return result.scalars().all()

    # -- checkpoints -------------------------------------------------------------------------

    async def latest_checkpoint(self, *, min_cosigners: int = 0) -> LedgerCheckpoint | None:
        result = await self.session.execute(
            select(LedgerCheckpoint)
            .where(LedgerCheckpoint.cosigners >= min_cosigners)
            .order_by(LedgerCheckpoint.size.desc())
            .limit(1)
        )
        return result.scalar_one_or_none()

    async def checkpoint(self, size: int) -> LedgerCheckpoint | None:
        return await self.session.get(LedgerCheckpoint, size)

    async def add_checkpoint(self, checkpoint: LedgerCheckpoint) -> None:
        self.session.add(checkpoint)
        await self.session.flush()

    async def add_cosignatures(self, size: int, lines: Sequence[str]) -> int:
        """Add witnesses' cosignature lines to the checkpoint of ``size``, at most one per
        witness (the first kept), so answers arriving in any order, from any process, only
        ever add; returns how many it has. In a write transaction (``write_intent``)."""
        statement = select(LedgerCheckpoint).where(LedgerCheckpoint.size == size)
        if self.is_postgres:
            statement = statement.with_for_update()
        record = (await self.session.execute(statement)).scalar_one_or_none()
        if record is None:
            return 0
        kept = record.cosignatures.splitlines(keepends=True)
        names = {_signer_name(line) for line in kept}
        for line in lines:
            if _signer_name(line) not in names:
                kept.append(line)
                names.add(_signer_name(line))
        if len(kept) != record.cosigners:
            record.cosignatures, record.cosigners = "".join(kept), len(kept)
            await self.session.flush()
        return len(kept)

    async def witness_sizes(self) -> dict[str, int]:
        result = await self.session.execute(select(LedgerWitnessState))
        return {row.name: row.size for row in result.scalars()}

    async def set_witness_size(self, name: str, size: int) -> None:
        """Remember that the witness holds ``size``, unless it is known to hold more (an
        answer to an older request that arrives late)."""
        insert_ = dialect_insert(self.session.get_bind().dialect)
        statement = insert_(LedgerWitnessState).values(name=name, size=size, updated_at=func.now())
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["name"],
                set_={"size": size, "updated_at": func.now()},
                where=LedgerWitnessState.size < size,
            )
        )

    # -- the log key -------------------------------------------------------------------------

    async def key(self) -> LedgerKey | None:
        return await self.session.get(LedgerKey, KEY_ROW)

    async def add_key(self, key: LedgerKey) -> bool:
        """Store the log key unless another process already did; True if this one won."""
        insert_ = dialect_insert(self.session.get_bind().dialect)
        result = await self.session.execute(
            insert_(LedgerKey)
            .values(
                id=KEY_ROW,
                origin=key.origin,
                public_key=key.public_key,
                sealed_private_key=key.sealed_private_key,
                created_at=key.created_at,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )
        return bool(getattr(result, "rowcount", 0))
