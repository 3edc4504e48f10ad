"""The administration area's skeleton and its audit log (issue 17 item 4).

Service layer on SQLite and PostgreSQL (the migrated databases of tests/conftest.py): a change is written
with who, what, before/after, when and from where, secrets never, and found again by who/what/entity/text/
time. Pages in process: admin only, the shared navigation, the search's bad input as a Chinese 400, and the
export formula-safe in CSV and XLSX.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import openpyxl
import pytest
from sqlalchemy import delete, select, text

from core import admin_audit
from core.admin_audit import AdminChange, AuditQuery, record_change
from core.db import Database
from core.models import Role, User
from core.web import DB_KEY


@pytest.fixture
async def audit_db(db_url: str):
    database = Database(db_url)
    async with database.transaction() as session:
        await session.execute(delete(AdminChange))
        actor = await session.scalar(select(User).where(User.username == "audit_admin"))
        if actor is None:
            actor = User(username="audit_admin", display_name="审计测试管理员", password_hash="-", role=Role.ADMIN)
            session.add(actor)
    yield database
    async with database.transaction() as session:
        await session.execute(delete(AdminChange))
    await database.close()


async def _actor(database: Database) -> User:
    async with database.session() as session:
        return await session.scalar(select(User).where(User.username == "audit_admin"))


async def test_a_change_is_recorded_with_its_context_and_without_secrets(audit_db):
    actor = await _actor(audit_db)
    async with audit_db.transaction() as session:
        record_change(session, actor, "10.0.0.7", "user", "agent9", "create", None,
                      {"username": "agent9", "display_name": "孙悦", "role": Role.AGENT, "password": "S3cret-Pw!",
                       "password_hash": "$argon2id$x", "sip_secret": "abc", "skills": {"12301-general": 0}})
        record_change(session, actor, "10.0.0.7", "user", "agent9", "update",
                      {"display_name": "孙悦", "skills": {"12301-general": 0}},
                      {"display_name": "孙悦", "skills": {"12301-general": 2}})
    async with audit_db.session() as session:
        rows = (await session.scalars(select(AdminChange).order_by(AdminChange.id))).all()
        stored = " ".join(str(v) for v in (await session.execute(text("SELECT before, after FROM admin_changes"))).all())
    created, updated = rows
    assert (created.actor, created.actor_id, created.address, created.entity, created.entity_id, created.action) == \
        ("audit_admin", actor.id, "10.0.0.7", "user", "agent9", "create")
    assert created.before is None and created.after["role"] == "agent" and created.after["display_name"] == "孙悦"
    assert created.after["password"] == created.after["password_hash"] == created.after["sip_secret"] == \
        admin_audit.REDACTED
    assert "S3cret" not in stored and "argon2" not in stored and "abc" not in stored.replace(admin_audit.REDACTED, "")
    assert "孙悦" in stored  # Chinese as typed, so the text search finds it with LIKE
    assert admin_audit.changed_fields(updated) == ["skills"]
    assert created.at <= updated.at <= dt.datetime.now(dt.UTC)


async def test_a_rolled_back_change_leaves_no_audit_row(audit_db):
    actor = await _actor(audit_db)
    with pytest.raises(RuntimeError):
        async with audit_db.transaction() as session:
            record_change(session, actor, None, "queue", "12301-general", "update", {"a": 1}, {"a": 2})
            raise RuntimeError("the change itself failed")
    assert (await admin_audit.search(audit_db, AuditQuery()))[0] == 0


async def test_the_search_finds_by_who_what_entity_text_and_time(audit_db):
    actor = await _actor(audit_db)
    async with audit_db.transaction() as session:
        record_change(session, actor, "10.0.0.1", "user", "agent10", "create", None, {"display_name": "周密"})
        record_change(session, None, None, "queue", "12365-report", "update", {"ring": 15}, {"ring": 20})
        old = record_change(session, actor, "10.0.0.1", "user", "agent11", "disable", {"active": True},
                            {"active": False})
        await session.flush()
        old.at = dt.datetime(2026, 1, 5, 3, 0, tzinfo=dt.UTC)

    async def found(**query) -> list[str]:
        total, rows = await admin_audit.search(audit_db, AuditQuery(**query))
        assert total == len(rows)
        return sorted(r.entity_id for r in rows)

    assert await found() == ["12365-report", "agent10", "agent11"]
    assert await found(actor="audit") == ["agent10", "agent11"]
    assert await found(actor="系统") == ["12365-report"]
    assert await found(entity="queue") == ["12365-report"]
    assert await found(action="disable") == ["agent11"]
    assert await found(text="周密") == ["agent10"]
    assert await found(text="AGENT1") == ["agent10", "agent11"]
    assert await found(text="100%") == []  # LIKE wildcards typed are literal
    assert await found(until=dt.datetime(2026, 1, 6, tzinfo=dt.UTC)) == ["agent11"]
    assert await found(since=dt.datetime(2026, 1, 6, tzinfo=dt.UTC)) == ["12365-report", "agent10"]
    total, rows = await admin_audit.search(audit_db, AuditQuery(), limit=1)
    assert total == 3 and len(rows) == 1


# --- pages, in process -----------------------------------------------------------------------------

async def _record(desk, entity_id: str, after: dict) -> None:
    async with desk.app[DB_KEY].transaction() as session:
        actor = await session.scalar(select(User).where(User.username == "admin"))
        record_change(session, actor, "127.0.0.1", "user", entity_id, "update", {"display_name": "旧名"}, after)


async def test_admin_pages_are_the_admins_and_share_one_navigation(desk):
    await desk.login("agent1")
    response = await desk.client.get("/admin/audit")
    assert response.status == 403 and "无权访问" in await response.text()
    await desk.client.post("/logout", data={"_csrf": desk.csrf}, allow_redirects=False)

    await desk.login("admin", desk.settings.secrets["admin_password"])
    for path in ("/admin", "/admin/audit", "/admin/unlock"):
        page = await desk.page(path)
        assert 'class="admin-nav"' in page and 'aria-current="page"' in page, path
        assert '<a href="/admin/audit"' in page and '<a href="/admin/unlock"' in page
    assert 'href="/admin"' in await desk.page("/wallboard")  # the admin's main menu leads there


async def test_the_audit_page_searches_refuses_bad_input_and_exports_formula_safe(desk):
    await desk.login("admin", desk.settings.secrets["admin_password"])
    await _record(desk, "agent-formula", {"display_name": "=HYPERLINK(\"http://evil\")"})
    await _record(desk, "agent-plain", {"display_name": "吴桐"})

    page = await desk.page("/admin/audit?text=agent-formula")
    assert "agent-formula" in page and "agent-plain" not in page and "用户与坐席" in page
    response = await desk.client.get("/admin/audit?from=2026-13-01")
    assert response.status == 400 and "开始日期应为日期" in await response.text()
    response = await desk.client.get("/admin/audit/export?format=pdf")
    assert response.status == 400

    response = await desk.client.get("/admin/audit/export?format=csv&text=agent-formula")
    assert response.status == 200 and response.content_type == "text/csv"
    rows = list(csv.reader(io.StringIO((await response.read()).decode("utf-8-sig"))))
    assert rows[0] == list(admin_audit.EXPORT_HEADER) and len(rows) == 2
    assert rows[1][1] == "admin" and rows[1][4] == "agent-formula" and rows[1][8].startswith("display_name=")
    cell = next(c for c in rows[1] if "HYPERLINK" in c)
    assert not cell.startswith("=")

    response = await desk.client.get("/admin/audit/export?format=xlsx&text=agent-")
    sheet = openpyxl.load_workbook(io.BytesIO(await response.read())).active
    values = [[c.value for c in row] for row in sheet.iter_rows()]
    assert len(values) == 3 and {v[4] for v in values[1:]} == {"agent-formula", "agent-plain"}
    for row in sheet.iter_rows(min_row=2):
        for cell in row:
            assert cell.data_type != "f"
    json.dumps(values)  # plain values only
