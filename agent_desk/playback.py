"""Recordings in the browser: /recordings/{id} streamed with HTTP range requests (seekable),
only to users allowed to see that call or ticket; every playback is logged (log line + row).

Who may listen: team leads and admins, any recording; an agent, recordings of
calls they took and of tickets they can see; a handling unit, recordings of
tickets visible to their unit.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from aiohttp import web
from sqlalchemy import or_, select

from agent_desk.auth import LEADS, forbidden_page
from core.inputs import record_id
from core.models import Role, User
from core.web import DB_KEY, SETTINGS_KEY, USER_KEY
from cti.models import CallRecord
from recordings.models import PlaybackLog, Recording
from tickets.models import Ticket, TicketCall
from tickets.workflow import visible_ticket_filter

log = structlog.get_logger(service="agent_desk")
CONTENT_TYPES = {"wav": "audio/wav", "opus": "audio/ogg", "ogg": "audio/ogg", "mp3": "audio/mpeg",
                 "raw": "application/octet-stream"}


async def may_listen(db, user: User, recording: Recording) -> bool:
    if user.role in LEADS:
        return True
    if user.role == Role.AGENT:
        own = await db.scalar(select(CallRecord.id).where(CallRecord.call_id == recording.call_id,
                                                          CallRecord.agent_id == user.id))
        if own is not None:
            return True
    linked = select(TicketCall.ticket_id).where(TicketCall.call_id == recording.call_id)
    match = or_(Ticket.id.in_(linked), Ticket.number == recording.ticket_number) if recording.ticket_number \
        else Ticket.id.in_(linked)
    return await db.scalar(select(Ticket.id).where(match, visible_ticket_filter(user)).limit(1)) is not None


def file_of(root: Path, recording: Recording) -> Path | None:
    """The file under the recordings root (never outside it), if present."""
    path = (root / recording.path).resolve()
    return path if path.is_relative_to(root.resolve()) and path.is_file() else None


async def play(request: web.Request) -> web.StreamResponse:
    user: User = request[USER_KEY]
    rec_id = record_id(request.match_info["id"], "id", "录音")
    async with request.app[DB_KEY].session() as db:
        recording = await db.get(Recording, rec_id)
        if recording is None:
            return forbidden_page(request, "录音不存在", 404)
        if not await may_listen(db, user, recording):
            log.warning("recording_refused", recording_id=rec_id, user=user.username)
            return forbidden_page(request, "无权收听此录音")
    path = file_of(request.app[SETTINGS_KEY].recordings_dir, recording)
    if path is None:
        return forbidden_page(request, "录音文件不存在或已过保存期限", 404)
    range_header = request.headers.get("Range")
    # One playback = the request that starts at the beginning; seeks within it are not new playbacks.
    if not range_header or range_header.replace(" ", "").startswith("bytes=0-"):
        log.info("recording_played", recording_id=rec_id, call_id=recording.call_id, user=user.username,
                 user_id=user.id, range=range_header)
        async with request.app[DB_KEY].transaction() as db:
            db.add(PlaybackLog(recording_id=rec_id, user_id=user.id, range_header=(range_header or "")[:64]))
    response = web.FileResponse(path, headers={
        "Content-Type": CONTENT_TYPES.get(recording.format, "application/octet-stream"),
        "Cache-Control": "private, no-store", "Content-Disposition": "inline"})
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get(r"/recordings/{id:\d+}", play)
