"""Satisfaction on tickets: the 一次一评 grade of the call a ticket came from (core.satisfaction)."""

from __future__ import annotations

from sqlalchemy import select, update

from core.satisfaction import UNRATED
from tickets.models import Ticket, TicketCall


async def grade_linked_tickets(session, call_id: str, grade: str) -> None:
    """A call was rated: tickets linked to it that have no grade yet take it (the CTI, after the survey)."""
    linked = select(TicketCall.ticket_id).where(TicketCall.call_id == call_id).scalar_subquery()
    await session.execute(update(Ticket).where(Ticket.id.in_(linked), Ticket.call_satisfaction.is_(None))
                          .values(call_satisfaction=grade).execution_options(synchronize_session=False))


def grade_from_calls(ticket: Ticket, grades: list[str | None]) -> None:
    """Calls were linked to ``ticket`` (registration, 关联来电): the first real grade among them, if the
    ticket has none (a call linked while the survey is still running gets its grade from the CTI)."""
    if ticket.call_satisfaction is None:
        ticket.call_satisfaction = next((g for g in grades if g and g != UNRATED), None)
