"""Query plans and latency of the list queries at scale.

``python -m tickets.perf --url URL --tickets 1000000`` fills an (empty,
migrated) database with synthetic tickets and prints, for each list filter,
the plan (EXPLAIN QUERY PLAN on SQLite, EXPLAIN on PostgreSQL) and the median
latency. :func:`list_plans` is also used by the tests to check that the
filters use indexes, and ``./hotline bench --only tickets`` (bench/tickets.py)
uses this module's data and statements for p50/p95 at 100 000 and 1 000 000
tickets on both databases.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import time
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Database
from core.models import Role, Unit, User
from tickets import dispatch
from tickets.models import Kind, State, Ticket
from tickets.queries import TicketFilter, filtered, page_statement
from tickets.workflow import visible_ticket_filter

# The filters of 000 §3.2, one at a time, then combined; the scope is the user's unit and below.
SAMPLE_FILTERS: dict[str, TicketFilter] = {
    "no filter": TicketFilter(),
    "phone": TicketFilter(phone="13800000042"),
    "number": TicketFilter(number="2025061010042"),
    "location": TicketFilter(province="广东省", city="广州市", county="天河区"),
    "expiry 0-9": TicketFilter(expiry="0-9"),
    "expiry 10-29": TicketFilter(expiry="10-29"),
    "expiry 30-59": TicketFilter(expiry="30-59"),
    "complaint object": TicketFilter(complaint_object="旅行社及导游领队"),
    "event category": TicketFilter(event_category="不合理低价"),
    "state": TicketFilter(state=State.ACCEPTED.value),
    "supervised": TicketFilter(supervised=True),
    "combination": TicketFilter(province="广东省", city="广州市", complaint_object="旅行社及导游领队",
                                event_category="不合理低价", state=State.ACCEPTED.value),
}
FILL_START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # synthetic tickets: one a minute from here


def list_statement(user: User, flt: TicketFilter, today: dt.date) -> Any:
    """The page query of :func:`tickets.queries.list_tickets` (first page of 20)."""
    return page_statement(filtered(user, flt, today), walk_key=flt.expiry is None)


def literal_sql(session: AsyncSession, statement: Any) -> str:
    return str(statement.compile(dialect=session.bind.dialect, compile_kwargs={"literal_binds": True}))


async def explain(session: AsyncSession, statement: Any, analyze: bool = False) -> str:
    """The plan (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN, with ``analyze`` the actual rows and times)."""
    sql = literal_sql(session, statement)
    if session.bind.dialect.name == "sqlite":
        prefix = "EXPLAIN QUERY PLAN "
    else:
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "
    rows = (await session.execute(text(prefix + sql))).all()
    return "\n".join(str(row[-1]) for row in rows)


async def list_plans(session: AsyncSession, user: User, today: dt.date,
                     filters: dict[str, TicketFilter] | None = None) -> dict[str, str]:
    """Plan of the page query of each filter."""
    return {name: await explain(session, list_statement(user, flt, today))
            for name, flt in (filters or SAMPLE_FILTERS).items()}


def data_today(count: int) -> dt.date:
    """The day of the last synthetic ticket: the "today" at which its expiry buckets are all populated."""
    return (FILL_START + dt.timedelta(minutes=max(0, count - 1))).date()


async def scope_user(session: AsyncSession, unit_code: str) -> User:
    """An unsaved user of unit ``unit_code`` (an administrator if there is no such unit), ``.unit`` loaded."""
    unit = await session.scalar(select(Unit).where(Unit.code == unit_code))
    user = User(id=0, username="perf", display_name="perf", password_hash="-",
                role=Role.UNIT_HANDLER if unit else Role.ADMIN, unit_id=unit.id if unit else None)
    user.unit = unit
    return user


async def sample_filters(session: AsyncSession, user: User, around_id: int) -> dict[str, TicketFilter]:
    """SAMPLE_FILTERS with a phone number and a ticket number that exist in ``user``'s scope."""
    row = (await session.execute(
        select(Ticket.complainant_phone, Ticket.number)
        .where(visible_ticket_filter(user), Ticket.id >= around_id).order_by(Ticket.id).limit(1)
    )).first()
    filters = dict(SAMPLE_FILTERS)
    if row is not None:
        filters["phone"] = TicketFilter(phone=row.complainant_phone)
        filters["number"] = TicketFilter(number=row.number)
    return filters


