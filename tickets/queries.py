"""Ticket lists, home counters and look-ups (000 §3.1, §3.2, §3.7; 004 B.3.2).

Every list is scoped by :func:`tickets.workflow.visible_ticket_filter`; the
filters combine with AND and map onto the indexes of :mod:`tickets.models`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from core import inputs
from core.calls import CallRecord
from core.models import Unit, User
from tickets import dispatch
from tickets.deadlines import days_left
from tickets.due_rules import expiring_condition, overdue_condition
from tickets.models import (
    CLOSED_STATES,
    KIND_LABELS,
    OPEN_STATES,
    STATE_LABELS,
    Evidence,
    Source,
    State,
    Ticket,
    TicketAction,
    TicketCall,
)
from tickets.notify_models import Firing
from tickets.workflow import WorkflowError, as_workflow_error, visible_ticket_filter

# Days-to-expiry buckets of 000 §3.2 (inclusive bounds).
EXPIRY_BUCKETS = {"0-9": (0, 9), "10-29": (10, 29), "30-59": (30, 59)}
MAX_PAGE_SIZE = 200
MAX_PAGE = 1_000_000
FILTER_MAX_LENGTH = 64
FILTER_LABELS = {"phone": "诉求方电话", "number": "工单号", "province": "省", "city": "市", "county": "区县",
                 "expiry": "剩余天数", "complaint_object": "投诉对象", "event_category": "事件类别",
                 "state": "工单状态", "hotline": "热线", "kind": "工单类型"}


@dataclass
class TicketFilter:
    phone: str | None = None
    number: str | None = None
    province: str | None = None
    city: str | None = None
    county: str | None = None
    expiry: str | None = None  # one of EXPIRY_BUCKETS
    complaint_object: str | None = None
    event_category: str | None = None
    state: str | None = None
    supervised: bool | None = None
    hotline: str | None = None
    kind: str | None = None

    @classmethod
    def from_query(cls, query: Any) -> TicketFilter:
        """From URL query parameters; wrong values raise WorkflowError naming the parameter."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = query.get(f.name)
            if raw is None or raw == "":
                continue
            if f.name == "supervised":
                if raw not in ("true", "false", "1", "0"):
                    raise WorkflowError("督办筛选应为 true 或 false", "supervised")
                values[f.name] = raw in ("true", "1")
            else:
                # Filters are compared with columns: no value a column could not hold (NUL breaks PostgreSQL).
                with as_workflow_error():
                    values[f.name] = inputs.text(str(raw), f.name, f"筛选条件「{FILTER_LABELS[f.name]}」",
                                                 max_length=FILTER_MAX_LENGTH, multiline=False)
        result = cls(**values)
        if result.expiry is not None and result.expiry not in EXPIRY_BUCKETS:
            raise WorkflowError(f"过期日期应为 {'、'.join(EXPIRY_BUCKETS)} 之一", "expiry")
        if result.state is not None and result.state not in {s.value for s in State}:
            raise WorkflowError("工单状态无效", "state")
        return result

    def conditions(self, today: dt.date) -> list[Any]:
        conds: list[Any] = []
        for name, column in (("phone", Ticket.complainant_phone), ("number", Ticket.number),
                             ("province", Ticket.province), ("city", Ticket.city), ("county", Ticket.county),
                             ("complaint_object", Ticket.complaint_object),
                             ("event_category", Ticket.event_category), ("state", Ticket.state),
                             ("hotline", Ticket.hotline), ("kind", Ticket.kind)):
            value = getattr(self, name)
            if value is not None:
                conds.append(column == value)
        if self.supervised is not None:  # a literal IS, as in the partial index ix_tickets_supervised_scope
            conds.append(Ticket.supervised.is_(self.supervised))
        if self.expiry:
            low, high = EXPIRY_BUCKETS[self.expiry]
            conds += [Ticket.state.in_(OPEN_STATES),
                      Ticket.handling_due.between(today + dt.timedelta(days=low), today + dt.timedelta(days=high))]
        return conds


