"""SQL for the HTTP edge: stored answers to idempotent POSTs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sesame.models import IdempotencyRecord


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find(self, scope: str, key: str) -> IdempotencyRecord | None:
        result = await self.session.execute(
            select(IdempotencyRecord).where(
                IdempotencyRecord.scope == scope, IdempotencyRecord.key == key
            )
        )
        return result.scalar_one_or_none()

    async def add(self, record: IdempotencyRecord) -> None:
        self.session.add(record)
        await self.session.flush()
