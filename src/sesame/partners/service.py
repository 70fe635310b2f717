"""Partners are created and removed by platform staff; a partner admin may rename their own."""

from __future__ import annotations

from typing import Any

from sesame.api.crud import CrudService
from sesame.auth.principal import Group
from sesame.kit.errors import Forbidden
from sesame.models import Partner
from sesame.partners.repository import PartnerRepository
from sesame.partners.schemas import PartnerCreate


class PartnerService(CrudService[Partner]):
    group = Group.PARTNERS
    noun = "partner"
    repository_class = PartnerRepository

    async def build(self, data: PartnerCreate) -> Partner:
        self._require_platform("creating a partner")
        return Partner(name=data.name, kind=data.kind)

    async def apply(self, obj: Partner, changes: dict[str, Any]) -> None:
        if "kind" in changes:
            self._require_platform("changing a partner's kind")
        await super().apply(obj, changes)

    async def before_delete(self, obj: Partner) -> None:
        self._require_platform("deleting a partner")

    def _require_platform(self, what: str) -> None:
        if not self.principal.is_platform:
            raise Forbidden(f"{what} is for platform administrators")
