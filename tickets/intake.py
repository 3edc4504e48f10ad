"""Tickets that arrive without an agent: voice messages left after hours or from the queue."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from core.calls import CallRecord
from core.db import utcnow
from tickets import dispatch
from tickets.deadlines import active_policy
from tickets.models import Kind, Source, State, Ticket, TicketAction
from tickets.numbering import next_number
from tickets.workflow import attach_calls

SYSTEM_OPERATOR = "系统（语音留言）"
TRANSCRIPT_NOTES = {"no_model": "未转写", "failed": "转写失败"}


async def register_voicemail_ticket(session, call: CallRecord, seconds: float,
                                    now: dt.datetime | None = None) -> Ticket:
    """A ticket awaiting classification, at the call centre, linked to the call and its message."""
    existing = await session.scalar(select(Ticket).join(Ticket.calls).where(Ticket.source == Source.VOICEMAIL)
                                    .where(Ticket.calls.any(call_id=call.call_id)))
    if existing is not None:
        return existing  # a worker restart must not open a second ticket for the same message
    now = now or utcnow()
    policy = active_policy()
    centre = await dispatch.call_centre(session)
    number = await next_number(session, policy.local_date(now))
    choices = call.ivr_path or "无"
    ticket = Ticket(
        number=number, kind=Kind.UNCLASSIFIED, state=State.UNCLASSIFIED, source=Source.VOICEMAIL,
        hotline=call.hotline or "12301", complainant_phone=call.caller_number,
        complaint_object=call.category, unit_id=centre.id, unit_path=centre.path, centre_unit_id=centre.id,
        description=f"来电留言 {seconds:.0f} 秒（{call.hotline or ''} 热线，IVR 选择：{choices}），待坐席回拨分类。",
        created_at=now, created_by_name=SYSTEM_OPERATOR, transfer_chain=[], risk_reasons=[],
    )
    ticket.unit = centre
    session.add(ticket)
    await session.flush()
    await attach_calls(session, ticket, [call], None)
    session.add(TicketAction(ticket_id=ticket.id, action="留言登记", operator_name=SYSTEM_OPERATOR,
                             operator_unit=centre.name, at=now, state=ticket.state,
                             remark=f"语音留言 {seconds:.0f} 秒，待分类；已生成回拨任务",
                             inputs={"call_id": call.ref, "seconds": round(seconds, 1)}))
    return ticket


async def set_transcript(session, number: str, text: str | None, status: str, note: str | None) -> None:
    ticket = await session.scalar(select(Ticket).where(Ticket.number == number))
    if ticket is None:
        return
    if status == "done":
        ticket.transcript = text or ""
    else:
        ticket.transcript = f"（{TRANSCRIPT_NOTES.get(status, status)}：{note or ''}）"
