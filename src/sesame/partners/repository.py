"""SQL for partners."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement

from sesame.kit.repository import CrudRepository
from sesame.models import Partner


class PartnerRepository(CrudRepository[Partner]):
    model = Partner

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if query.kind is not None:
            clauses.append(Partner.kind == query.kind)
        if query.q:
            clauses.append(Partner.name.icontains(query.q, autoescape=True))
        return clauses
