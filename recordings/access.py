"""Who may hear a recording, the recordings a ticket page lists, and the audit of every listening.

Who may listen: team leads and admins, any recording; an agent, recordings of calls they took and of
tickets they can see; a handling unit, recordings of tickets visible to their unit. A ticket's link to a
call counts only when it is sound (tickets.call_access.link_is_sound): a link does not vouch for itself.

The desk's pages (agent_desk/playback.py, agent_desk/units.py) call these; they hold no SQL themselves.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.calls import CallRecord
from core.db import utcnow
from core.models import LEAD_ROLES, Role, User
from recordings.models import PlaybackLog, Recording
from tickets.call_access import link_is_sound
from tickets.models import Ticket, TicketCall
from tickets.workflow import visible_ticket_filter

# One listening is one user on one recording from one client address; its requests within this window of
# the last row (a browser's seeks and re-buffering) add no row, anything later or from elsewhere does.
LISTENING_WINDOW = timedelta(minutes=10)


async def recording_by_id(db: AsyncSession, recording_id: int) -> Recording | None:
    return await db.get(Recording, recording_id)


async def may_listen(db: AsyncSession, user: User, recording: Recording) -> bool:
    if user.role in LEAD_ROLES:
        return True
    call = await db.scalar(select(CallRecord).where(CallRecord.call_id == recording.call_id))
    if user.role == Role.AGENT and call is not None and call.agent_id == user.id:
        return True
    visible = visible_ticket_filter(user)
    # Filed with its ticket by the recordings worker (a voice message): the system's word, not a user's link.
    if recording.ticket_number and await db.scalar(
            select(Ticket.id).where(Ticket.number == recording.ticket_number, visible)) is not None:
        return True
    if call is None:
        return False
    links = (await db.execute(select(TicketCall, Ticket).join(Ticket, Ticket.id == TicketCall.ticket_id)
                              .where(TicketCall.call_id == call.call_id, visible))).all()
    for link, ticket in links:
        linked_by = await db.get(User, link.linked_by_id) if link.linked_by_id is not None else None
        if link_is_sound(call, ticket, linked_by):
            return True
    return False


async def ticket_recordings(db: AsyncSession, ticket: Ticket) -> list[Recording]:
    """Recordings of the ticket's linked calls and the voice message it was filed from, oldest first."""
    call_ids = select(TicketCall.call_id).where(TicketCall.ticket_id == ticket.id)
    return list((await db.scalars(select(Recording).where(
        (Recording.call_id.in_(call_ids)) | (Recording.ticket_number == ticket.number))
        .order_by(Recording.started_at))).all())


async def audible_ticket_recordings(db: AsyncSession, user: User, ticket: Ticket) -> list[Recording]:
    """Only what this user may hear of the ticket's recordings: a stored link does not vouch for itself."""
    return [r for r in await ticket_recordings(db, ticket) if await may_listen(db, user, r)]


async def note_listening(db: AsyncSession, recording: Recording, user: User, client: str | None,
                         range_header: str | None, forwarded_for: str | None) -> bool:
    """Audit row for a listening, unless it continues one (same user, recording and client address within
    LISTENING_WINDOW: a seek or a re-buffer). True when a row was added (in ``db``'s transaction)."""
    same_client = PlaybackLog.client_address == client if client else PlaybackLog.client_address.is_(None)
    recent = await db.scalar(select(PlaybackLog.id).where(
        PlaybackLog.recording_id == recording.id, PlaybackLog.user_id == user.id, same_client,
        PlaybackLog.at >= utcnow() - LISTENING_WINDOW).limit(1))
    if recent is not None:
        return False
    db.add(PlaybackLog(recording_id=recording.id, user_id=user.id, range_header=(range_header or "")[:64],
                       client_address=client, forwarded_for=(forwarded_for or "")[:255] or None))
    return True
