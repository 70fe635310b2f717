"""SQL for authentication: accounts, sessions, refresh tokens, API keys, codes and counters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sesame.kit.db import dialect_insert
from sesame.kit.repository import CrudRepository
from sesame.models import (
    ApiKey,
    AuthSession,
    IdempotencyRecord,
    OtpChallenge,
    Person,
    RateLimitCounter,
    RefreshToken,
)


class ApiKeyRepository(CrudRepository[ApiKey]):
    model = ApiKey

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if query.partner_id is not None:
            clauses.append(ApiKey.partner_id == query.partner_id)
        if query.revoked is True:
            clauses.append(ApiKey.revoked_at.is_not(None))
        elif query.revoked is False:
            clauses.append(ApiKey.revoked_at.is_(None))
        return clauses

    async def by_prefix(self, prefix: str) -> ApiKey | None:
        result = await self.session.execute(select(ApiKey).where(ApiKey.prefix == prefix))
        return result.scalar_one_or_none()

    async def touch(self, key_id: UUID, when: datetime) -> None:
        await self.session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when)
        )


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, auth_session: AuthSession, token: RefreshToken) -> None:
        self.session.add(auth_session)
        await self.session.flush()
        self.session.add(token)
        await self.session.flush()

    async def get(self, session_id: UUID) -> AuthSession | None:
        return await self.session.get(AuthSession, session_id)

    async def add_refresh_token(self, token: RefreshToken) -> None:
        self.session.add(token)
        await self.session.flush()

    async def use_refresh_token(self, token_digest: str, when: datetime) -> UUID | None:
        """Mark an unused, unexpired token used and return its session; atomic across processes."""
        result = await self.session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.token_digest == token_digest,
                RefreshToken.used_at.is_(None),
                RefreshToken.expires_at > when,
            )
            .values(used_at=when)
            .returning(RefreshToken.session_id)
        )
        return result.scalar_one_or_none()

    async def refresh_token_session(self, token_digest: str) -> UUID | None:
        result = await self.session.execute(
            select(RefreshToken.session_id).where(RefreshToken.token_digest == token_digest)
        )
        return result.scalar_one_or_none()

    async def revoke(self, session_id: UUID, when: datetime) -> None:
        await self.session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=when)
        )

    async def revoke_all_for_staff(
        self, staff_id: UUID, when: datetime, *, keep: UUID | None = None
    ) -> None:
        statement = update(AuthSession).where(
            AuthSession.staff_id == staff_id, AuthSession.revoked_at.is_(None)
        )
        if keep is not None:
            statement = statement.where(AuthSession.id != keep)
        await self.session.execute(statement.values(revoked_at=when))


class OtpRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, challenge: OtpChallenge) -> None:
        self.session.add(challenge)
        await self.session.flush()

    async def latest_open(self, phone: str, now: datetime) -> OtpChallenge | None:
        result = await self.session.execute(
            select(OtpChallenge)
            .where(
                OtpChallenge.phone == phone,
                OtpChallenge.consumed_at.is_(None),
                OtpChallenge.expires_at > now,
            )
            .order_by(OtpChallenge.created_at.desc(), OtpChallenge.id.desc())
            .limit(1)
        )
        return result.scalar_one_or_none()

    async def count_attempt(self, challenge_id: UUID) -> int:
        result = await self.session.execute(
            update(OtpChallenge)
            .where(OtpChallenge.id == challenge_id)
            .values(attempts=OtpChallenge.attempts + 1)
            .returning(OtpChallenge.attempts)
        )
        return int(result.scalar_one())

    async def consume(self, challenge_id: UUID, when: datetime) -> bool:
        result = await self.session.execute(
            update(OtpChallenge)
            .where(OtpChallenge.id == challenge_id, OtpChallenge.consumed_at.is_(None))
            .values(consumed_at=when)
            .returning(OtpChallenge.id)
        )
        return result.scalar_one_or_none() is not None

    async def person_ids_for_phone(self, phone: str) -> Sequence[UUID]:
        result = await self.session.execute(select(Person.id).where(Person.phone == phone))
        return result.scalars().all()

    async def locale_for_phone(self, phone: str) -> str | None:
        """The locale of the person with this phone (the most recently updated, should
        several partners know it); None for a phone no one has."""
        result = await self.session.execute(
            select(Person.locale)
            .where(Person.phone == phone)
            .order_by(Person.updated_at.desc(), Person.id)
            .limit(1)
        )
        return result.scalar_one_or_none()


class RateLimitRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def increment(self, key: str, window_start: int, expires_at: datetime) -> int:
        insert = dialect_insert(self.session.get_bind().dialect)
        statement = insert(RateLimitCounter).values(
            key=key, window_start=window_start, count=1, expires_at=expires_at
        )
        statement = statement.on_conflict_do_update(
            index_elements=[RateLimitCounter.key, RateLimitCounter.window_start],
            set_={"count": RateLimitCounter.count + 1},
        ).returning(RateLimitCounter.count)
        result = await self.session.execute(statement)
        return int(result.scalar_one())

    async def current(self, key: str, window_start: int) -> int:
        result = await self.session.execute(
            select(RateLimitCounter.count).where(
                RateLimitCounter.key == key, RateLimitCounter.window_start == window_start
            )
        )
        return int(result.scalar_one_or_none() or 0)


async def purge_expired(session: AsyncSession, now: datetime) -> dict[str, int]:
    """Delete rows whose only purpose has passed; safe to run from every process at once."""
    removed = {}
    for name, statement in (
        ("otp_challenges", delete(OtpChallenge).where(OtpChallenge.expires_at < now)),
        ("rate_limit_counters", delete(RateLimitCounter).where(RateLimitCounter.expires_at < now)),
        (
            "idempotency_records",
            delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now),
        ),
        (
            "auth_sessions",
            delete(AuthSession).where(AuthSession.expires_at < now),
        ),
    ):
        result = await session.execute(statement)
        removed[name] = int(getattr(result, "rowcount", 0) or 0)
    return removed
