"""Re-sealing under the current master secret, and the platform's own sealed keys.

``rotate`` reads each sealed table in primary-key batches outside any transaction, seals
what is not yet under the current secret, and writes each batch in one short transaction
that changes a row only if it still holds what was read: safe while the service runs
(nothing slow holds the write lock, and a value changed meanwhile — a webhook secret
rotated — is already sealed under the current secret by its writer). Running it again
finds nothing to do. It is an edge, like the job worker: it owns its transactions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag

from sesame.api.idempotency import associated as idempotency_context
from sesame.keys.pins import code_digests
from sesame.kit.db import write_intent
from sesame.kit.keyring import PurposeKeys, UnknownKey
from sesame.ledger.repository import LedgerRepository
from sesame.models import (
    ActionAttempt,
    IdempotencyRecord,
    LedgerKey,
    PinCode,
    PlatformKey,
    SiteSigningKey,
    WebhookEndpoint,
)
from sesame.models.base import Base
from sesame.runtime import Keys, Runtime
from sesame.sealing.repository import (
    SEALED_TABLES,
    PlatformKeyRepository,
    SealedRepository,
    SealedTable,
)

Row = Mapping[str, Any]

# Per table: its purpose's keys, and what each value is bound to (its associated data).
_SEALING: dict[type[Base], tuple[Callable[[Keys], PurposeKeys], Callable[[Row], bytes]]] = {
    LedgerKey: (lambda k: k.ledger_key, lambda row: str(row["origin"]).encode()),
    PlatformKey: (lambda k: k.platform_keys, lambda row: str(row["name"]).encode()),
    SiteSigningKey: (lambda k: k.site_signing_keys, lambda row: str(row["site_id"]).encode()),
    PinCode: (lambda k: k.pin_codes, lambda row: row["id"].bytes),
    WebhookEndpoint: (lambda k: k.webhook_secrets, lambda row: row["id"].bytes),
    IdempotencyRecord: (
        lambda k: k.idempotency,
        lambda row: idempotency_context(row["scope"], row["key"]),
    ),
    ActionAttempt: (lambda k: k.idempotency, lambda row: row["id"].bytes),
}


@dataclass
class TableRotation:
    """What ``rotate`` did to one table."""

    name: str
    total: int
    checked: int = 0
    resealed: int = 0
    unreadable: int = 0  # sealed under a secret no longer in the ring


Progress = Callable[[TableRotation], None]


async def rotate(
    runtime: Runtime, *, batch_size: int = 500, progress: Progress | None = None
) -> list[TableRotation]:
    """Re-seal every sealed value under the current secret; reports after each batch."""
    return [await _rotate_table(runtime, t, batch_size, progress) for t in SEALED_TABLES]


async def _rotate_table(
    runtime: Runtime, table: SealedTable, batch_size: int, progress: Progress | None
) -> TableRotation:
    keys_of, context_of = _SEALING[table.model]
    keys = keys_of(runtime.keys)
    async with runtime.read_session_factory() as session:
        report = TableRotation(table.name, await SealedRepository(session, table).count())
    after: Any = None
    while True:
        async with runtime.read_session_factory() as session:
            rows = await SealedRepository(session, table).batch(after, batch_size)
        if not rows:
            break
        after = rows[-1][table.key]
        changes = []
        for row in rows:
            try:
                change = _resealed(runtime, table, keys, row, context_of(row))
            except (InvalidTag, UnknownKey):
                report.unreadable += 1
                continue
            if change is not None:
                changes.append((row[table.key], *change))
        if changes:
            with write_intent():
                async with runtime.session_factory() as session:
                    repository = SealedRepository(session, table)
                    for key, old, new in changes:
                        report.resealed += await repository.replace(key, old, new)
                    await session.commit()
        report.checked += len(rows)
        if progress is not None:
            progress(report)
    if progress is not None and report.checked == 0:
        progress(report)
    return report


Values = dict[str, bytes | str | None]


def _resealed(
    runtime: Runtime, table: SealedTable, keys: PurposeKeys, row: Row, context: bytes
) -> tuple[Values, Values] | None:
    """The row's values as read and as sealed under the current secret; None: all are."""
    old: Values = {}
    new: Values = {}
    for column in table.columns:
        value = row[column]
        if value is None or keys.is_current(value):
            continue
        plaintext = keys.unseal(value, context)
        old[column] = bytes(value)
        new[column] = keys.seal(plaintext, context)
        if table.digest is not None:
            # A PIN's per-lock digest moves to the current secret with its code.
            old[table.digest] = row[table.digest]
            new[table.digest] = code_digests(runtime, row["device_id"], plaintext.decode())[0]
    return (old, new) if new else None


async def platform_secret(
    runtime: Runtime, name: str, first: Callable[[], Awaitable[bytes]]
) -> bytes:
    """The platform's key ``name``, stored sealed: made by ``first`` the first time any
    process asks (the first to store it wins), the same for good after that."""
    sealer = runtime.keys.platform_keys
    async with runtime.read_session_factory() as session:
        stored = await PlatformKeyRepository(session).get(name)
    if stored is None:
        candidate = PlatformKey(
            name=name,
            sealed_private_key=sealer.seal(await first(), name.encode()),
            created_at=runtime.clock.now(),
        )
        with write_intent():
            async with runtime.session_factory() as session:
                await PlatformKeyRepository(session).add(candidate)
                await session.commit()
        async with runtime.read_session_factory() as session:
            stored = await PlatformKeyRepository(session).get(name)
        if stored is None:
            raise RuntimeError(f"the platform key {name!r} was not stored")
    return sealer.unseal(stored.sealed_private_key, name.encode())


async def earliest_key_id(runtime: Runtime) -> str:
    """The id of the secret the deployment first sealed with, as far as the ring shows.

    Before keys were stored, some (the VAPID key) were derived from the secret in use,
    which could never change then. The ledger's key is sealed at the first start, so
    the secret that opens it is that one — even when the first start of this version is
    also the first with a new secret. Without a ledger key: the current secret."""
    async with runtime.read_session_factory() as session:
        stored = await LedgerRepository(session).key()
    if stored is None:
        return runtime.keys.ring.current_id
    try:
        opener = runtime.keys.ledger_key.opener(stored.sealed_private_key, stored.origin.encode())
    except (InvalidTag, UnknownKey):
        return runtime.keys.ring.current_id
    return opener.key_id
