"""SQL for sealed values: the platform's keys, and every sealed column read in batches
and written back only where it has not changed since it was read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from sesame.kit.db import dialect_insert
from sesame.kit.repository import SessionRepository
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


@dataclass(frozen=True)
class SealedTable:
    """A table with sealed columns: ``context`` are the columns each value is bound to
    (its associated data), ``digest`` a keyed digest recomputed from the plaintext."""

    name: str
    model: type[Base]
    key: str
    columns: tuple[str, ...]
    context: tuple[str, ...]
    digest: str | None = None


SEALED_TABLES = (
    SealedTable("ledger key", LedgerKey, "id", ("sealed_private_key",), ("origin",)),
    SealedTable("platform keys", PlatformKey, "name", ("sealed_private_key",), ("name",)),
    SealedTable("site signing keys", SiteSigningKey, "id", ("sealed_private_key",), ("site_id",)),
    SealedTable(
        "PIN codes", PinCode, "id", ("sealed_code",), ("id", "device_id"), digest="code_digest"
    ),
    SealedTable(
        "webhook secrets",
        WebhookEndpoint,
        "id",
        ("sealed_secret", "sealed_previous_secret"),
        ("id",),
    ),
    SealedTable("idempotency records", IdempotencyRecord, "id", ("body",), ("scope", "key")),
    SealedTable("action attempts", ActionAttempt, "id", ("sealed_params",), ("id",)),
)


class PlatformKeyRepository(SessionRepository):
    async def get(self, name: str) -> PlatformKey | None:
        return await self.session.get(PlatformKey, name)

    async def add(self, key: PlatformKey) -> bool:
        """Store the key unless another process already did; True if this one won."""
        insert_ = dialect_insert(self.session.get_bind().dialect)
        result = await self.session.execute(
            insert_(PlatformKey)
            .values(
                name=key.name, sealed_private_key=key.sealed_private_key, created_at=key.created_at
            )
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return bool(getattr(result, "rowcount", 0))


class SealedRepository(SessionRepository):
    """Batches of one sealed table, in primary-key order, for re-sealing."""

    def __init__(self, session: Any, table: SealedTable) -> None:
        super().__init__(session)
        self.table = table
        self._key = getattr(table.model, table.key)

    def _columns(self) -> list[Any]:
        names = dict.fromkeys(
            (self.table.key, *self.table.columns, *self.table.context, self.table.digest or "")
        )
        return [getattr(self.table.model, n) for n in names if n]

    async def count(self) -> int:
        return int(
            await self.session.scalar(
                select(func.count()).select_from(self.table.model).where(self._any_sealed())
            )
            or 0
        )

    async def batch(self, after: Any, limit: int) -> Sequence[Any]:
        """Rows with a sealed value after primary key ``after`` (None: from the start)."""
        query = select(*self._columns()).where(self._any_sealed())
        if after is not None:
            query = query.where(self._key > after)
        rows = await self.session.execute(query.order_by(self._key).limit(limit))
        return list(rows.mappings())

    async def replace(
        self, key: Any, old: dict[str, bytes | str | None], new: dict[str, bytes | str | None]
    ) -> bool:
        """Write ``new`` where the row still holds ``old``: a value changed meanwhile (a
        webhook secret rotated, a PIN changed) is left to its new owner."""
        unchanged = [
            getattr(self.table.model, name).is_(None)
            if value is None
            else getattr(self.table.model, name) == value
            for name, value in old.items()
        ]
        result = await self.session.execute(
            update(self.table.model)
            .where(self._key == key, *unchanged)
            .values(new)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    def _any_sealed(self) -> ColumnElement[bool]:
        present = [getattr(self.table.model, c).is_not(None) for c in self.table.columns]
        return or_(*present)
