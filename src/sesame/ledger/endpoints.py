"""``/v1/ledger/...``: the checkpoint, entries and proofs; receipts for a key.

Who may read the log is the operator's choice (``SESAME_LEDGER_ACCESS``): anyone, or
anyone signed in (staff, resident or API key). Receipts for a key follow the key's own
visibility: its partner's staff, or the resident who holds or gave it.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response

from sesame.api.deps import (
    AppRuntime,
    BearerCredentials,
    CurrentPrincipal,
    CurrentResident,
    DbSession,
)
from sesame.api.route import API_PREFIX, SesameRoute
from sesame.auth.principal import authenticate
from sesame.keys.repository import KeyRepository
from sesame.keys.service import KeyService
from sesame.kit.errors import NotFound, Unauthorized
from sesame.ledger import proofs
from sesame.ledger.schemas import (
    ConsistencyProof,
    EntriesPage,
    InclusionProof,
    LedgerInfo,
    Receipts,
)
from sesame.ledger.service import Ledger
from sesame.runtime import Runtime


def _ledger(runtime: Runtime) -> Ledger:
    if runtime.ledger is None:
        raise NotFound("the ledger is not enabled on this server")
    ledger: Ledger = runtime.ledger
    return ledger


async def _reader(
    request: Request, session: DbSession, runtime: AppRuntime, _credentials: BearerCredentials
) -> Ledger:
    """The ledger, if this caller may read it (the document declares the bearer scheme,
    optional when the ledger is public)."""
    ledger = _ledger(runtime)
    if (
        runtime.settings.ledger_access == "authenticated"
        and await authenticate(request, session, runtime) is None
    ):
        raise Unauthorized("the ledger is readable when signed in")
    return ledger


Reader = Annotated[Ledger, Depends(_reader)]

router = APIRouter(prefix=f"{API_PREFIX}/ledger", tags=["ledger"], route_class=SesameRoute)


@router.get("", response_model=LedgerInfo, operation_id="get_ledger")
async def ledger_info(ledger: Reader, session: DbSession) -> LedgerInfo:
    """The log's origin and public key, its witnesses and quorum, and its size."""
    return await proofs.info(session, ledger)


@router.get(
    "/checkpoint",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    operation_id="get_ledger_checkpoint",
)
async def checkpoint(ledger: Reader) -> Response:
    """The newest checkpoint with enough witness cosignatures, as a C2SP signed note."""
    note = await ledger.served_checkpoint()
    if note is None:
        raise NotFound("the log has no checkpoint yet")
    return Response(
        note,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-cache, max-age=1"},
    )


@router.get("/entries", response_model=EntriesPage, operation_id="list_ledger_entries")
async def list_entries(
    ledger: Reader,
    session: DbSession,
    start: Annotated[int, Query(ge=0)] = 0,
    end: Annotated[
        int | None, Query(ge=0, description="Exclusive; at most 1000 after start.")
    ] = None,
) -> EntriesPage:
    """Entries ``start`` to ``end`` (exclusive): their exact bytes and their decoded form."""
    return await proofs.entries_page(session, start, end)


@router.get("/proofs/inclusion", response_model=InclusionProof, operation_id="get_inclusion_proof")
async def inclusion_proof(
    ledger: Reader,
    session: DbSession,
    index: Annotated[int | None, Query(ge=0)] = None,
    leaf_hash: Annotated[str | None, Query(max_length=64, description="base64")] = None,
    tree_size: Annotated[
        int | None, Query(ge=1, description="Default: the served checkpoint's size.")
    ] = None,
) -> InclusionProof:
    """RFC 6962 inclusion proof of an entry, by index or leaf hash."""
    return await proofs.inclusion(
        session, ledger, index=index, leaf_hash=leaf_hash, tree_size=tree_size
    )


@router.get(
    "/proofs/consistency", response_model=ConsistencyProof, operation_id="get_consistency_proof"
)
async def consistency_proof(
    ledger: Reader,
    first: Annotated[int, Query(ge=0)],
    second: Annotated[
        int | None, Query(ge=0, description="Default: the served checkpoint's size.")
    ] = None,
) -> ConsistencyProof:
    """RFC 6962 consistency proof between two sizes of the log."""
    return await proofs.consistency(ledger, first, second)


receipts_router = APIRouter(prefix=API_PREFIX, tags=["ledger"], route_class=SesameRoute)


@receipts_router.get(
    "/keys/{key_id}/receipts", response_model=Receipts, operation_id="list_key_receipts"
)
async def key_receipts(
    key_id: UUID,
    principal: CurrentPrincipal,
    session: DbSession,
    runtime: AppRuntime,
) -> Receipts:
    """Every ledger entry about this key, each with an inclusion proof against the served
    checkpoint: verifiable by anyone with the log's public key."""
    await KeyService(session, principal, runtime).get(key_id)  # 404 unless visible
    return await proofs.receipts(session, _ledger(runtime), key_id)


@receipts_router.get(
    "/me/keys/{key_id}/receipts", response_model=Receipts, operation_id="list_my_key_receipts"
)
async def my_key_receipts(
    key_id: UUID,
    principal: CurrentResident,
    session: DbSession,
    runtime: AppRuntime,
) -> Receipts:
    """Receipts for a key you hold or gave."""
    key = await KeyRepository(session).by_id(key_id)
    if key is None or not (
        key.person_id in principal.person_ids or key.issued_by_person_id in principal.person_ids
    ):
        raise NotFound(f"key {key_id} not found")
    return await proofs.receipts(session, _ledger(runtime), key_id)


routers = [router, receipts_router]