def filtered(user: User, flt: TicketFilter, today: dt.date) -> Select:
    return select(Ticket).where(visible_ticket_filter(user), *flt.conditions(today))


def page_statement(query: Select, offset: int = 0, limit: int = 20, walk_key: bool = True) -> Select:
    """One page of ``query``'s tickets, newest first (registration order).

    The page's ids are chosen first, from the ids alone: with the indexes of :mod:`tickets.models` (the
    filtered column, then the scope's ``unit_path``) that is an index-only scan on both databases; only
    the page's rows are then read. Sorting whole rows of every match made unselective filters slow.

    ``walk_key=False`` keeps PostgreSQL from walking the primary key backwards until enough rows pass the
    filter: right when matches are spread evenly over time, a long walk when they are all old (days to
    expiry: tickets due in 0–9 days were registered some 50 days ago, behind every newer ticket).
    """
    newest = Ticket.id.desc() if walk_key else (Ticket.id + 0).desc()
    ids = query.with_only_columns(Ticket.id).order_by(newest).offset(offset).limit(limit)
    return select(Ticket).where(Ticket.id.in_(ids.scalar_subquery())).order_by(Ticket.id.desc())


def count_statement(query: Select) -> Select:
    """The number of rows ``query`` matches (the list's total)."""
    return select(func.count()).select_from(query.subquery())


@dataclass
class Page:
    items: list[Ticket]
    total: int
    page: int
    page_size: int


async def list_tickets(session: AsyncSession, user: User, flt: TicketFilter, today: dt.date,
                       page: int = 1, page_size: int = 20) -> Page:
    """One page of the tickets ``user`` may see, newest first."""
    if not 1 <= page <= MAX_PAGE:
        raise WorkflowError(f"页码应在 1 到 {MAX_PAGE} 之间", "page")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise WorkflowError(f"每页条数应在 1 到 {MAX_PAGE_SIZE} 之间", "page_size")
    query = filtered(user, flt, today)
    total = await session.scalar(count_statement(query))
    rows = (await session.scalars(
        page_statement(query, (page - 1) * page_size, page_size, walk_key=flt.expiry is None)
        .options(selectinload(Ticket.unit))
    )).all()
    return Page(list(rows), int(total or 0), page, page_size)


async def iter_filtered(session: AsyncSession, user: User, flt: TicketFilter, today: dt.date,
                        limit: int = 100_000) -> list[Ticket]:
    """All matching tickets for export (newest first, capped)."""
    return list((await session.scalars(
        filtered(user, flt, today).order_by(Ticket.id.desc()).limit(limit)
        .options(selectinload(Ticket.unit))
    )).all())


def counter_statements(user: User, today: dt.date) -> dict[str, Select]:
    """The queries behind :func:`home_counters` (also explained by ``tickets/perf.py``)."""
    scope = visible_ticket_filter(user)
    open_scope = (scope, Ticket.state.in_(OPEN_STATES))
    return {
        "per_state": select(Ticket.state, func.count()).where(scope).group_by(Ticket.state),
        "supervised": select(func.count()).where(*open_scope, Ticket.supervised.is_(True)),
        # The scheduler's own conditions (tickets/due_rules.py), so the counters agree with its reminders;
        # overdue includes a ticket still not accepted after its acceptance limit.
        "expiring_10_days": select(func.count()).where(scope, expiring_condition(today, 10)),
        "overdue": select(func.count()).where(scope, overdue_condition(today)),
        "closing_rate": closing_rate_statement(user.id),
    }


async def home_counters(session: AsyncSession, user: User, today: dt.date) -> dict[str, Any]:
    """The counters of the home page (000 §3.1) for ``user``'s scope, plus the user's own closing rate."""
    statements = counter_statements(user, today)
    per_state = {s.value: 0 for s in State}
    for state, count in (await session.execute(statements["per_state"])).all():
        per_state[State(state).value] = count
    supervised = await session.scalar(statements["supervised"])
    expiring = await session.scalar(statements["expiring_10_days"])
    overdue = await session.scalar(statements["overdue"])
    mine = await closing_rate(session, user.id)
    return {
        "per_state": per_state,
        "per_state_labels": {STATE_LABELS[State(k)]: v for k, v in per_state.items()},
        "supervised": int(supervised or 0),
        "expiring_10_days": int(expiring or 0),
        "overdue": int(overdue or 0),
        **mine,
    }


