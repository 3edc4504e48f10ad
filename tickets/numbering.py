"""Ticket numbers: the local date plus a daily sequence, e.g. ``2016080510006`` (000 §3.4).

The sequence of the samples starts at 10001 (``YYYYMMDD`` + 5 digits). One
counter row per day is bumped with a single ``INSERT ... ON CONFLICT DO UPDATE
... RETURNING`` statement: on PostgreSQL the row lock, on SQLite the database
write lock, makes concurrent registrations wait for each other instead of
drawing the same number. The counter moves inside the registering transaction,
so a registration that fails gives its number back. Past 99999 tickets in a day
the number simply grows a digit and stays unique.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tickets.models import TicketCounter

SEQUENCE_BASE = 10000


async def next_number(session: AsyncSession, day: dt.date) -> str:
    """Draw the next ticket number of ``day`` (a local date) inside the caller's transaction."""
    key = day.strftime("%Y%m%d")
    dialect = session.bind.dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    stmt = insert(TicketCounter).values(day=key, last=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[TicketCounter.day], set_={"last": TicketCounter.last + 1},
    ).returning(TicketCounter.last)
    seq = (await session.execute(stmt)).scalar_one()
    return f"{key}{SEQUENCE_BASE + seq}"
