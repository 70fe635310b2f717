"""SQL for staff accounts."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import selectinload

from sesame.kit.repository import CrudRepository
from sesame.models import StaffAccount


class StaffRepository(CrudRepository[StaffAccount]):
    model = StaffAccount
    load_options = (selectinload(StaffAccount.site_scopes),)

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        for name in ("partner_id", "role", "email"):
            value = getattr(query, name)
            if value is not None:
                clauses.append(getattr(StaffAccount, name) == value)
        return clauses

    async def by_email(self, email: str) -> StaffAccount | None:
        result = await self.session.execute(
            select(StaffAccount)
            .where(StaffAccount.email == email)
            .options(selectinload(StaffAccount.site_scopes))
        )
        return result.scalar_one_or_none()

    async def by_id(self, staff_id: UUID) -> StaffAccount | None:
        result = await self.session.execute(
            select(StaffAccount)
            .where(StaffAccount.id == staff_id)
            .options(selectinload(StaffAccount.site_scopes))
        )
        return result.scalar_one_or_none()
