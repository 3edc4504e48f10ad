"""Reading call records: the queries behind the wallboard and the reports (the CTI writes them, cti.tracker)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cti.models import CallRecord


async def calls_between(session: AsyncSession, start: dt.datetime, end: dt.datetime,
                        hotline: str | None = None) -> list[CallRecord]:
    """Calls that started in [start, end), of one hotline if given."""
    query = select(CallRecord).where(CallRecord.started_at >= start, CallRecord.started_at < end)
    if hotline:
        query = query.where(CallRecord.hotline == hotline)
    return list((await session.scalars(query)).all())


async def calls_queued_since(session: AsyncSession, since: dt.datetime) -> list[CallRecord]:
    """Calls that entered a queue at or after ``since``, and calls still waiting in a queue (the alert watcher's
    rolling window and longest wait), without loading the rest of the day.

    A call queues after it started (the IVR comes first), and no IVR lasts a day: the started_at range bounds
    the read to an index range; a record left open for more than a day is no caller waiting now."""
    query = select(CallRecord).where(
        CallRecord.started_at >= since - dt.timedelta(days=1),
        or_(CallRecord.queued_at >= since, (CallRecord.ended_at.is_(None) & CallRecord.queued_at.is_not(None))))
    return list((await session.scalars(query)).all())
