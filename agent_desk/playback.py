"""Recordings in the browser: /recordings/{id} streamed with HTTP range requests (seekable),
only to users allowed to see that call or ticket; every listening is audited (log line + row).

Who may listen is recordings.access.may_listen: team leads and admins, any recording; an agent,
recordings of calls they took and of tickets they can see; a handling unit, recordings of tickets
visible to their unit, through sound links only.

Audit: every response that carries recording bytes (200 or 206, whatever the
Range header said) is checked just before its headers go out, so no Range form
can play without it. One listening is one user on one recording from one client
address; its requests within recordings.access.LISTENING_WINDOW of the last row (a
browser's seeks and re-buffering) add no row, anything later or from elsewhere does.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from aiohttp import web

from agent_desk.auth import LEADS, forbidden_page
from core.inputs import record_id
from core.models import User
from core.web import DB_KEY, SETTINGS_KEY, USER_KEY
from recordings.access import may_listen, note_listening, recording_by_id
from recordings.models import Recording

log = structlog.get_logger(service="agent_desk")
CONTENT_TYPES = {"wav": "audio/wav", "opus": "audio/ogg", "ogg": "audio/ogg", "mp3": "audio/mpeg",
                 "raw": "application/octet-stream"}
PLAYED_KEY = web.RequestKey("recording_played", Recording)
REFUSED = "录音不存在，或您无权收听此录音"


def file_of(root: Path, recording: Recording) -> Path | None:
    """The file under the recordings root (never outside it), if present."""
    path = (root / recording.path).resolve()
    return path if path.is_relative_to(root.resolve()) and path.is_file() else None


async def play(request: web.Request) -> web.StreamResponse:
    user: User = request[USER_KEY]
    rec_id = record_id(request.match_info["id"], "id", "录音")
    async with request.app[DB_KEY].session() as db:
        recording = await recording_by_id(db, rec_id)
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
    async with request.app[DB_KEY].transaction() as db:
        if not await note_listening(db, recording, user, client, range_header,
                                    request.headers.get("X-Forwarded-For")):
            return  # the same listening: a seek or a re-buffer
    log.info("recording_played", recording_id=recording.id, call_id=recording.call_id, user=user.username,
             user_id=user.id, range=range_header, client=client, status=response.status)


def add_routes(app: web.Application) -> None:
    app.router.add_get(r"/recordings/{id:\d+}", play)
    app.on_response_prepare.append(_audit_playback)
