"""The transactional outbox: domain events, written with the change, in commit order.

``append`` does not insert at once. The messages wait in the session and are inserted as
the transaction commits (a ``before_commit`` hook), on PostgreSQL under a transaction
advisory lock that is released only once the commit is visible. Ids therefore follow
commit order: when a reader sees message ``n``, every message below ``n`` that will ever
exist is already visible. A consumer can keep one number — the last id it handled — and
never skip a message that committed late, nor wait for one that rolled back.

On SQLite writers already commit one at a time (``BEGIN IMMEDIATE``), so no lock is needed.
The lock serialises only the last instant of transactions that emit events (the insert
and the commit), a fraction of a millisecond each.

Each message records who caused it: the ``actor`` bound to the request or job (see
``sesame.outbox.actor``) unless the message names one itself.

A consumer may register a *sealer* for an engine (``set_sealer``): a function that sees
each row just before it is inserted and may set its ``created_at`` and ``seal``. The
ledger signs its events there, in the committing process.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast
from uuid import UUID

from sqlalchemy import Row, Table, event, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from sesame.models import OutboxMessage
from sesame.models.base import utcnow
from sesame.outbox.actor import current_actor

PENDING = "outbox_pending"
COMMITTING = "outbox_committing"
# pg_advisory_xact_lock key: "sesame outbox order".
ORDER_LOCK = 0x5E5A_0B0C


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
    if isinstance(value, list | tuple | set | frozenset):
        items = [_json_ready(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, str):
        return str(value)  # a StrEnum becomes its plain value
    return value


async def append(session: AsyncSession, messages: Iterable[dict[str, Any]]) -> None:
    """Add domain events to the current transaction; they exist only if it commits."""
    actor = current_actor()
    rows = []
    for row in messages:
        payload = row["payload"]
        if "actor" not in payload:
            payload = {**payload, "actor": _json_ready(actor)}
        rows.append({**row, "payload": payload})
    if rows:
        session.sync_session.info.setdefault(PENDING, []).extend(rows)


Sealer = Callable[[dict[str, Any]], None]
_sealers: weakref.WeakKeyDictionary[Any, Sealer] = weakref.WeakKeyDictionary()


def set_sealer(engine: AsyncEngine, sealer: Sealer | None) -> None:
    """Have ``sealer`` see every row committed through ``engine`` (None: no longer)."""
    if sealer is None:
        _sealers.pop(engine.sync_engine, None)
    else:
        _sealers[engine.sync_engine] = sealer


Listener = Callable[[frozenset[str]], None]
_listeners: list[Listener] = []


def on_commit(listener: Listener) -> Callable[[], None]:
    """Call ``listener`` with the topics of each committed transaction of this process
    (so consumers here can act at once instead of at their next poll). Returns the
    function that removes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


_OUTBOX = cast(Table, OutboxMessage.__table__)
_INSERT = insert(_OUTBOX)  # built once: its cache key is computed once, not per commit


@event.listens_for(Session, "before_commit")
def _insert_in_commit_order(session: Session) -> None:
    rows = session.info.pop(PENDING, None)
    if not rows:
        return
    bind = session.get_bind()
    sealer = _sealers.get(getattr(bind, "engine", bind))
    now = utcnow()
    for row in rows:
        row["created_at"] = now
        row["seal"] = None
        if sealer is not None:
            sealer(row)
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ORDER_LOCK})
    # Core, not the ORM's bulk insert: the rows are plain values, and this runs per commit.
    session.connection().execute(_INSERT, rows)
    session.info[COMMITTING] = frozenset(row["topic"] for row in rows)


@event.listens_for(Session, "after_commit")
def _announce(session: Session) -> None:
    topics = session.info.pop(COMMITTING, None)
    for listener in list(_listeners) if topics else ():
        try:
            listener(topics)
        except Exception:  # noqa: S112 - a consumer's wake-up call must not fail a commit
            continue


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, _previous: Any) -> None:
    session.info.pop(PENDING, None)
    session.info.pop(COMMITTING, None)


async def read_after(
    session: AsyncSession,
    after_id: int,
    *,
    up_to: int | None = None,
    topics: Iterable[str] | None = None,
    limit: int = 500,
    columns: Iterable[str] | None = None,
) -> Sequence[Row[Any]]:
    """Messages after ``after_id`` (and at most ``up_to``), oldest first, as plain rows
    with every column or only ``columns``: consumers read many and change none."""
    table = OutboxMessage.__table__
    chosen = [table.c[name] for name in columns] if columns is not None else list(table.c)
    statement = select(*chosen).where(OutboxMessage.id > after_id)
    if up_to is not None:
        statement = statement.where(OutboxMessage.id <= up_to)
    if topics is not None:
        statement = statement.where(OutboxMessage.topic.in_(sorted(topics)))
    result = await session.execute(statement.order_by(OutboxMessage.id).limit(limit))
    return result.all()


async def by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Row[Any]]:
    """Whole messages by id."""
    if not ids:
        return {}
    result = await session.execute(
        select(*OutboxMessage.__table__.c).where(OutboxMessage.id.in_(ids))
    )
    return {row.id: row for row in result.all()}


async def last_id(session: AsyncSession) -> int:
    return int((await session.execute(select(func.max(OutboxMessage.id)))).scalar() or 0)
