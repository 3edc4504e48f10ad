"""回访: calling the citizen back after a case is closed, and writing what they said into the 工单.

GB/T 33358-2016 asks that the 工单 records 回访结果; seed 004 §6.2.3.2 has the feedback to the party
come back with 当事人满意度. Closing a case (the last 审核通过, or 答复 for a consultation) whose kind and
outcome the centre chose (``[return_visits]`` in config/hotline.toml, checked at start-up) makes one
visit task. The task is a row of ``callback_requests`` with ``source = 'visit'`` and the ticket's
number, so it is worked with the same once-only outbound call as every callback (claimed in one atomic
update, the agent's phone first, then the citizen after the recording notice, recorded). A citizen who
does not answer (no answer, busy) is tried again on a later working day, at most ``max_attempts`` times;
then the ticket records that the visit did not reach them. The agent records the result and the
citizen's grade on the ticket with a step of the tracking log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.calls import CallbackRequest, CallbackStatus, CallRecord
from core.hours import Hours, is_working_day, next_open_period
from core.inputs import InputError
from core.models import Unit, User
from core.policy import register
from core.satisfaction import BASIC, DISSATISFIED, LABELS, SATISFIED
from core.settings import ConfigError, Settings
from tickets.models import (
    CLOSED_STATES,
    KIND_LABELS,
    STATE_LABELS,
    Kind,
    State,
    Ticket,
    TicketAction,
    TicketCall,
)
from tickets.notices import SYSTEM, system_log

SOURCE = "visit"
ACTION = "回访"
VISIT_GRADES = (SATISFIED, BASIC, DISSATISFIED)  # a citizen reached gives one of these; none when unreachable
RESULT_MAX = 1000

# Seed 004 §6.2.3.2 feeds 当事人满意度 back for the cases the centre passed on; §6.4.5 tells the party the
# outcome of a report. So by default every complaint and report closed after being handled; not 不予受理
# (the party was told the refusal and its clause) and not consultations (answered on the call itself).
DEFAULT_KINDS = (Kind.COMPLAINT, Kind.REPORT)
DEFAULT_OUTCOMES = (State.SETTLED, State.MEDIATED, State.MEDIATION_FAILED, State.DEPOSIT_PAID, State.CONCLUDED)


@dataclass(frozen=True)
class VisitRules:
    """``[return_visits]``: which closed cases get a visit, how often an unreachable citizen is tried."""

    kinds: frozenset[Kind]
    outcomes: frozenset[State]
    max_attempts: int = 3
    retry_working_days: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> VisitRules:
        # Types, unknown and missing keys are refused by core.settings; the values are checked here.
        section: dict[str, Any] = dataclasses.asdict(settings.return_visits)
        section["kinds"], section["outcomes"] = list(section["kinds"]), list(section["outcomes"])
        kinds = _members(section, "kinds", DEFAULT_KINDS, {k.value: KIND_LABELS[k] for k in Kind if k != Kind.UNCLASSIFIED})
        outcomes = _members(section, "outcomes", DEFAULT_OUTCOMES, {s.value: STATE_LABELS[s] for s in CLOSED_STATES})
        numbers = {}
        for key, default, low in (("max_attempts", 3, 1), ("retry_working_days", 1, 1)):
            value = section.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 10:
                raise ConfigError(f"[return_visits] {key} = {value!r}：应为 {low} 到 10 之间的整数")
            numbers[key] = value
        return cls(frozenset(Kind(k) for k in kinds), frozenset(State(o) for o in outcomes), **numbers)


def _members(section: dict[str, Any], key: str, default: tuple, allowed: dict[str, str]) -> list[str]:
    values = section.get(key, [v.value for v in default])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"[return_visits] {key} 应为列表，例如 {[v.value for v in default]!r}")
    wrong = [v for v in values if v not in allowed]
    if wrong:
        choices = "、".join(f"{v}（{label}）" for v, label in allowed.items())
        raise ConfigError(f"[return_visits] {key} 中的 {'、'.join(wrong)} 无效：应为 {choices} 之一")
    return values


_configured: VisitRules | None = None


def configure(settings: Settings) -> VisitRules:
    """Check ``[return_visits]`` at start-up (a wrong value stops the service with the reason) and use it."""
    global _configured
    _configured = VisitRules.from_settings(settings)
    return _configured


# Checked with every policy: by ./hotline up before anything starts (cli.policies), by each service at its start.
register("hotline.toml [return_visits]", lambda settings: configure(settings) if settings is not None else None)


def rules() -> VisitRules:
    return _configured or VisitRules(frozenset(DEFAULT_KINDS), frozenset(DEFAULT_OUTCOMES))


def _callable(number: str | None) -> bool:
    return bool(number) and number.isdigit() and len(number) >= 5


async def after_action(session: AsyncSession, ticket: Ticket, row: TicketAction) -> CallbackRequest | None:
    """Called with every step of the tracking log (same transaction): the step that closed a case the
    centre visits makes its one visit task."""
    chosen = rules()
    if row.action not in ("审核通过", "答复") or ticket.state not in CLOSED_STATES:
        return None
    if ticket.kind not in chosen.kinds or ticket.state not in chosen.outcomes:
        return None
    if not _callable(ticket.complainant_phone):
        return None  # nobody to call: the ticket has no dialable number
    key = f"{SOURCE}-{ticket.number}"
    if await session.scalar(select(CallbackRequest.id).where(CallbackRequest.call_id == key)):
        return None
    task = CallbackRequest(call_id=key, number=ticket.complainant_phone, hotline=ticket.hotline, source=SOURCE,
                           position_at=row.at, max_attempts=chosen.max_attempts, ticket_number=ticket.number,
                           note=f"回访（{STATE_LABELS[ticket.state]}）")
    session.add(task)
    return task


def next_try(settings: Settings, now: dt.datetime, chosen: VisitRules | None = None) -> dt.datetime:
    """When an unreachable citizen is tried again: the opening of the ``retry_working_days``-th working
    day after today (centre's zone and calendar, 调休 included)."""
    chosen = chosen or rules()
    zone = Hours.from_settings(settings).zone
    day = now.astimezone(zone).date()
    left = chosen.retry_working_days
    while left:
        day += dt.timedelta(days=1)
        left -= is_working_day(day)
    return next_open_period(settings, dt.datetime.combine(day, dt.time(0), tzinfo=zone)).astimezone(dt.UTC)


async def unreachable(session: AsyncSession, task: CallbackRequest, now: dt.datetime) -> None:
    """All attempts went unanswered: the ticket says so (回访结果 with no grade), by the system."""
    ticket = await session.scalar(select(Ticket).where(Ticket.number == task.ticket_number))
    if ticket is None or ticket.visit_result:
        return
    ticket.visit_result = f"回访未接通（共 {task.attempts} 次）"
    ticket.visited_at = now
    ticket.visited_by_name = SYSTEM
    session.add(system_log(ticket, ACTION, f"回访结果：{ticket.visit_result}", now,
                           {"task_id": task.id, "attempts": task.attempts}))


def clean_result(data: dict[str, Any]) -> tuple[str, str]:
    """(result, grade) of the desk's form, or InputError with the field at fault."""
    result = str(data.get("result") or "").strip()
    if not result:
        raise InputError("请填写回访结果", "result")
    if len(result) > RESULT_MAX:
        raise InputError(f"回访结果不能超过 {RESULT_MAX} 字", "result")
    grade = data.get("satisfaction")
    if grade not in VISIT_GRADES:
        raise InputError(f"满意度应为 {'、'.join(LABELS[g] for g in VISIT_GRADES)} 之一", "satisfaction")
    return result, grade


async def record_result(session: AsyncSession, task_id: int, operator: User, data: dict[str, Any],
                        now: dt.datetime) -> Ticket:
    """The agent who reached the citizen writes 回访结果 and 满意度 on the ticket (one step of the tracking
    log); the visit's recorded call is linked to the ticket."""
    result, grade = clean_result(data)
    task = await session.get(CallbackRequest, task_id)
    if task is None or task.source != SOURCE:
        raise InputError("回访任务不存在", "task_id", 404)
    if task.agent_id != operator.id or task.status not in (CallbackStatus.DIALING, CallbackStatus.DONE):
        raise InputError("请先接通本回访任务的来电人，再记录回访结果", "task_id", 409)
    ticket = await session.scalar(select(Ticket).where(Ticket.number == task.ticket_number))
    if ticket is None:
        raise InputError("回访任务的工单不存在", "task_id", 404)
    if ticket.visit_result:
        raise InputError(f"工单 {ticket.number} 已记录回访结果", "task_id", 409)
    ticket.visit_result, ticket.visit_satisfaction = result, grade
    ticket.visited_at, ticket.visited_by_name = now, operator.display_name
    task.status = CallbackStatus.DONE
    unit = await session.get(Unit, operator.unit_id) if operator.unit_id else None
    session.add(TicketAction(ticket_id=ticket.id, action=ACTION, operator_id=operator.id,
                             operator_name=operator.display_name, operator_unit=unit.name if unit else None,
                             at=now, state=ticket.state, remark=f"回访结果：{result}；满意度：{LABELS[grade]}",
                             inputs={"task_id": task.id, "result": result, "satisfaction": grade}))
    if task.outbound_call_id and await session.scalar(select(CallRecord.id).where(
            CallRecord.call_id == task.outbound_call_id)) and not await session.scalar(select(TicketCall.id).where(
            TicketCall.ticket_id == ticket.id, TicketCall.call_id == task.outbound_call_id)):
        session.add(TicketCall(ticket_id=ticket.id, call_id=task.outbound_call_id, linked_by_id=operator.id))
    await session.flush()
    return ticket


async def open_visits(session: AsyncSession, now: dt.datetime, limit: int = 30) -> list[dict[str, Any]]:
    """The desk's task list: visits still to make, in progress, or reached and awaiting their result;
    ``due`` says whether it may be called now (an unreachable citizen waits for a later working day)."""
    rows = (await session.execute(
        select(CallbackRequest, Ticket).join(Ticket, Ticket.number == CallbackRequest.ticket_number)
        .where(CallbackRequest.source == SOURCE, Ticket.visit_result.is_(None),
               CallbackRequest.status.in_((CallbackStatus.PENDING, CallbackStatus.DIALING, CallbackStatus.DONE)))
        .order_by(CallbackRequest.position_at).limit(limit))).all()
    return [{"task": task, "ticket": ticket,
             "due": task.status == CallbackStatus.PENDING and (task.next_attempt_at is None
                                                              or task.next_attempt_at <= now)}
            for task, ticket in rows]


async def dissatisfied(session: AsyncSession, start: dt.datetime, end: dt.datetime,
                       hotline: str = "") -> list[Ticket]:
    """Tickets registered in [start, end) whose citizen said 不满意 on the 回访: the team lead's list."""
    query = select(Ticket).where(Ticket.visit_satisfaction == DISSATISFIED, Ticket.created_at >= start,
                                 Ticket.created_at < end)
    if hotline:
        query = query.where(Ticket.hotline == hotline)
    return list((await session.scalars(query.order_by(Ticket.visited_at.desc()).limit(200))).all())
