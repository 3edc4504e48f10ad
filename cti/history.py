"""A caller's earlier calls and tickets, shown in the screen pop."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.db import Database
from cti.models import CallRecord
from tickets.queries import tickets_for_phone


async def caller_history(db: Database, phone: str | None, limit: int = 5) -> dict[str, Any]:
    if not phone:
        return {"calls": [], "tickets": []}
    async with db.session() as session:
        calls = (await session.scalars(
            select(CallRecord).where(CallRecord.caller_number == phone, CallRecord.ended_at.is_not(None))
            .order_by(CallRecord.started_at.desc()).limit(limit)
        )).all()
        tickets = [
            {"number": t.number, "kind": t.kind, "state": t.state, "created_at": t.created_at.isoformat()}
            for t in await tickets_for_phone(session, phone, limit=limit)
        ]
    return {
        "calls": [
            {"call_ref": c.ref, "started_at": c.started_at.isoformat(), "hotline": c.hotline,
             "business": c.business, "answered": c.answered_at is not None}
            for c in calls
        ],
        "tickets": tickets,
    }
