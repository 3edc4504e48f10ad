"""Reading call records: the queries behind the wallboard and the reports (the CTI writes them, cti.tracker)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cti.models import CallRecord


async def calls_between(session: AsyncSession, start: dt.datetime, end: dt.datetime,
                        hotline: str | None = None) -> list[CallRecord]:
    """Calls that started in [start, end), of one hotline if given."""
    query = select(CallRecord).where(CallRecord.started_at >= start, CallRecord.started_at < end)
    if hotline:
        query = query.where(CallRecord.hotline == hotline)
    return list((await session.scalars(query)).all())
