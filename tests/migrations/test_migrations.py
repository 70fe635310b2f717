"""The migrations build exactly the schema the models describe, and run both ways."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from sesame.kit.db import create_engine
from sesame.migrations import current_revision, downgrade, head_revision, upgrade
from sesame.models import Base
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
