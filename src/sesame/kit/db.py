"""Engines and sessions for SQLite (the default) and PostgreSQL (production).

SQLite is tuned for a server: WAL so readers never block the writer, statements run on
the event loop's thread (``_InlineConnection``), a wait for another process's write lock
that leaves the loop free, foreign keys on. A transaction that will write
starts with ``BEGIN IMMEDIATE`` (see ``write_intent``): it takes the write lock up front
and waits for it, instead of starting as a reader and failing with ``SQLITE_BUSY`` when
it later tries to write after another writer committed.

Writers of one process take turns at a ``WriteGate`` before ``BEGIN IMMEDIATE``, urgent
ones first (see ``urgent``): the command path — an open, a device's result — never waits
behind more than the one background transaction already running, and never sleeps in
SQLite's busy handler for a lock its own process holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
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
from sqlalchemy.util import await_only

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


_urgent: contextvars.ContextVar[bool] = contextvars.ContextVar("sesame_urgent", default=False)


@contextmanager
def urgent() -> Iterator[None]:
    """Mark write transactions begun inside this block as urgent: someone waits for them
    (an HTTP request, a door about to open). They go before background writers (event
    ingest, notification routing, the ledger) at this process's ``WriteGate``."""
    token = _urgent.set(True)
    try:
        yield
    finally:
        _urgent.reset(token)


class WriteGate:
    """One write transaction at a time in this process, urgent ones first.

    SQLite has one write lock per database. A ``BEGIN IMMEDIATE`` that finds it taken
    sleeps in SQLite's busy handler between tries (1, 2, 5, 10 … 100 ms), so two writers
    of one process that collide cost each other milliseconds to a tenth of a second, and
    whoever tries at the right moment wins, not whoever matters. Taking turns here costs
    nothing (SQLite would serialise them anyway) and hands the lock over at once, urgent
    waiters first, then in arrival order. Other processes writing the same file still
    meet at SQLite's lock.

    The gate only orders; SQLite's lock is what keeps writers apart. So a waiter that has
    waited ``patience`` seconds goes on to ``BEGIN IMMEDIATE`` anyway, where SQLite's busy
    timeout applies as it would without the gate: a holder that waits for another writer
    of its own process, or a connection lost without returning to the pool, costs that
    wait, never a hang.
    """

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self._held = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, future in self._waiters if not future.done())

    async def acquire(self, *, urgent: bool) -> None:
        if not self._held and not self.waiting:
            self._held = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (0 if urgent else 1, next(self._order), future))
        try:
            await asyncio.wait_for(asyncio.shield(future), self.patience)
        except TimeoutError:
            future.cancel()
            _log.warning("write_gate_patience_exceeded", seconds=self.patience)
        except BaseException:
            if future.done() and not future.cancelled():
                self.release()  # handed over as this waiter gave up: pass it on
            else:
                future.cancel()
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # the gate stays held, by the waiter woken
                return
        self._held = False


_GATE = "sesame_write_gate"
_READER = "sesame_reader"  # an execution option: this engine's transactions only read


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


class _Checkpointer:
    """Moves the write-ahead log into the database file on a thread of its own.

    SQLite does it itself in the commit that grows the log past 1,000 pages: megabytes
    written and two syncs, tens of milliseconds, which on the loop's thread would stop
    every task of the process (an open among them). Inline connections turn that off;
    after commits this runs a passive checkpoint (it never blocks readers or writers)
    at most once per ``interval``, on a connection of its own, until no commit is left
    out. The thread is a daemon that ends when idle: it never holds up an exit, and a
    checkpoint cut short is one SQLite recovers from.
    """

    def __init__(self, path: Path, timeout_seconds: float, interval: float = 1.0) -> None:
        self.path = path
        self.timeout_seconds = timeout_seconds
        self.interval = interval
        self._lock = threading.Lock()
        self._dirty = False
        self._thread: threading.Thread | None = None

    def after_commit(self) -> None:
        with self._lock:
            self._dirty = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sqlite-checkpoint", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._dirty:
                    self._thread = None
                    return
                self._dirty = False  # commits from now on are taken by the next round
            try:
                with contextlib.closing(
                    sqlite3.connect(self.path, timeout=self.timeout_seconds)
                ) as db:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except Exception as exc:
                _log.warning("sqlite_checkpoint_failed", error_type=type(exc).__name__)
            time.sleep(self.interval)


