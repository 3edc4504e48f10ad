"""Fixtures of the CTI's database-only tests."""

from __future__ import annotations

import pytest

from core.db import Database
from cti.models import CallbackRequest, CallRecord


@pytest.fixture
async def callback_db(db_url: str):
    """The callback list on SQLite and PostgreSQL, emptied afterwards (with the tests' own out-test-* calls)."""
    database = Database(db_url)
    yield database
    async with database.transaction() as session:
        await session.execute(CallbackRequest.__table__.delete())
        await session.execute(CallRecord.__table__.delete().where(CallRecord.call_id.like("out-test-%")))
    await database.close()