def closing_rate_statement(user_id: int) -> Select:
    return (select(func.count(), func.sum(case((Ticket.state.in_(CLOSED_STATES), 1), else_=0)))
            .where(Ticket.accepted_by_id == user_id))


async def closing_rate(session: AsyncSession, user_id: int) -> dict[str, Any]:
    """结案率 of one user: of the tickets the user accepted, how many are closed."""
    accepted, closed = (await session.execute(closing_rate_statement(user_id))).one()
    accepted, closed = int(accepted or 0), int(closed or 0)
    return {"accepted_total": accepted, "closed_total": closed,
            "closing_rate": round(closed / accepted, 4) if accepted else None}


async def closing_rates(session: AsyncSession, viewer: User) -> list[dict[str, Any]]:
    """结案率 per user over the tickets ``viewer`` may see."""
    rows = (await session.execute(
        select(User.id, User.display_name, func.count(),
               func.sum(case((Ticket.state.in_(CLOSED_STATES), 1), else_=0)))
        .join(Ticket, Ticket.accepted_by_id == User.id)
        .where(visible_ticket_filter(viewer)).group_by(User.id, User.display_name).order_by(User.id)
    )).all()
    return [{"user_id": uid, "name": name, "accepted_total": acc, "closed_total": int(closed or 0),
             "closing_rate": round(int(closed or 0) / acc, 4)} for uid, name, acc, closed in rows]


async def find_by_number(session: AsyncSession, number: str) -> Ticket | None:
    return await session.scalar(
        select(Ticket).where(Ticket.number == number).options(selectinload(Ticket.unit))
    )


async def tickets_for_phone(session: AsyncSession, phone: str, limit: int = 5) -> list[Ticket]:
    """A caller's latest tickets (for the screen pop), newest first."""
    return list((await session.scalars(
        select(Ticket).where(Ticket.complainant_phone == phone)
        .order_by(Ticket.created_at.desc()).limit(limit).options(selectinload(Ticket.unit))
    )).all())


async def open_tickets_for_phone(session: AsyncSession, phone: str) -> list[Ticket]:
    """A caller's tickets still being handled (for the IVR's status read-back), newest first."""
    return list((await session.scalars(
        select(Ticket).where(Ticket.complainant_phone == phone, Ticket.state.in_(OPEN_STATES))
        .order_by(Ticket.created_at.desc()).options(selectinload(Ticket.unit))
    )).all())


async def tracking_log(session: AsyncSession, ticket: Ticket) -> list[TicketAction]:
    """The 工单跟踪 view: every step, newest first."""
    return list((await session.scalars(
        select(TicketAction).where(TicketAction.ticket_id == ticket.id).order_by(TicketAction.id.desc())
    )).all())


async def ticket_calls(session: AsyncSession, ticket: Ticket) -> list[CallRecord]:
    """The calls linked to the ticket, oldest first."""
    return list((await session.scalars(
        select(CallRecord).join(TicketCall, TicketCall.call_id == CallRecord.call_id)
        .where(TicketCall.ticket_id == ticket.id).order_by(CallRecord.started_at))).all())


async def ticket_evidence(session: AsyncSession, ticket: Ticket) -> list[Evidence]:
    """The ticket's evidence files, in upload order."""
    return list((await session.scalars(
        select(Evidence).where(Evidence.ticket_id == ticket.id).order_by(Evidence.id))).all())


async def evidence_of(session: AsyncSession, ticket: Ticket, evidence_id: int) -> Evidence | None:
    """One of the ticket's evidence files (None for another ticket's)."""
    return await session.scalar(select(Evidence).where(Evidence.id == evidence_id, Evidence.ticket_id == ticket.id))


