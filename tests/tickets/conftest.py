"""Fixtures: real databases built by the alembic migrations, SQLite and a throwaway PostgreSQL 15.

``db`` is parametrized over both backends, so every DB-facing test runs twice.
The PostgreSQL cluster is initdb'ed in a temp dir (owned by ``postgres`` when
the tests run as root), listens on a free loopback port and is removed at the
end. Missing PostgreSQL binaries fail the run with a clear message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.orm import selectinload

from core.admin_audit import AdminChange
from core.calls import CallDaySummary, CallWaitSummary
from core.db import Database
from core.models import Role, Unit, User
from cti.models import CallbackRequest, CallRecord
from tickets import dispatch, rules
from tickets.models import (
    Evidence,
    Reminder,
    Ticket,
    TicketAction,
    TicketCall,
    TicketCounter,
    TicketDaySummary,
)
from tickets.notify_models import Firing, Message, MessageRead, Notice


@pytest.fixture(autouse=True)
def shipped_rules():
    """The shipped rule profiles (one review level): a stack started earlier in the same session points the
    process's settings at the test stack's two-level copy ([tickets] rules_file), which a desk or policy
    check run in this process would otherwise have made the active one."""
    rules.check_rules(None)
    yield

# The day summaries: the wipe's DELETEs bypass the ORM flushes that forget a changed day's summaries.
TABLES = (CallDaySummary, CallWaitSummary, TicketDaySummary, AdminChange, MessageRead, Message, Notice, Firing, Reminder, Evidence, TicketCall, TicketAction, Ticket, TicketCounter,
          CallbackRequest, CallRecord, User, Unit)


async def _wipe(database: Database) -> None:
    async with database.transaction() as session:
        if database.engine.dialect.name == "postgresql":
            names = ", ".join(t.__tablename__ for t in TABLES)
            await session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            await session.execute(text("UPDATE units SET parent_id = NULL"))
            for table in TABLES:
                await session.execute(delete(table))


STAFF = (("agent", "王丽", Role.AGENT, "callcentre"), ("lead", "赵班长", Role.TEAM_LEAD, "callcentre"),
         ("admin", "系统管理员", Role.ADMIN, None))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await _wipe(database)
    async with database.transaction() as session:
        units = await dispatch.seed_units(session)
        rows = [*STAFF, *((u, n, Role(r), c) for u, n, r, c in dispatch.demo_unit_users())]
        for username, name, role, code in rows:
            session.add(User(username=username, display_name=name, password_hash="-", role=role,
                             unit_id=units[code].id if code else None))
    yield database
    await database.close()


@pytest.fixture
async def users(db: Database) -> dict[str, User]:
    """Every user by username, with ``.unit`` loaded (as the desk's auth middleware provides)."""
    async with db.session() as session:
        rows = (await session.scalars(select(User).options(selectinload(User.unit)))).all()
    return {u.username: u for u in rows}


@pytest.fixture
async def units(db: Database) -> dict[str, Unit]:
    async with db.session() as session:
        return {u.code: u for u in (await session.scalars(select(Unit))).all()}
