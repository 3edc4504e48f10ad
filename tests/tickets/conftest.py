"""Fixtures: real databases built by the alembic migrations, SQLite and a throwaway PostgreSQL 15.

``db`` is parametrized over both backends, so every DB-facing test runs twice.
The PostgreSQL cluster is initdb'ed in a temp dir (owned by ``postgres`` when
the tests run as root), listens on a free loopback port and is removed at the
end. Missing PostgreSQL binaries fail the run with a clear message.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.orm import selectinload

from core.db import Database
from core.models import Role, Unit, User
from cti.models import CallRecord
from tickets import dispatch
from tickets.models import Evidence, Reminder, Ticket, TicketAction, TicketCall, TicketCounter

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("HOTLINE_PG_BIN", "/usr/lib/postgresql/15/bin"))


def migrate(url: str) -> None:
    alembic = Path(sys.executable).with_name("alembic")
    result = subprocess.run([str(alembic), "-x", f"url={url}", "upgrade", "head"], cwd=REPO,
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"alembic upgrade failed for {url}:\n{result.stderr}")


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'tickets.db'}"
    migrate(url)
    return url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    missing = [b for b in ("initdb", "pg_ctl", "createdb") if not (PG_BIN / b).exists()]
    if missing:
        pytest.fail(f"PostgreSQL binaries {missing} not found in {PG_BIN}: install postgresql-15 "
                    "(Debian package) or set HOTLINE_PG_BIN; the ticket tests must run on PostgreSQL too")
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="hotline-pg-"))
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", _free_port()

    def run(*args: str) -> None:
        result = subprocess.run([*run_as, *args], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-locale", "-E", "UTF8")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off " \
              "-c full_page_writes=off"
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-o", options, "-w", "start")
    try:
        run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "tickets")
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/tickets"
        migrate(url)
        yield url
    finally:
        subprocess.run([*run_as, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


TABLES = (Reminder, Evidence, TicketCall, TicketAction, Ticket, TicketCounter, CallRecord, User, Unit)


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
