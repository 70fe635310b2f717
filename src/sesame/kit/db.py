"""Engines and sessions for SQLite (the default) and PostgreSQL (production).

SQLite is tuned for a server: WAL so readers never block the writer, a busy timeout
instead of instant "database is locked", foreign keys on. A transaction that will write
starts with ``BEGIN IMMEDIATE`` (see ``write_intent``): it takes the write lock up front
and waits for it, instead of starting as a reader and failing with ``SQLITE_BUSY`` when
it later tries to write after another writer committed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import DateTime, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import TypeDecorator

from sesame.kit.logging import get_logger

_log = get_logger("sesame.db")

_write_intent: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sesame_write_intent", default=False
)


@contextmanager
def write_intent() -> Iterator[None]:
    """Mark transactions begun inside this block as writers (``BEGIN IMMEDIATE`` on SQLite)."""
    token = _write_intent.set(True)
    try:
        yield
    finally:
        _write_intent.reset(token)


def set_write_intent(value: bool) -> contextvars.Token[bool]:
    return _write_intent.set(value)


def reset_write_intent(token: contextvars.Token[bool]) -> None:
    _write_intent.reset(token)


def _sqlite_path(url: str) -> Path | None:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path.startswith(":memory:") or path.startswith("file:"):
        return None
    return Path(path.split("?", 1)[0])


def json_text(value: Any) -> str:
    """JSON columns through orjson: several times faster than the standard library, which
    matters to consumers that read the outbox by the thousand."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below) instead of the driver's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return
        connection.exec_driver_sql("BEGIN IMMEDIATE" if _write_intent.get() else "BEGIN")


def create_engine(url: str, *, pool_size: int = 10, timeout_seconds: float = 10.0) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            json_serializer=json_text,
            json_deserializer=orjson.loads,
            connect_args={"timeout": timeout_seconds, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=timeout_seconds,
        )
        _configure_sqlite(engine, int(timeout_seconds * 1000))
        return engine
    # A fixed pool: requests beyond it wait for a connection rather than open and close
    # short-lived overflow connections, which costs more than the wait.
    return create_async_engine(
        url,
        json_serializer=json_text,
        json_deserializer=orjson.loads,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=timeout_seconds,
        pool_pre_ping=False,
        connect_args={
            "timeout": timeout_seconds,
            "command_timeout": timeout_seconds * 3,
            "server_settings": {"application_name": "sesame"},
        },
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def create_read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that only read: no BEGIN/ROLLBACK round trips around them.

    Each statement sees committed data; a read-only request needs nothing more, and it
    saves two of the four round trips of a typical GET.
    """
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    return async_sessionmaker(autocommit, expire_on_commit=False, autoflush=False)


AfterCommit = Callable[[], Awaitable[None]]


def after_commit(
    session: AsyncSession, callback: AfterCommit, *, must_succeed: bool = False
) -> None:
    """Run ``callback`` once the session's current transaction has committed.

    For effects outside the database that must not happen for work that is rolled back,
    and calls out that must not run while a transaction holds its locks: publishing a
    command, disconnecting a device, sending a text. The edge that commits runs them.
    With ``must_succeed`` the callback's failure reaches whoever committed (the client
    hears that its code was not sent); otherwise it is only logged.
    """
    session.info.setdefault("after_commit", []).append((callback, must_succeed))


def take_after_commit(session: AsyncSession) -> list[tuple[AfterCommit, bool]]:
    callbacks: list[tuple[AfterCommit, bool]] = session.info.pop("after_commit", [])
    return callbacks


async def commit(session: AsyncSession) -> None:
    """Commit, then run what ``after_commit`` registered. A failing callback is logged,
    not raised (the work is committed and whoever waits for it must hear so), unless it
    was registered ``must_succeed``: then the first such failure is raised after every
    callback has run."""
    await session.commit()
    failure: Exception | None = None
    for callback, must_succeed in take_after_commit(session):
        try:
            await callback()
        except Exception as exc:
            if must_succeed:
                failure = failure or exc
            else:
                _log.warning("after_commit_failed", error_type=type(exc).__name__)
    if failure is not None:
        raise failure


async def ping(engine: AsyncEngine) -> None:
    """One round trip to the database; raises if it does not answer."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def try_advisory_xact_lock(session: AsyncSession, key: int) -> bool:
    """A transaction-scoped advisory lock on PostgreSQL, for work one process at a time
    does; SQLite's writers already take turns (``BEGIN IMMEDIATE``), so there it is
    always granted."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    result = await session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key})
    return bool(result.scalar())


def dialect_insert(dialect: Dialect) -> Any:
    """``insert`` with ``on_conflict_do_*`` for the session's dialect."""
    return postgresql.insert if dialect.name == "postgresql" else sqlite.insert


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
