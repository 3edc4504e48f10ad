"""The scheduler service: the time-driven rules of the deadline policy, the outbox and live messages.

Every ``[notify] tick_seconds`` it
1. fires the rules each open ticket has reached (:func:`run_rules`): the 催办 ladders of 001 §5.1–5.2
   (own cases from acceptance, transferred cases from the transfer), acceptance overdue, expiring
   within N days, handling overdue and the 督办 follow-up. A firing is a row of ``rule_firings`` with a
   unique (ticket, rule, step), written in one transaction with its trace-log step, its messages and
   its outbox rows: a restart in the middle neither loses nor repeats a reminder;
2. sends the notices that are due (``tickets/outbox.py``);
3. publishes new messages on the event stream (``tickets/message_centre.py``).

Why a durable table and not APScheduler: the rules are not jobs at fixed times but conditions on the
tickets ("20 days since acceptance and still open"), re-evaluated against the data; what must survive a
restart is *which steps have fired*, and that belongs in the same database transaction as the step's
effects. APScheduler's job store would hold a second copy of the schedule that can disagree with the
tickets (a ticket accepted or closed meanwhile) and cannot share the transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from sqlalchemy import or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from core import content
from core.db import Database
from core.logs import setup_logging
from core.metrics import on_scrape
from core.models import Role, Unit
from core.redis import connect
from core.service import heartbeat
from core.settings import Settings
from tickets import clock, outbox
from tickets.deadlines import DeadlinePolicy, active_policy, policy_name
from tickets.due_rules import PENDING_STATES, Due, handover_overdue_condition, steps_due
from tickets.figures import TicketActionCounter, disk_figures, notice_figures
from tickets.message_centre import publish_new
from tickets.models import OPEN_STATES, Reminder, Ticket, TicketAction
from tickets.notices import add_message, notice_config, notify_unit_contact, system_log
from tickets.notify_models import Firing

BATCH = 500
SUPERVISION_RULE = "supervision_followup"
TRACE_ACTION = {"reminder:own": "催办", "reminder:transferred": "催办", "acceptance_overdue": "超期提醒",
                "expiring": "到期提醒", "handling_overdue": "超期提醒", "handover_overdue": "移交跟踪",
                SUPERVISION_RULE: "督办跟踪"}
UNIT_TEMPLATE = {"reminder:own": "reminder", "reminder:transferred": "reminder",
                 "acceptance_overdue": "acceptance_overdue", "expiring": "expiring",
                 "handling_overdue": "handling_overdue", "handover_overdue": "handover_overdue",
                 SUPERVISION_RULE: "supervision_followup"}


def _as_moment(day: dt.date, policy: DeadlinePolicy) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), policy.timezone).astimezone(dt.UTC)


async def _supervision_steps(session: AsyncSession, tickets: list[Ticket], today: dt.date,
                             policy: DeadlinePolicy, days: int) -> dict[int, list[Due]]:
    """督办 follow-up: a supervised case still open ``days`` days after each 督办 (001 §5.3)."""
    ids = [t.id for t in tickets if t.supervised]
    if not ids:
        return {}
    rows = (await session.execute(select(TicketAction.ticket_id, TicketAction.id, TicketAction.at).where(
        TicketAction.ticket_id.in_(ids), TicketAction.action == "督办"))).all()
    result: dict[int, list[Due]] = {}
    for ticket_id, action_id, at in rows:
        due_on = policy.local_date(at) + dt.timedelta(days=days)
        if today >= due_on:
            result.setdefault(ticket_id, []).append(Due(SUPERVISION_RULE, str(action_id), "督办跟踪", due_on))
    return result


def _text(ticket: Ticket, due: Due, unit_name: str) -> str:
    if due.rule.startswith("reminder:"):
        return f"催办：工单 {ticket.number}（{unit_name}）{due.label}（第 {due.step} 日）"
    return {"acceptance_overdue": f"工单 {ticket.number} 已超过受理时限（{due.step}）仍未受理",
            "expiring": f"工单 {ticket.number} 将于 {ticket.handling_due} 到期",
            "handling_overdue": f"工单 {ticket.number} 已超过办理时限（{ticket.handling_due}）",
            "handover_overdue": f"工单 {ticket.number} 移交{ticket.handover_authority}已超过移交时限（{due.step}），"
                                f"尚未登记接收单位的处理结果",
            SUPERVISION_RULE: f"督办跟踪：督办工单 {ticket.number} 仍未办结"}[due.rule]


async def _fire(session: AsyncSession, ticket: Ticket, due: Due, now: dt.datetime, policy: DeadlinePolicy) -> Firing:
    firing = Firing(ticket_id=ticket.id, rule=due.rule, step=due.step, label=due.label,
                    due_on=_as_moment(due.due_on, policy), fired_at=now)
    session.add(firing)
    await session.flush()  # the unique key refuses a second firing here, before any effect is written
    unit = await session.get(Unit, ticket.unit_id)
    unit_name = unit.name if unit else ""
    text = _text(ticket, due, unit_name)
    session.add(system_log(ticket, TRACE_ACTION[due.rule], text, now,
                           {"rule": due.rule, "step": due.step, "due_on": due.due_on.isoformat()}))
    add_message(session, ticket, ticket.unit_id, due.rule.split(":")[0], text)
    if due.rule == "reminder:transferred" and ticket.transfer_chain:
        # 监察人: the unit that transferred the case follows it (001 §5.2).
        add_message(session, ticket, int(ticket.transfer_chain[-1]), "reminder", text)
    if due.rule.startswith("reminder:") and due.step == str(policy.for_ticket(ticket.hotline)
                                                            .reminders[due.rule.split(":")[1]][-1].day):
        add_message(session, ticket, ticket.unit_id, "reminder", f"{text}：请提交书面报告", Role.UNIT_HEAD)
    if due.rule.startswith("reminder:"):
        session.add(Reminder(ticket_id=ticket.id, ladder=due.rule.split(":")[1], day=int(due.step),
                             who=due.label, due_on=due.due_on))
    notify_unit_contact(session, ticket, unit, f"t{ticket.id}:f{firing.id}", UNIT_TEMPLATE[due.rule],
                        step=due.label, due=due.step)
    return firing


async def run_rules(session: AsyncSession, now: dt.datetime, policy: DeadlinePolicy) -> list[Firing]:
    """Fire every rule step reached by ``now`` that has not fired yet (idempotent)."""
    cfg = notice_config()
    today = policy.local_date(now)
    candidates = (await session.scalars(select(Ticket).where(or_(
        Ticket.state.in_(OPEN_STATES) & or_(
            Ticket.accepted_at.is_not(None), Ticket.transferred_at.is_not(None), Ticket.supervised.is_(True),
            Ticket.handling_due < today + dt.timedelta(days=cfg.expiring_days),
            Ticket.state.in_(PENDING_STATES) & (Ticket.acceptance_due < today)),
        handover_overdue_condition(today)),  # 移交 is tracked until the receiving authority's result
    ).order_by(Ticket.id))).all()
    fired: list[Firing] = []
    for start in range(0, len(candidates), BATCH):
        tickets = list(candidates[start:start + BATCH])
        supervision = await _supervision_steps(session, tickets, today, policy, cfg.supervision_followup_days)
        wanted = {t.id: steps_due(t, today, policy, cfg.expiring_days) + supervision.get(t.id, []) for t in tickets}
        keys = [(tid, d.rule, d.step) for tid, dues in wanted.items() for d in dues]
        if not keys:
            continue
        done = set((await session.execute(select(Firing.ticket_id, Firing.rule, Firing.step).where(
            Firing.ticket_id.in_(list(wanted)),
            tuple_(Firing.ticket_id, Firing.rule, Firing.step).in_(keys)))).all())
        for ticket in tickets:
            for due in wanted[ticket.id]:
                if (ticket.id, due.rule, due.step) not in done:
                    fired.append(await _fire(session, ticket, due, now, policy))
    return fired


async def tick(db: Database, settings: Settings, transports: outbox.Transports, redis: Any,
               policy: DeadlinePolicy) -> None:
    now = clock.now(settings)
    async with db.transaction() as session:
        fired = await run_rules(session, now, policy)
    if fired:
        setup_logging("scheduler").info("rules_fired", count=len(fired),
                                        rules=sorted({f"{f.rule}@{f.step}" for f in fired}))
    await outbox.send_due(db, transports, now, settings)
    if redis is not None:
        async with db.transaction() as session:
            await publish_new(session, redis)


async def main(settings: Settings, stop: asyncio.Event) -> None:
    log = setup_logging("scheduler")
    policy = active_policy(policy_name(settings))
    notice_config()  # templates checked at start-up: a wrong template stops the service with the reason
    db = Database(settings.database_url)
    redis = connect(settings, "scheduler")
    transports = outbox.Transports(settings)
    interrupted = await outbox.mark_interrupted(db)
    if interrupted:
        log.warning("notices_uncertain", count=interrupted)
    beat = asyncio.create_task(heartbeat(redis, "scheduler"))
    actions = TicketActionCounter(db)
    try:
        await actions()  # counted from now on
    except Exception as exc:  # noqa: BLE001 - the database is away: the first scrape starts the count
        log.warning("ticket_action_count_not_started", error=str(exc))
    on_scrape(lambda: notice_figures(db))
    on_scrape(actions)
    on_scrape(lambda: disk_figures(settings))
    period = float(settings.notify.tick_seconds)
    try:
        while not stop.is_set():
            try:
                if content.refresh():  # an admin saved a policy (core.content): follow it from this tick on
                    policy = active_policy(policy_name(settings))
                    log.info("content_reloaded", version=content.version())
                await tick(db, settings, transports, redis, policy)
            except Exception as exc:  # noqa: BLE001 - a failing pass (database or Redis away) is retried
                log.exception("tick_failed", error=str(exc))
            await outbox.wait_idle(stop, period)
    finally:
        beat.cancel()
        await transports.close()
        await db.close()
        await redis.aclose()


if __name__ == "__main__":
    from core.service import run_service

    run_service("scheduler", main)
