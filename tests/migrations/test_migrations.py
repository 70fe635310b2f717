"""The migrations build exactly the schema the models describe, and run both ways."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Table, column, inspect, select, table, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from sesame.kit.db import create_engine
from sesame.migrations import current_revision, downgrade, head_revision, upgrade
from sesame.models import (
    AccessEvent,
    AccessMethod,
    AccessResult,
    ActionAttempt,
    AttemptPhase,
    AttemptStatus,
    Base,
    IdempotencyRecord,
    Key,
    KeyKind,
    KeyStatus,
    TargetKind,
)
from tests.conftest import BACKENDS, drop_postgres_database, fresh_database


@pytest.fixture(params=BACKENDS)
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    url = await fresh_database(request.param, tmp_path)
    yield url
    if request.param == "postgresql":
        await drop_postgres_database(url)


async def _diff_and_tables(url: str) -> tuple[list[object], set[str]]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:

            def inspect_sync(sync_connection: object) -> tuple[list[object], set[str]]:
                context = MigrationContext.configure(sync_connection, opts={"compare_type": True})  # type: ignore[arg-type]
                diff = compare_metadata(context, Base.metadata)
                return diff, set(inspect(sync_connection).get_table_names())

            return await connection.run_sync(inspect_sync)
    finally:
        await engine.dispose()


async def test_migrations_match_the_models(empty_database: str) -> None:
    await asyncio.to_thread(upgrade, empty_database)
    diff, tables = await _diff_and_tables(empty_database)
    assert diff == []
    assert set(Base.metadata.tables) <= tables


async def test_migrations_go_down_and_up_again(empty_database: str) -> None:
    await asyncio.to_thread(upgrade, empty_database)
    await asyncio.to_thread(downgrade, empty_database, "base")
    _, tables = await _diff_and_tables(empty_database)
    assert tables <= {"alembic_version"}
    await asyncio.to_thread(upgrade, empty_database)
    engine = create_engine(empty_database, pool_size=1)
    try:
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


# The migration that renames residents recorded by phone, and the revision before it.
REWRITE, BEFORE_REWRITE = "0009", "0008"


async def _write_old_rows(
    connection: AsyncConnection, orm_table: Table, rows: list[dict[str, Any]] | dict[str, Any]
) -> None:
    """Rows written at an old revision: only the columns the table has at that revision
    (later migrations add others), typed and defaulted as the models do."""
    present = {
        info["name"]
        for info in await connection.run_sync(
            lambda sync: inspect(sync).get_columns(orm_table.name)
        )
    }
    batch = []
    for row in rows if isinstance(rows, list) else [rows]:
        full = dict(row)
        for name in present - full.keys():
            default = orm_table.c[name].default
            if default is not None and default.is_scalar:
                full[name] = default.arg
            elif default is not None and default.is_callable:
                full[name] = default.arg({})
        batch.append(full)
    names = sorted(set().union(*batch))
    old = table(orm_table.name, *(column(name, orm_table.c[name].type) for name in names))
    await connection.execute(old.insert(), batch)


async def test_rows_naming_residents_by_phone_are_rewritten(empty_database: str) -> None:
    """Keys given, doors opened and requests made by residents before they had opaque ids
    name them by phone; the upgrade leaves the person record instead, and reason codes."""
    await asyncio.to_thread(upgrade, empty_database, BEFORE_REWRITE)
    person, other, partner, site = uuid4(), uuid4(), uuid4(), uuid4()
    shared, guest, staff_key, opened, unknown = uuid4(), uuid4(), uuid4(), uuid4(), uuid4()
    now = datetime.now(UTC)
    key_row = {
        "partner_id": partner,
        "site_id": site,
        "person_id": other,
        "target_kind": TargetKind.UNIT,
        "uses_count": 0,
        "issued_by_person_id": None,
        "created_at": now,
        "updated_at": now,
    }
    # Foreign keys off (this database is thrown away): only the rows the migration reads
    # matter here.
    engine = create_async_engine(empty_database)
    try:
        async with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                for table in ("keys", "action_attempts", "access_events"):
                    await connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER ALL"))
            await _write_old_rows(
                connection,
                Key.__table__,
                [
                    {
                        **key_row,
                        "id": shared,
                        "kind": KeyKind.HOUSEHOLD,
                        "status": KeyStatus.REVOKED,
                        "name": "shared by +821012345678",
                        "issued_by": "resident:+821012345678",
                        "issued_by_person_id": person,
                        "revoked_reason": "revoked by resident:+821012345678",
                    },
                    {
                        **key_row,
                        "id": guest,
                        "kind": KeyKind.GUEST,
                        "status": KeyStatus.REVOKED,
                        "name": "guest of +821012345678",
                        "issued_by": "resident:+821012345678",
                        "revoked_reason": "moved out",
                    },
                    {
                        **key_row,
                        "id": staff_key,
                        "kind": KeyKind.COURIER,
                        "status": KeyStatus.REVOKED,
                        "name": "CJ",
                        "issued_by": f"staff:{other}",
                        "revoked_reason": f"revoked by staff:{other}",
                    },
                ],
            )
            attempt_row = {
                "partner_id": partner,
                "site_id": site,
                "device_id": uuid4(),
                "action": "open",
                "params": {},
                "status": AttemptStatus.SUCCESS,
                "phase": AttemptPhase.DONE,
                "was_confirmed_by_device": True,
                "send_count": 1,
                "created_at": now,
                "expires_at": now,
                "requested_by": "resident:+821012345678",
            }
            await _write_old_rows(
                connection,
                ActionAttempt.__table__,
                [{**attempt_row, "id": opened}, {**attempt_row, "id": unknown}],
            )
            await _write_old_rows(
                connection,
                AccessEvent.__table__,
                {
                    "id": uuid4(),
                    "partner_id": partner,
                    "site_id": site,
                    "at": now,
                    "result": AccessResult.GRANTED,
                    "method": AccessMethod.REMOTE,
                    "person_id": person,
                    "action_attempt_id": opened,
                },
            )
            record = {
                "fingerprint": "f",
                "status_code": 201,
                "headers": {},
                "body": b"",
                "created_at": now,
                "expires_at": now,
            }
            await _write_old_rows(
                connection,
                IdempotencyRecord.__table__,
                [
                    {**record, "id": uuid4(), "scope": "resident:+821012345678", "key": "a"},
                    {**record, "id": uuid4(), "scope": f"staff:{other}", "key": "a"},
                ],
            )
        await asyncio.to_thread(upgrade, empty_database, REWRITE)  # this migration alone
        async with engine.connect() as connection:
            keys = {
                row.id: row
                for row in await connection.execute(
                    select(Key.id, Key.name, Key.issued_by, Key.revoked_reason)
                )
            }
            attempts = {
                row.id: row.requested_by
                for row in await connection.execute(
                    select(ActionAttempt.id, ActionAttempt.requested_by)
                )
            }
            scopes = (await connection.execute(select(IdempotencyRecord.scope))).scalars().all()
    finally:
        await engine.dispose()
    assert keys[shared][1:] == ("Shared key", f"resident:{person}", "revoked_by_resident")
    assert keys[guest][1:] == ("Guest pass", "resident", "moved_out")
    assert keys[staff_key][1:] == ("CJ", f"staff:{other}", "revoked_by_staff")
    assert attempts == {opened: f"resident:{person}", unknown: "resident"}
    assert scopes == [f"staff:{other}"]