async def unit_locations(session: AsyncSession) -> dict[str, list[str]]:
    """The provinces, cities and counties of the unit tree (the list page's location filter)."""
    rows = (await session.execute(select(Unit.province, Unit.city, Unit.county))).all()
    return {key: sorted({r[i] for r in rows if r[i]}) for i, key in enumerate(("province", "city", "county"))}


async def unit_choices(session: AsyncSession, ticket: Ticket, action: str) -> list[Unit]:
    """Units an action's dialog may offer: below the current unit (转办) or the hotline's whole tree
    (重新派单), in tree order."""
    if action == "转办":
        scope = ticket.unit.path
    else:
        root_code = dispatch.unit_config().national.get(ticket.hotline)
        root = await session.scalar(select(Unit).where(Unit.code == root_code)) if root_code else None
        scope = root.path if root else "/nowhere/"
    units = (await session.scalars(select(Unit).where(dispatch.subtree_condition(Unit.path, scope))
                                   .order_by(Unit.path))).all()
    return [u for u in units if not (action == "转办" and u.id == ticket.unit_id)]


async def reminded_tickets(session: AsyncSession, user: User, limit: int = 500) -> list[tuple[Ticket, Firing]]:
    """Open tickets the user may see with their latest reminder firing (催办; not the "expiring" notes),
    the most urgent first."""
    latest = (select(Firing.ticket_id, func.max(Firing.id).label("firing_id"))
              .where(Firing.rule != "expiring").group_by(Firing.ticket_id).subquery())
    rows = (await session.execute(
        select(Ticket, Firing).join(latest, latest.c.ticket_id == Ticket.id)
        .join(Firing, Firing.id == latest.c.firing_id)
        .where(visible_ticket_filter(user), Ticket.state.in_(OPEN_STATES))
        .options(selectinload(Ticket.unit)).order_by(Firing.due_on, Ticket.id).limit(limit))).all()
    return [(ticket, firing) for ticket, firing in rows]


def _digits(number: str) -> str:
    """Read a ticket number digit by digit, as the IVR should."""
    return " ".join(number)


def status_readback(ticket: Ticket, today: dt.date) -> str:
    """A short Mandarin sentence for the IVR: state, handling unit, days left or overdue.

    ``ticket.unit`` must be loaded (the look-ups above load it).
    """
    unit: Unit | None = ticket.unit
    head = f"您的{KIND_LABELS[ticket.kind]}工单 {_digits(ticket.number)}，"
    state = STATE_LABELS[ticket.state]
    if ticket.state in CLOSED_STATES:
        return f"{head}已经办结，结果为{state}。"
    if ticket.state == State.HANDED_OVER:
        return f"{head}已移交其他主管部门处理。"
    if ticket.state == State.RETURNED:
        return f"{head}正在由热线中心重新派单处理。"
    where = f"由{unit.name}办理" if unit is not None else "正在办理"
    left = days_left(ticket, today)
    if left is None:
        timing = ""
    elif left >= 0:
        timing = f"，距办理期限还有 {left} 天"
    else:
        timing = f"，已超过办理期限 {-left} 天"
    return f"{head}当前状态为{state}，{where}{timing}。"


async def voicemail_tickets(session: AsyncSession, user: User, limit: int = 30) -> list[Ticket]:
    """Tickets made from voice messages that ``user`` may see, newest first (the desk's inbox)."""
    return list((await session.scalars(select(Ticket).where(visible_ticket_filter(user), Ticket.source == Source.VOICEMAIL)
                                       .order_by(Ticket.created_at.desc()).limit(limit))).all())


async def report_facts(session: AsyncSession, start: dt.datetime, end: dt.datetime,
                       hotline: str | None = None) -> list[tuple[str, str, bool]]:
    """(kind, state, accepted?) of the tickets registered in [start, end), of one hotline if given."""
    query = select(Ticket.kind, Ticket.state, Ticket.accepted_at).where(Ticket.created_at >= start,
                                                                        Ticket.created_at < end)
    if hotline:
        query = query.where(Ticket.hotline == hotline)
    return [(str(k), str(s), a is not None) for k, s, a in (await session.execute(query)).all()]
