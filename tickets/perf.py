"""Query plans and latency of the list queries at scale.

``python -m tickets.perf --url URL --tickets 1000000`` fills an (empty,
migrated) database with synthetic tickets and prints, for each list filter,
the plan (EXPLAIN QUERY PLAN on SQLite, EXPLAIN on PostgreSQL) and the median
latency. :func:`list_plans` is also used by the tests to check that the
filters use indexes.
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
from tickets.queries import TicketFilter, filtered

SAMPLE_FILTERS: dict[str, TicketFilter] = {
    "all": TicketFilter(),
    "phone": TicketFilter(phone="13800000042"),
    "number": TicketFilter(number="2025061010042"),
    "location": TicketFilter(province="广东省", city="广州市", county="天河区"),
    "expiry 0-9": TicketFilter(expiry="0-9"),
    "object+category": TicketFilter(complaint_object="旅行社及导游领队", event_category="不合理低价"),
    "state": TicketFilter(state=State.ACCEPTED.value),
    "supervised": TicketFilter(supervised=True),
}


def list_statement(user: User, flt: TicketFilter, today: dt.date) -> Any:
    """The page query of :func:`tickets.queries.list_tickets` (first page of 20)."""
    return filtered(user, flt, today).order_by(Ticket.id.desc()).limit(20)


async def explain(session: AsyncSession, statement: Any) -> str:
    dialect = session.bind.dialect
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN QUERY PLAN " if dialect.name == "sqlite" else "EXPLAIN "
    rows = (await session.execute(text(prefix + sql))).all()
    return "\n".join(str(row[-1]) for row in rows)


async def list_plans(session: AsyncSession, user: User, today: dt.date) -> dict[str, str]:
    return {name: await explain(session, list_statement(user, flt, today)) for name, flt in SAMPLE_FILTERS.items()}


async def fill(db: Database, count: int, batch: int = 20_000) -> None:
    """Insert ``count`` synthetic tickets spread over the configured units (bulk, no workflow)."""
    async with db.transaction() as session:
        units = [u for u in (await dispatch.seed_units(session)).values() if u.code != "callcentre"]
        centre = await dispatch.call_centre(session)
    rng = random.Random(1)
    objects = ["旅行社及导游领队", "在线旅游企业", "景区", "住宿"]
    cats = ["强迫或变相强迫购物", "不合理低价", "违反合同约定", "单项产品服务质量问题"]
    states = [State.PENDING, State.ACCEPTED, State.MEDIATED, State.SETTLED, State.PENDING_TRANSFERRED]
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for offset in range(0, count, batch):
        rows = []
        for i in range(offset, min(count, offset + batch)):
            unit = rng.choice(units)
            created = start + dt.timedelta(minutes=i)
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
        async with db.transaction() as session:
            await session.execute(insert(Ticket), rows)


async def main(url: str, count: int, username: str) -> None:
    db = Database(url)
    try:
        async with db.session() as session:
            existing = await session.scalar(select(func.count()).select_from(Ticket))
        if existing < count:
            await fill(db, count - existing)
        async with db.session() as session:
            if db.engine.dialect.name == "postgresql":
                await session.execute(text("ANALYZE tickets"))
            else:
                await session.execute(text("ANALYZE"))
            unit = await session.scalar(select(Unit).where(Unit.code == username))
            user = User(id=0, username="perf", display_name="perf", password_hash="-",
                        role=Role.UNIT_HANDLER if unit else Role.ADMIN, unit_id=unit.id if unit else None)
            user.unit = unit
            today = dt.date(2025, 6, 10)
            for name, flt in SAMPLE_FILTERS.items():
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