def _configure_sqlite(engine: AsyncEngine, inline: Path | None, timeout_seconds: float) -> None:
    sync_engine = engine.sync_engine
    gate = WriteGate(patience=min(2.0, timeout_seconds))
    # Inline connections wait for other processes' locks themselves (``_InlineConnection``)
    # and leave checkpoints to a thread (``_Checkpointer``).
    busy_timeout_ms = 0 if inline else int(timeout_seconds * 1000)
    checkpointer = _Checkpointer(inline, timeout_seconds) if inline else None

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below) instead of the driver's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        if checkpointer is not None:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    if checkpointer is not None:

        @event.listens_for(sync_engine, "commit")
        def _on_commit(_connection: Any) -> None:
            checkpointer.after_commit()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        if options.get(_READER) or not _write_intent.get():
            connection.exec_driver_sql("BEGIN")
            return
        # Runs inside SQLAlchemy's greenlet: await_only waits on the event loop.
        await_only(gate.acquire(urgent=_urgent.get()))
        connection.connection.record_info[_GATE] = True  # released when the connection returns
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        # The transaction has ended (committed, or rolled back by the pool's reset).
        if record is not None and record.record_info.pop(_GATE, False):
            gate.release()


class _InlineConnection(aiosqlite.Connection):
    """aiosqlite's connection, with each call run on the event loop's own thread.

    aiosqlite hands every call (cursor, execute, fetch, close: four per statement) to a
    thread of its own and back, which costs more than the statement: SQLite answers a
    lookup by key or a small insert in tens of microseconds from its page cache, and WAL
    with ``synchronous=NORMAL`` makes a commit a write to the log without a sync. Only
    SQLite's busy handler would block the loop (sleeping while another process holds the
    write lock), so these connections have none: a busy answer is retried here, with
    the loop free between tries, until the connection's timeout.
    """

    busy_seconds = 10.0

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        delay = 0.001
        deadline: float | None = None
        while True:
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
                    raise
                now = asyncio.get_running_loop().time()
                deadline = now + self.busy_seconds if deadline is None else deadline
                if now >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)


def _inline_creator(path: str, timeout_seconds: float) -> Callable[[], Awaitable[Any]]:
    def connector() -> sqlite3.Connection:
        return sqlite3.connect(path, check_same_thread=False, timeout=0)

    async def create() -> aiosqlite.Connection:
        connection = _InlineConnection(connector, iter_chunk_size=64)
        connection.busy_seconds = timeout_seconds
        connection._thread.daemon = True
        return await connection

    return create


def create_engine(url: str, *, pool_size: int = 10, timeout_seconds: float = 10.0) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        inline = path is not None  # an in-memory database keeps its own thread
        extra: dict[str, Any] = (
            {"async_creator": _inline_creator(str(path), timeout_seconds)}
            if inline
            else {"connect_args": {"timeout": timeout_seconds, "check_same_thread": False}}
        )
        engine = create_async_engine(
            url,
            json_serializer=json_text,
            json_deserializer=orjson.loads,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=timeout_seconds,
            **extra,
        )
        _configure_sqlite(engine, path if inline else None, timeout_seconds)
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
    """Sessions for work that only reads, never a writer's, even within ``write_intent``.

    PostgreSQL: autocommit, so no BEGIN/ROLLBACK round trips around them; each statement
    sees committed data, and a read-only request needs nothing more (two of the four
    round trips of a typical GET). SQLite: a plain deferred ``BEGIN``, which costs
    nothing on a connection in this process, where switching a connection to autocommit
    and back at each checkout cost more than the query (0.37 ms a read, measured).
    """
    if engine.dialect.name == "sqlite":
        reader = engine.execution_options(**{_READER: True})
    else:
        reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    return async_sessionmaker(reader, expire_on_commit=False, autoflush=False)


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
