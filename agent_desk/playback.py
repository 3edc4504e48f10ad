"""Recordings in the browser: /recordings/{id} streamed with HTTP range requests (seekable),
only to users allowed to see that call or ticket; every listening is audited (log line + row).

Who may listen: team leads and admins, any recording; an agent, recordings of
calls they took and of tickets they can see; a handling unit, recordings of
tickets visible to their unit. A ticket's link to a call counts only when it is
sound (tickets.call_access.link_is_sound): a link does not vouch for itself.

Audit: every response that carries recording bytes (200 or 206, whatever the
Range header said) is checked just before its headers go out, so no Range form
can play without it. One listening is one user on one recording from one client
address; its requests within LISTENING_WINDOW of the last row (a browser's seeks
and re-buffering) add no row, anything later or from elsewhere does.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import structlog
from aiohttp import web
from sqlalchemy import select

from agent_desk.auth import LEADS, forbidden_page
from core.db import utcnow
from core.inputs import record_id
from core.models import Role, User
from core.web import DB_KEY, SETTINGS_KEY, USER_KEY
from cti.models import CallRecord
from recordings.models import PlaybackLog, Recording
from tickets.call_access import link_is_sound
from tickets.models import Ticket, TicketCall
from tickets.workflow import visible_ticket_filter

log = structlog.get_logger(service="agent_desk")
CONTENT_TYPES = {"wav": "audio/wav", "opus": "audio/ogg", "ogg": "audio/ogg", "mp3": "audio/mpeg",
                 "raw": "application/octet-stream"}
LISTENING_WINDOW = timedelta(minutes=10)
PLAYED_KEY = web.RequestKey("recording_played", Recording)
REFUSED = "录音不存在，或您无权收听此录音"


async def may_listen(db, user: User, recording: Recording) -> bool:
    if user.role in LEADS:
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


def file_of(root: Path, recording: Recording) -> Path | None:
    """The file under the recordings root (never outside it), if present."""
    path = (root / recording.path).resolve()
    return path if path.is_relative_to(root.resolve()) and path.is_file() else None


async def play(request: web.Request) -> web.StreamResponse:
    user: User = request[USER_KEY]
    rec_id = record_id(request.match_info["id"], "id", "录音")
    async with request.app[DB_KEY].session() as db:
        recording = await db.get(Recording, rec_id)
        if recording is None and user.role in LEADS:  # they hear every recording: nothing to hide
            return forbidden_page(request, "录音不存在", 404)
        if recording is None or not await may_listen(db, user, recording):
            # Ids are sequential: answering a missing one differently would count every recording and
            # tell which ids to try once a link made them playable. One answer for both.
            log.warning("recording_refused", recording_id=rec_id, user=user.username, exists=recording is not None)
            return forbidden_page(request, REFUSED)
    if recording.format == "none":  # filed without sound (an empty or too-short recording)
        return forbidden_page(request, recording.transcript_note or "该录音没有声音", 404)
    path = file_of(request.app[SETTINGS_KEY].recordings_dir, recording)
    if path is None:
        return forbidden_page(request, "录音文件不存在或已过保存期限", 404)
    request[PLAYED_KEY] = recording  # audited by _audit_playback once the response is known to carry bytes
    return web.FileResponse(path, headers={
        "Content-Type": CONTENT_TYPES.get(recording.format, "application/octet-stream"),
        "Cache-Control": "private, no-store", "Content-Disposition": "inline"})


def _sends_bytes(request: web.Request, response: web.StreamResponse) -> bool:
    return request.method != "HEAD" and response.status in (200, 206) and (response.content_length or 0) > 0


async def _audit_playback(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs after the range is resolved and before any byte is written."""
    recording = request.get(PLAYED_KEY)
    if recording is None or not _sends_bytes(request, response):
        return
    user: User = request[USER_KEY]
    client = (request.remote or "")[:64] or None
    range_header = request.headers.get("Range")
    same_client = PlaybackLog.client_address == client if client else PlaybackLog.client_address.is_(None)
    async with request.app[DB_KEY].transaction() as db:
        recent = await db.scalar(select(PlaybackLog.id).where(
            PlaybackLog.recording_id == recording.id, PlaybackLog.user_id == user.id, same_client,
            PlaybackLog.at >= utcnow() - LISTENING_WINDOW).limit(1))
        if recent is not None:
            return  # the same listening: a seek or a re-buffer
        db.add(PlaybackLog(recording_id=recording.id, user_id=user.id, range_header=(range_header or "")[:64],
                           client_address=client, forwarded_for=request.headers.get("X-Forwarded-For", "")[:255]
                           or None))
    log.info("recording_played", recording_id=recording.id, call_id=recording.call_id, user=user.username,
             user_id=user.id, range=range_header, client=client, status=response.status)


def add_routes(app: web.Application) -> None:
    app.router.add_get(r"/recordings/{id:\d+}", play)
    app.on_response_prepare.append(_audit_playback)
