"""SQL for the outbox."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from sesame.models import OutboxMessage


def message(
    topic: str, *, partner_id: UUID | None, aggregate_id: UUID | None, **payload: Any
) -> dict[str, Any]:
    return {
        "topic": topic,
        "partner_id": partner_id,
        "aggregate_id": aggregate_id,
        "payload": _json_ready(payload),
    }


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


async def append(session: AsyncSession, messages: Iterable[dict[str, Any]]) -> None:
    """Add domain events to the current transaction; they exist only if it commits."""
    rows = list(messages)
    if rows:
        await session.execute(insert(OutboxMessage), rows)


async def read_after(
    session: AsyncSession, after_id: int, limit: int = 500, topic_prefix: str | None = None
) -> Sequence[OutboxMessage]:
    statement = select(OutboxMessage).where(OutboxMessage.id > after_id)
    if topic_prefix:
        statement = statement.where(OutboxMessage.topic.startswith(topic_prefix))
    result = await session.execute(statement.order_by(OutboxMessage.id).limit(limit))
    return result.scalars().all()
