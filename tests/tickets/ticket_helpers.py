"""Shared test data and small helpers for the ticket tests (imported by the test modules)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from core.db import Database
from core.models import User
from tickets.models import Ticket
from tickets.queries import find_by_number
from tickets.workflow import perform_action, register_ticket

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def complaint(**overrides: Any) -> dict[str, Any]:
    data = {
        "kind": "complaint", "hotline": "12301", "complainant_name": "呼忠富",
        "complainant_phone": "13505456680", "respondent_name": "康辉旅行社天河分公司",
        "complaint_object": "旅行社及导游领队", "event_category": "强迫或变相强迫购物",
        "province": "广东省", "city": "广州市", "county": "天河区", "amount": "3200",
        "description": "跟团游被导游强制带入购物店，不买不让走。",
    }
    data.update(overrides)
    return data


# A Tuesday in an ordinary week, 10:00 in Shanghai.
NOW = dt.datetime(2025, 6, 10, 10, 0, tzinfo=SHANGHAI)


async def register(db: Database, operator: User, now: dt.datetime = NOW, **overrides: Any) -> Ticket:
    async with db.transaction() as session:
        return await register_ticket(session, complaint(**overrides), operator, now)


async def act(db: Database, number: str, action: str, inputs: dict[str, Any], operator: User,
              now: dt.datetime | None = None) -> Ticket:
    """Perform one action in its own transaction; returns the ticket as stored afterwards."""
    async with db.transaction() as session:
        ticket = await find_by_number(session, number)
        assert ticket is not None
        await perform_action(session, ticket, action, inputs, operator, now or NOW + dt.timedelta(hours=1))
    async with db.session() as session:
        stored = await find_by_number(session, number)
        assert stored is not None
        return stored
