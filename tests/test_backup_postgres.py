"""./hotline backup and restore of a PostgreSQL platform: pg_dump into the snapshot, pg_restore on the new one."""

from __future__ import annotations

import asyncio

import asyncpg

from cli.backup import _libpq_url, backup, restore
from cli.postgres import throwaway_postgresql
from core.settings import load_settings
from tests.conftest import migrate


async def _query(url: str, sql: str) -> list:
    conn = await asyncpg.connect(_libpq_url(url))
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


def test_a_postgresql_backup_restores_into_another_database(tmp_path):
    with throwaway_postgresql() as source_url, throwaway_postgresql() as target_url:
        migrate(source_url)
        asyncio.run(_query(source_url, "INSERT INTO ticket_counters (day, last) VALUES ('20261201', 41)"))
        source = load_settings(tmp_path / "live", env={"HOTLINE_DATABASE_URL": source_url})
        snapshot = backup(source, tmp_path / "backups")
        asyncio.run(_query(source_url, "UPDATE ticket_counters SET last = 42"))  # after the snapshot

        target = load_settings(tmp_path / "new", env={"HOTLINE_DATABASE_URL": target_url})
        assert restore(target, tmp_path / "backups") == snapshot
        assert asyncio.run(_query(target_url, "SELECT day, last FROM ticket_counters")) == [("20261201", 41)]
        assert asyncio.run(_query(target_url, "SELECT version_num FROM alembic_version")) == \
            asyncio.run(_query(source_url, "SELECT version_num FROM alembic_version"))
