"""Migrations on data written before them (SQLite and PostgreSQL). 0005: every call gets its own random
reference, and every existing link gets its maker from the tracking log, so playback can re-check it.
0006: every existing call record and recording is on the single node, node1."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from ticket_helpers import NOW, register

from core.db import Database, UTCDateTime
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


async def _upgraded(db_url: str, revision: str, *writes: tuple[Any, Any]) -> Database:
    """The database taken down to ``revision``, rows written there with plain SQL (``(statement, params)``),
    then upgraded to the newest revision."""
    alembic(db_url, "downgrade", revision)
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            for statement, params in writes:
                await conn.execute(statement, params)
    finally:
        await engine.dispose()
    alembic(db_url, "upgrade", "head")
    return Database(db_url)


async def test_existing_calls_and_recordings_are_on_the_first_node(db, db_url):
    await db.close()
    migrated = await _upgraded(
        db_url, "0005",
        (text("INSERT INTO call_records (call_id, ref, direction, state, started_at, "
              "hold_seconds, abandoned, source, agents_rung, transfers) VALUES ('1764590200.1', "
              "'r-before-nodes', 'inbound', 'ENDED', '2026-12-01 10:00:00', 0, false, 'ami', '[]', '[]')"), {}),
        (text("INSERT INTO recordings (call_id, kind, started_at, path, format, legal_hold, "
              "transcript_status, created_at) VALUES ('1764590200.1', 'call', '2026-12-01 10:00:00', "
              "'calls/x.opus', 'opus', false, 'done', '2026-12-01 10:00:00')"), {}))
    try:
        async with migrated.session() as session:
            record = await session.scalar(select(CallRecord).where(CallRecord.call_id == "1764590200.1"))
            recording = await session.scalar(select(Recording).where(Recording.call_id == "1764590200.1"))
    finally:
        await migrated.close()
    assert (record.node, recording.node) == ("node1", "node1")


async def test_existing_calls_get_the_waits_the_report_sums(db, db_url):
    """0017: the rows already there get arrival_wait and answer_wait from their timestamps, microseconds
    kept (SQLite's date functions alone would round 14.9996 s to 15.0 s, past GB/T 33358's 15 s)."""
    await db.close()
    t = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)
    rows = [("mw-answered", t + dt.timedelta(seconds=0.9996), t + dt.timedelta(seconds=14.9996), 14.0),
            ("mw-abandoned", t + dt.timedelta(seconds=6), None, 25.0),
            ("mw-direct", None, t + dt.timedelta(seconds=3.5), None)]
    insert = text("INSERT INTO call_records (call_id, ref, node, direction, state, started_at, queued_at, answered_at, "
                  "wait_seconds, hold_seconds, abandoned, source, agents_rung, transfers) VALUES (:c, :c, 'node1', "
                  "'inbound', 'ENDED', :s, :q, :a, :w, 0, false, 'ami', '[]', '[]')").bindparams(
        *(bindparam(name, type_=UTCDateTime()) for name in ("s", "q", "a")))
    migrated = await _upgraded(db_url, "0016", *((insert, {"c": call_id, "s": t, "q": queued, "a": answered, "w": wait})
                                                for call_id, queued, answered, wait in rows))
    try:
        async with migrated.session() as session:
            waits = {c: (a, w) for c, a, w in await session.execute(
                select(CallRecord.call_id, CallRecord.arrival_wait, CallRecord.answer_wait))}
    finally:
        await migrated.close()
    assert waits["mw-answered"] == (pytest.approx(14.9996, abs=1e-9), pytest.approx(14.0, abs=1e-9))
    assert waits["mw-abandoned"] == (None, 25.0)   # unanswered: the CTI's queue wait, no arrival wait
    assert waits["mw-direct"] == (3.5, None)       # answered without a queue: no queue wait measured


# --- the previous release's database, with data in it, upgraded by `./hotline up` (issue 20, item 3) ------
# The last release before this one (commit c65565d, 2026-12-01 11:58) shipped schema 0005: the database
# is built by the migrations up to 0005 and filled through that schema's own tables (reflected from the
# database, not from today's models), as that release wrote it.
PREVIOUS_RELEASE = "0005"
T0 = "2026-12-01 09:30:00"


def _previous_release_rows(password_hash: str) -> dict[str, list[dict]]:
    """Representative rows of each kind an operator has: units, users, calls (answered, abandoned, voice
    message), recordings, tickets with their steps, links, evidence and reminders, callbacks, audit, playbacks."""
    return {
        "units": [
            {"id": 1, "code": "callcentre", "name": "12301/12365 热线中心", "level": "CALL_CENTRE", "path": "/1/"},
            {"id": 2, "code": "sc_unit", "name": "四川省文化和旅游厅", "level": "PROVINCE", "parent_id": 1,
             "path": "/1/2/", "province": "四川省"},
        ],
        "users": [
            {"id": 1, "username": "agent1", "display_name": "王丽", "password_hash": password_hash, "role": "AGENT",
             "unit_id": 1, "skills": "12301-complaint", "agent_number": "101", "active": True, "created_at": T0},
            {"id": 2, "username": "sc_handler", "display_name": "四川承办人", "password_hash": password_hash,
             "role": "UNIT_HANDLER", "unit_id": 2, "skills": "", "active": True, "created_at": T0},
        ],
        "call_records": [
            {"id": 1, "call_id": "1764581400.1", "ref": "a" * 16, "direction": "inbound", "hotline": "12301",
             "did": "12301", "caller_number": "13800000001", "state": "ENDED", "started_at": T0,
             "queued_at": "2026-12-01 09:30:20", "answered_at": "2026-12-01 09:30:31",
             "ended_at": "2026-12-01 09:35:00", "ivr_path": "2>1", "business": "complaint",
             "queue": "12301-complaint", "agents_rung": ["agent1"], "agent_id": 1, "agent_extension": "8001",
             "transfers": [], "wait_seconds": 11.0, "talk_seconds": 269.0, "hold_seconds": 0.0, "abandoned": False,
             "hangup_cause": "16", "recording_file": "calls/2026/12/01/1764581400.1.wav", "source": "ami"},
            {"id": 2, "call_id": "1764581500.2", "ref": "b" * 16, "direction": "inbound", "hotline": "12301",
             "caller_number": "13800000002", "state": "ENDED", "started_at": "2026-12-01 09:31:40",
             "ended_at": "2026-12-01 09:32:40", "queue": "12301-general", "agents_rung": [], "transfers": [],
             "wait_seconds": 60.0, "hold_seconds": 0.0, "abandoned": True, "hangup_cause": "16", "source": "cdr"},
            {"id": 3, "call_id": "1764581600.3", "ref": "c" * 16, "direction": "inbound", "hotline": "12365",
             "caller_number": "13800000003", "state": "ENDED", "started_at": "2026-12-01 09:33:20",
             "ended_at": "2026-12-01 09:34:00", "agents_rung": [], "transfers": [], "hold_seconds": 0.0,
             "abandoned": False, "voicemail_file": "voicemail/1764581600.3.wav", "source": "ami"},
        ],
        "recordings": [
            {"id": 1, "call_id": "1764581400.1", "kind": "call", "caller_number": "13800000001",
             "agent_extension": "8001", "started_at": T0, "duration_seconds": 300.0,
             "path": "calls/2026/12/01/1764581400.1.opus", "format": "opus", "size_bytes": 221184,
             "sha256": "0" * 64, "legal_hold": True, "transcript": "我要投诉旅行社", "transcript_status": "done",
             "ticket_number": "12301261201001", "hotline": "12301", "created_at": "2026-12-01 09:35:05"},
            {"id": 2, "call_id": "1764581600.3", "kind": "voicemail", "caller_number": "13800000003",
             "started_at": "2026-12-01 09:33:20", "duration_seconds": 20.0,
             "path": "voicemail/1764581600.3.opus", "format": "opus", "legal_hold": False,
             "transcript_status": "pending", "hotline": "12365", "created_at": "2026-12-01 09:34:05"},
        ],
        "recording_playbacks": [
            {"id": 1, "recording_id": 1, "user_id": 1, "at": "2026-12-01 10:00:00", "range_header": "bytes=0-",
             "client_address": "127.0.0.1"},
        ],
        "tickets": [
            {"id": 1, "number": "12301261201001", "kind": "complaint", "hotline": "12301", "state": "pending_transferred",
             "source": "agent", "complainant_name": "张三", "complainant_phone": "13800000001",
             "respondent_name": "成都某旅行社", "complaint_object": "travel_agency", "province": "四川省",
             "city": "成都市", "county": "武侯区", "amount": "1280.50", "group_size": 3,
             "description": "强制购物，要求退款", "unit_id": 2, "unit_path": "/1/2/", "centre_unit_id": 1,
             "transfer_chain": [{"unit": "sc_unit", "at": "2026-12-01 09:40:00"}],
             "transferred_at": "2026-12-01 09:40:00", "risk_level": "II", "risk_reasons": ["群体投诉"],
             "risk_auto_level": "II", "supervised": False, "acceptance_due": "2026-12-02",
             "handling_due": "2026-12-31", "deadlines_provisional": False, "created_at": "2026-12-01 09:36:00",
             "created_by_id": 1, "created_by_name": "王丽", "review_status": "none"},
            {"id": 2, "number": "12365261201001", "kind": "consult", "hotline": "12365", "state": "answered",
             "source": "voicemail", "complainant_phone": "13800000003", "group_size": 1,
             "description": "咨询质量投诉流程", "unit_id": 1, "unit_path": "/1/", "centre_unit_id": 1,
             "transfer_chain": [], "risk_reasons": [], "supervised": False, "deadlines_provisional": True,
             "created_at": "2026-12-01 09:34:10", "closed_at": "2026-12-01 11:00:00", "review_status": "none"},
        ],
        "ticket_actions": [
            {"id": 1, "ticket_id": 1, "action": "登记", "operator_id": 1, "operator_name": "王丽",
             "operator_unit": "12301/12365 热线中心", "at": "2026-12-01 09:36:00", "state": "pending",
             "remark": "", "inputs": {"call_ids": ["1764581400.1"]}},
            {"id": 2, "ticket_id": 1, "action": "转办", "operator_id": 1, "operator_name": "王丽",
             "at": "2026-12-01 09:40:00", "state": "pending_transferred", "remark": "转四川省", "inputs": {"unit": "sc_unit"}},
            {"id": 3, "ticket_id": 2, "action": "办结", "operator_name": "系统", "at": "2026-12-01 11:00:00",
             "state": "answered", "remark": "已答复", "inputs": {}},
        ],
        "ticket_calls": [
            {"id": 1, "ticket_id": 1, "call_id": "1764581400.1", "added_at": "2026-12-01 09:36:00", "linked_by_id": 1},
            {"id": 2, "ticket_id": 2, "call_id": "1764581600.3", "added_at": "2026-12-01 09:34:10"},
        ],
        "ticket_evidence": [
            {"id": 1, "ticket_id": 1, "filename": "发票.jpg", "content_type": "image/jpeg", "size_bytes": 34567,
             "sha256": "1" * 64, "storage_path": "evidence/1/1.jpg", "uploaded_by_id": 1,
             "uploaded_at": "2026-12-01 09:37:00"},
        ],
        "ticket_reminders": [
            {"id": 1, "ticket_id": 1, "ladder": "handling", "day": 20, "who": "承办单位", "due_on": "2026-12-29",
             "created_at": "2026-12-01 09:40:00"},
        ],
        "ticket_counters": [{"day": "261201", "last": 1}],
        "callback_requests": [
            {"id": 1, "call_id": "1764581500.2", "number": "13800000002", "hotline": "12301",
             "queue": "12301-general", "source": "abandoned", "position_at": "2026-12-01 09:31:40",
             "status": "pending", "attempts": 0, "max_attempts": 3, "created_at": "2026-12-01 09:32:40",
             "updated_at": "2026-12-01 09:32:40"},
        ],
        "security_audit": [
            {"id": 1, "at": "2026-12-01 09:00:00", "action": "login", "subject_kind": "user", "subject": "agent1",
             "actor": "agent1", "address": "127.0.0.1", "detail": "登录成功"},
        ],
    }


async def _dump(engine, tables: list[str]) -> dict[str, list[dict]]:
    """Every row of ``tables`` as the database returns it, by primary key."""
    from sqlalchemy import MetaData

    def read(sync_conn) -> dict[str, list[dict]]:
        meta = MetaData()
        meta.reflect(sync_conn, only=tables)
        out = {}
        for name in tables:
            table = meta.tables[name]
            out[name] = [dict(row._mapping) for row in sync_conn.execute(
                table.select().order_by(*table.primary_key.columns))]
        return out

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def test_previous_release_database_keeps_every_row(db_url):
    """`./hotline up` on the previous release's database: alembic from 0005 to head keeps every row and
    value, gives the new columns their meaning for old rows, and today's code reads and logs in with them."""
    import datetime as dt
    from decimal import Decimal

    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import MetaData

    from cli.stack import migrate_url
    from core.models import User
    from core.settings import REPO_ROOT
    from tickets.models import Ticket

    alembic(db_url, "downgrade", "base")
    alembic(db_url, "upgrade", PREVIOUS_RELEASE)
    from argon2 import PasswordHasher

    rows = _previous_release_rows(PasswordHasher().hash("旧版本的密码"))
    engine = create_async_engine(db_url)

    def fill(sync_conn) -> None:
        meta = MetaData()
        meta.reflect(sync_conn)
        kinds = {dt.datetime: dt.datetime.fromisoformat, dt.date: dt.date.fromisoformat, Decimal: Decimal}
        for name, values in rows.items():
            table = meta.tables[name]
            for row in values:  # one by one: the rows name different columns
                sync_conn.execute(table.insert().values({
                    k: kinds[_python_type(table.c[k])](v) if isinstance(v, str) and _python_type(table.c[k]) in kinds
                    else v for k, v in row.items()}))

    try:
        async with engine.begin() as conn:
            await conn.run_sync(fill)
        if engine.dialect.name == "postgresql":  # rows written with their ids: the sequences follow them
            async with engine.begin() as conn:
                for name in rows:
                    if name != "ticket_counters":
                        await conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                                f"(SELECT max(id) FROM {name}))"))
        before = await _dump(engine, list(rows))
    finally:
        await engine.dispose()

    migrate_url(db_url)  # what `./hotline up` runs

    engine = create_async_engine(db_url)
    try:
        after = await _dump(engine, list(rows))
        async with engine.connect() as conn:
            revision = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        await engine.dispose()
    head = ScriptDirectory.from_config(Config(str(REPO_ROOT / "alembic.ini"))).get_current_head()
    assert revision == head
    # 0014: a user's skills, a comma string, became queue -> penalty (each 0): the same queues.
    converted = {"users": "skills"}
    for name, old_rows in before.items():
        assert len(after[name]) == len(old_rows) == len(rows[name]), name
        for old, new in zip(old_rows, after[name], strict=True):
            assert {k: new[k] for k in old if k != converted.get(name)} == \
                {k: v for k, v in old.items() if k != converted.get(name)}, \
                f"{name} row {old.get('id')} changed by the upgrade"
    assert [json.loads(u["skills"]) for u in after["users"]] == [{"12301-complaint": 0}, {}]
    assert [(u["must_change_password"], u["default_extension"]) for u in after["users"]] == [(False, None)] * 2
    # The new columns, for rows from before them.
    assert {r["node"] for r in after["call_records"] + after["recordings"]} == {"node1"}
    assert all(r["satisfaction"] is None and r["survey_started_at"] is None for r in after["call_records"])
    assert [(t["review_level"], t["review_levels"], t["handover_due"], t["external_platform"])
            for t in after["tickets"]] == [(0, 1, None, None)] * 2
    assert after["callback_requests"][0]["missed_day"] is None

    # Today's code works on them: the ORM loads every ticket and call, an old password still logs in,
    # and new rows get ids after the old ones.
    migrated = Database(db_url)
    try:
        async with migrated.session() as session:
            tickets = (await session.scalars(select(Ticket).order_by(Ticket.id))).all()
            calls = (await session.scalars(select(CallRecord).order_by(CallRecord.id))).all()
            agent = await session.scalar(select(User).where(User.username == "agent1"))
        assert [t.number for t in tickets] == ["12301261201001", "12365261201001"]
        assert tickets[0].amount == Decimal("1280.50") and tickets[0].transfer_chain[0]["unit"] == "sc_unit"
        assert [c.ref for c in calls] == ["a" * 16, "b" * 16, "c" * 16]
        assert agent.check_password("旧版本的密码") and agent.skill_list == ["12301-complaint"]
        async with migrated.transaction() as session:
            fresh = CallRecord(call_id="1764600000.9", caller_number="13800000009", hotline="12301")
            session.add(fresh)
        assert fresh.id == 4 and fresh.node == "node1"
    finally:
        await migrated.close()


def _python_type(column) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None