async def fill(db: Database, count: int, batch: int = 20_000, first: int = 0) -> None:
    """Insert ``count`` synthetic tickets spread over the configured units (bulk, no workflow), one
    transaction per ``batch``.

    ``first`` continues an earlier fill (numbers and times carry on from there).
    """
    rng = random.Random(first + 1)
    for offset in range(first, first + count, batch):
        async with db.transaction() as session:
            await fill_rows(session, min(batch, first + count - offset), first=offset, rng=rng)


async def fill_rows(session: AsyncSession, count: int, first: int = 0, rng: random.Random | None = None) -> None:
    """The rows of :func:`fill` in the caller's transaction; ``rng`` carries the random choices across batches."""
    units = [u for u in (await dispatch.seed_units(session)).values() if u.code != "callcentre"]
    centre = await dispatch.call_centre(session)
    rng = rng or random.Random(first + 1)
    objects = ["旅行社及导游领队", "在线旅游企业", "景区", "住宿"]
    cats = ["强迫或变相强迫购物", "不合理低价", "违反合同约定", "单项产品服务质量问题"]
    states = [State.PENDING, State.ACCEPTED, State.MEDIATED, State.SETTLED, State.PENDING_TRANSFERRED]
    rows = []
    for i in range(first, first + count):
        unit = rng.choice(units)
        created = FILL_START + dt.timedelta(minutes=i)
        rows.append({
            "number": f"P{i:012d}", "kind": Kind.COMPLAINT, "hotline": "12301", "state": rng.choice(states),
            "complainant_phone": f"138{rng.randrange(10**8):08d}", "complainant_name": "测试",
            "complaint_object": rng.choice(objects), "event_category": rng.choice(cats),
            "province": unit.province, "city": unit.city, "county": unit.county,
            "description": "", "unit_id": unit.id, "unit_path": unit.path, "centre_unit_id": centre.id,
            "transfer_chain": [], "risk_reasons": [], "supervised": rng.random() < 0.02,
            "handling_due": (created + dt.timedelta(days=60)).date(), "created_at": created,
            "group_size": 1, "deadlines_provisional": False, "review_status": "none",
        })
    if rows:
        # Core, not the ORM: its bulk path sent these rows one statement per row on asyncpg (20 000 in 40 s)
        await session.execute(insert(Ticket.__table__), rows)


async def analyze(db: Database, *tables: str) -> None:
    """Refresh the planner statistics after a bulk fill (PostgreSQL: and the visibility map, as autovacuum would)
    of ``tables`` (default: tickets)."""
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if db.engine.dialect.name == "postgresql":
            for table in tables or ("tickets",):
                await conn.execute(text(f"VACUUM ANALYZE {table}"))
        else:
            await conn.execute(text("ANALYZE"))


async def main(url: str, count: int, username: str) -> None:
    db = Database(url)
    try:
        async with db.session() as session:
            existing = await session.scalar(select(func.count()).select_from(Ticket))
        if existing < count:
            await fill(db, count - existing, first=existing)
        await analyze(db)
        async with db.session() as session:
            user = await scope_user(session, username)
            today = data_today(count)
            for name, flt in (await sample_filters(session, user, count // 2)).items():
                statement = list_statement(user, flt, today)
                timings = []
                for _ in range(5):
                    began = time.perf_counter()
                    (await session.execute(statement)).all()
                    timings.append((time.perf_counter() - began) * 1000)
                print(f"--- {name}: median {statistics.median(timings):.1f} ms")
                print(await explain(session, statement))
    finally:
        await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--unit", default="12301-GD", help="unit code whose scope is listed (default 12301-GD)")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.tickets, args.unit))
