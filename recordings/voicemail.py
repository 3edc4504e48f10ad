"""Voice messages become tickets awaiting classification, with a callback task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core.calls import CallbackRequest, CallRecord
from core.hours import next_open_period
from core.settings import Settings
from recordings.models import Recording
from tickets.intake import register_voicemail_ticket, set_transcript


async def open_voicemail_ticket(session, settings: Settings, call: CallRecord, seconds: float) -> str | None:
    """Create the ticket and the callback task for one message; returns the ticket number."""
    ticket = await register_voicemail_ticket(session, call=call, seconds=seconds)
    exists = await session.scalar(select(CallbackRequest).where(CallbackRequest.call_id == call.call_id))
    if exists is None and call.caller_number:
        not_before = next_open_period(settings, datetime.now(UTC))
        session.add(CallbackRequest(
            call_id=call.call_id, number=call.caller_number, hotline=call.hotline,
            queue=f"{call.hotline}-general" if call.hotline else None, source="voicemail",
            position_at=call.started_at, not_before=not_before, expires_at=not_before + timedelta(days=3),
            ticket_number=ticket.number, note="留言回拨",
        ))
    return ticket.number


async def attach_transcript(session, ticket_number: str, text: str | None, status: str, note: str | None) -> None:
    await set_transcript(session, ticket_number, text, status, note)


async def recent_voicemails(session, limit: int = 30) -> list[Recording]:
    """The newest voice messages (the desk's inbox)."""
    return list((await session.scalars(select(Recording).where(Recording.kind == "voicemail")
                                       .order_by(Recording.started_at.desc()).limit(limit))).all())
