"""The time-driven rules of the deadline policy, one definition for the scheduler and the home counters.

A ticket is *overdue* when it is still pending acceptance after its acceptance limit (004 §6.3.2.2:
5 working days) or still open after its handling limit (the 60-day countdown, 000 §3.2); it is
*expiring* when its handling limit falls within the next N days (000 §3.1: 10). The home page counts
exactly the tickets these conditions select, so its figures agree with what the scheduler fires.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, or_

from tickets.deadlines import DeadlinePolicy, handover_overdue, reminders_due
from tickets.models import OPEN_STATES, State, Ticket

PENDING_STATES = (State.PENDING, State.PENDING_TRANSFERRED)


def acceptance_overdue_condition(today: dt.date) -> ColumnElement[bool]:
    return and_(Ticket.state.in_(PENDING_STATES), Ticket.acceptance_due < today)


def handling_overdue_condition(today: dt.date) -> ColumnElement[bool]:
    return and_(Ticket.state.in_(OPEN_STATES), Ticket.handling_due < today)


def handover_overdue_condition(today: dt.date) -> ColumnElement[bool]:
    """Handed over (移交) past its deadline with no result of the receiving authority (004 §6.3.5.1)."""
    return and_(Ticket.state == State.HANDED_OVER, Ticket.handover_result.is_(None), Ticket.handover_due < today)


def overdue_condition(today: dt.date) -> ColumnElement[bool]:
    """Open and past either limit, or a 移交 past its own (what the home page's 已超期 counts)."""
    return or_(acceptance_overdue_condition(today), handling_overdue_condition(today),
               handover_overdue_condition(today))


def expiring_condition(today: dt.date, days: int) -> ColumnElement[bool]:
    """Open, handling limit today or within the next ``days - 1`` days."""
    return and_(Ticket.state.in_(OPEN_STATES),
                Ticket.handling_due.between(today, today + dt.timedelta(days=days - 1)))


@dataclass(frozen=True)
class Due:
    """One rule step a ticket has reached: fires once per (ticket, rule, step)."""

    rule: str      # reminder:own | reminder:transferred | acceptance_overdue | expiring | handling_overdue |
    #                handover_overdue
    step: str
    label: str
    due_on: dt.date


def steps_due(ticket: Ticket, today: dt.date, policy: DeadlinePolicy, expiring_days: int) -> list[Due]:
    """Every step of every rule ``ticket`` has reached by ``today`` (pure; the scheduler skips fired ones)."""
    result = [Due(f"reminder:{r.ladder}", str(r.day), r.who, r.due_on) for r in reminders_due(ticket, today, policy)]
    pending = ticket.state in PENDING_STATES
    if pending and ticket.acceptance_due is not None and today > ticket.acceptance_due:
        result.append(Due("acceptance_overdue", ticket.acceptance_due.isoformat(), "超过受理时限",
                          ticket.acceptance_due + dt.timedelta(days=1)))
    if ticket.is_open and ticket.handling_due is not None:
        due = ticket.handling_due
        if today > due:
            result.append(Due("handling_overdue", due.isoformat(), "超过办理时限", due + dt.timedelta(days=1)))
        elif (due - today).days < expiring_days:
            result.append(Due("expiring", due.isoformat(), f"{expiring_days}日内到期",
                              due - dt.timedelta(days=expiring_days - 1)))
    if handover_overdue(ticket, today):
        assert ticket.handover_due is not None
        result.append(Due("handover_overdue", ticket.handover_due.isoformat(), "超过移交时限",
                          ticket.handover_due + dt.timedelta(days=1)))
    return result
