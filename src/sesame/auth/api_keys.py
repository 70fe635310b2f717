"""Partner API keys: listed, renamed and revoked like any resource; created in service.py.

Deleting a key revokes it: the row stays, with ``revoked_at``, so that what the key did
remains attributable.
"""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.api.crud import CrudService
from sesame.auth.principal import Action, Group
from sesame.auth.repository import ApiKeyRepository
from sesame.kit.errors import NotFound
from sesame.kit.repository import TenantScope
from sesame.models import ApiKey


class ApiKeyService(CrudService[ApiKey]):
    group = Group.API_KEYS
    noun = "api key"
    repository_class = ApiKeyRepository

    async def delete(self, object_id: UUID) -> None:
        self.principal.require(self.group, Action.WRITE)
        key = await self.visible(self.repository, object_id, self.noun)
        if key.revoked_at is None:
            key.revoked_at = self.runtime.clock.now()
            await self.repository.flush()
            self.runtime.credential_cache.clear()

    @staticmethod
    async def key_of(session: AsyncSession, key_id: UUID) -> ApiKey:
        key = await ApiKeyRepository(session).get(TenantScope.platform(), key_id)
        if key is None:
            raise NotFound("API key not found")
        return key
