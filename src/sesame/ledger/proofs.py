"""The ledger's read side: entries with their bytes, proofs, receipts."""

from __future__ import annotations

import base64
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.kit.errors import NotFound, ValidationFailed
from sesame.kit.logging import get_logger
from sesame.ledger import entries, merkle
from sesame.ledger.note import Checkpoint, parse
from sesame.ledger.repository import LedgerRepository
from sesame.ledger.schemas import (
    ConsistencyProof,
    EntriesPage,
    EntryRead,
    InclusionProof,
    LedgerInfo,
    Receipt,
    Receipts,
    WitnessRead,
)
from sesame.ledger.service import Ledger
from sesame.models import LedgerEntry

MAX_ENTRIES = 1000

log = get_logger("sesame.ledger")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def entry_read(record: LedgerEntry) -> EntryRead:
    return EntryRead(
        index=record.idx,
        leaf_hash=b64(record.leaf_hash),
        body=b64(record.body),
        entry=_decoded(record.body),
    )


def _decoded(body: bytes) -> dict[str, Any] | None:
    try:
        return entries.parse(body)
    except entries.EntryError:
        log.error("ledger_entry_damaged", size=len(body))
        return None


async def info(session: AsyncSession, ledger: Ledger) -> LedgerInfo:
    published = await ledger.published()
    served = await ledger.served_checkpoint()
    return LedgerInfo(
        origin=published.origin,
        log_key=published.verifier.vkey,
        witnesses=[
            WitnessRead(name=w.name, url=w.url, vkey=w.verifier.vkey)
            for w in ledger.witnesses.witnesses
        ],
        quorum=ledger.runtime.settings.ledger_quorum,
        size=await LedgerRepository(session).size(),
        checkpoint_size=Checkpoint.parse(parse(served).text).size if served else None,
    )


async def entries_page(session: AsyncSession, start: int, end: int | None) -> EntriesPage:
    repository = LedgerRepository(session)
    size = await repository.size()
    if start < 0:
        raise ValidationFailed("start must be ≥ 0")
    # Like a slice: a range past the log's end, or ending before it starts, is empty.
    end = min(size if end is None else end, start + MAX_ENTRIES, size)
    records = await repository.entries(start, end) if end > start else []
    return EntriesPage(entries=[entry_read(r) for r in records], size=size)


async def _default_size(ledger: Ledger, tree_size: int | None) -> int:
    if tree_size is not None:
        return tree_size
    served = await ledger.served_checkpoint()
    if served is None:
        raise NotFound("the log has no checkpoint yet")
    return Checkpoint.parse(parse(served).text).size


async def inclusion(
    session: AsyncSession,
    ledger: Ledger,
    *,
    index: int | None,
    leaf_hash: str | None,
    tree_size: int | None,
) -> InclusionProof:
    if (index is None) == (leaf_hash is None):
        raise ValidationFailed("give either index or leaf_hash")
    if leaf_hash is not None:
        try:
            wanted = base64.b64decode(leaf_hash, validate=True)
        except ValueError as exc:
            raise ValidationFailed("leaf_hash is base64") from exc
        index = await LedgerRepository(session).index_of(wanted)
        if index is None:
            raise NotFound("no entry has this leaf hash")
    assert index is not None
    size = await _default_size(ledger, tree_size)
    try:
        await ledger.synced(size)
        proof = ledger.tree.inclusion_proof(index, size)
    except merkle.ProofError as exc:
        raise ValidationFailed(str(exc)) from exc
    return InclusionProof(leaf_index=index, tree_size=size, hashes=[b64(h) for h in proof])


async def consistency(ledger: Ledger, first: int, second: int | None) -> ConsistencyProof:
    second = await _default_size(ledger, second)
    try:
        await ledger.synced(second)
        proof = ledger.tree.consistency_proof(first, second)
    except merkle.ProofError as exc:
        raise ValidationFailed(str(exc)) from exc
    return ConsistencyProof(first=first, second=second, hashes=[b64(h) for h in proof])


async def receipts(session: AsyncSession, ledger: Ledger, subject_id: UUID) -> Receipts:
    """Every entry about ``subject_id``, each with its proof against the served
    checkpoint (or none yet, for entries newer than it)."""
    served = await ledger.served_checkpoint()
    size = Checkpoint.parse(parse(served).text).size if served else 0
    if size:
        await ledger.synced(size)
    found = []
    for record in await LedgerRepository(session).of_subject(subject_id):
        proof = None
        if record.idx < size:
            hashes = ledger.tree.inclusion_proof(record.idx, size)
            proof = InclusionProof(
                leaf_index=record.idx, tree_size=size, hashes=[b64(h) for h in hashes]
            )
        found.append(Receipt(entry=entry_read(record), proof=proof))
    return Receipts(subject_id=str(subject_id), checkpoint=served, receipts=found)
