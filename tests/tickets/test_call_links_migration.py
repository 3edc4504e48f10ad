"""Migrations on data written before them (SQLite and PostgreSQL). 0005: every call gets its own random
reference, and every existing link gets its maker from the tracking log, so playback can re-check it.
0006: every existing call record and recording is on the single node, node1."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from ticket_helpers import NOW, register

from core.db import Database
from cti.models import CallRecord
from recordings.models import Recording
from tests.conftest import alembic, migrate
from tickets.intake import register_voicemail_ticket
from tickets.models import TicketAction, TicketCall

SICHUAN = {"province": "四川省", "city": "成都市", "county": "武侯区", "complainant_phone": "13900000009"}


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:
    """A database of its own (the test migrates it down and up), built by the migrations."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'migration.db'}"
        migrate(url)
        yield url
        return
    server = make_url(request.getfixturevalue("postgresql_url"))
    name = f"migration_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    url = server.set(database=name).render_as_string(hide_password=False)
    migrate(url)
    try:
        yield url
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        await admin.dispose()


async def test_existing_calls_get_references_and_links_their_makers(db, db_url, users):
    agent, thief = users["agent"], users["sc_handler"]
    taken = CallRecord(call_id="1764590100.1", caller_number="13700000001", hotline="12301", agent_id=agent.id)
    stolen = CallRecord(call_id="1764590100.2", caller_number="13700000002", hotline="12301")
    message = CallRecord(call_id="1764590100.3", caller_number="13700000003", hotline="12301")
    async with db.transaction() as session:
        session.add_all([taken, stolen, message])
    ours = await register(db, agent, call_ids=[taken.ref])
    theirs = await register(db, agent, **SICHUAN)
    async with db.transaction() as session:
        voicemail = await register_voicemail_ticket(session, message, 20, NOW)
        # What the old 关联来电 stored for sc_handler: an unattributed link and the step naming the uniqueid.
        session.add(TicketCall(ticket_id=theirs.id, call_id=stolen.call_id))
        session.add(TicketAction(ticket_id=theirs.id, action="关联来电", operator_id=thief.id,
                                 operator_name=thief.display_name, at=NOW, state=theirs.state,
                                 remark=f"来电编号：{stolen.call_id}", inputs={"call_id": stolen.call_id}))
    old_refs = {taken.ref, stolen.ref, message.ref}
    await db.close()

    alembic(db_url, "downgrade", "0004")
    alembic(db_url, "upgrade", "head")

    migrated = Database(db_url)
    try:
        async with migrated.session() as session:
            refs = (await session.scalars(select(CallRecord.ref))).all()
            links = dict((await session.execute(select(TicketCall.ticket_id, TicketCall.linked_by_id))).all())
    finally:
        await migrated.close()
    assert len(refs) == len(set(refs)) == 3 and all(len(r) == 16 for r in refs) and not old_refs & set(refs)
    assert links == {ours.id: agent.id, theirs.id: thief.id, voicemail.id: None}


async def test_existing_calls_and_recordings_are_on_the_first_node(db, db_url):
    await db.close()
    alembic(db_url, "downgrade", "0005")
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO call_records (call_id, ref, direction, state, started_at, "
                                    "hold_seconds, abandoned, source, agents_rung, transfers) VALUES ('1764590200.1', "
                                    "'r-before-nodes', 'inbound', 'ENDED', '2026-12-01 10:00:00', 0, false, 'ami', "
                                    "'[]', '[]')"))
            await conn.execute(text("INSERT INTO recordings (call_id, kind, started_at, path, format, legal_hold, "
                                    "transcript_status, created_at) VALUES ('1764590200.1', 'call', "
                                    "'2026-12-01 10:00:00', 'calls/x.opus', 'opus', false, 'done', "
                                    "'2026-12-01 10:00:00')"))
    finally:
        await engine.dispose()
    alembic(db_url, "upgrade", "head")

    migrated = Database(db_url)
    try:
        async with migrated.session() as session:
            record = await session.scalar(select(CallRecord).where(CallRecord.call_id == "1764590200.1"))
            recording = await session.scalar(select(Recording).where(Recording.call_id == "1764590200.1"))
    finally:
        await migrated.close()
    assert (record.node, recording.node) == ("node1", "node1")
