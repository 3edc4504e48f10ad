"""Server-sent events: the Redis stream ``hotline:events`` filtered for one user.

* An agent receives only events about themself (``agent_id`` is theirs): their
  screen pops, state changes, answered and ended calls — never another agent's pop.
* Team leads and admins receive the wallboard events (audience ``leads``).
* Handling-unit users receive events addressed to their unit (audience ``unit``).

The SSE ``id`` is the stream id, so a reconnecting ``EventSource`` sends
``Last-Event-ID`` and catches up from there. A fresh connection of an agent
replays the pop of a call still ringing or in progress. A comment line is sent
every 15 s so proxies do not close an idle connection.

Each user may hold ``[web] max_event_streams_per_user`` streams at once (each costs a Redis
connection blocked in XREAD); opening one more closes the oldest with a ``superseded`` event, on
which the page stops its EventSource instead of reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from core import events as ev
from core.models import LEAD_ROLES, Role, User
from core.web import REDIS_KEY, SETTINGS_KEY, USER_KEY, json_error

KEEPALIVE_SECONDS = 15
BLOCK_MS = 3000
RETRY_MS = 2000
REPLAY_SCAN = 2000  # newest stream entries searched for a pop still open
STREAM_ID = re.compile(r"^\d+-\d+$")
SUPERSEDED = ("event: superseded\ndata: "
              + json.dumps({"message": "实时连接已由新打开的窗口接替，本窗口不再自动更新"}, ensure_ascii=False)
              + "\n\n").encode()


@dataclass(eq=False)
class _Stream:
    task: asyncio.Task
    superseded: bool = False


STREAMS_KEY = web.AppKey("event_streams", dict)  # user id -> that user's open streams, oldest first


@contextlib.asynccontextmanager
async def stream_slot(request: web.Request, user: User, response: web.StreamResponse) -> AsyncIterator[None]:
    """Hold one of the user's stream slots; closing the oldest streams over the cap.

    A superseded stream's task is cancelled (it is blocked in XREAD); here the cancellation is turned
    into a last ``superseded`` event and a normal end of the response."""
    open_streams: list[_Stream] = request.app[STREAMS_KEY].setdefault(user.id, [])
    me = _Stream(asyncio.current_task())  # type: ignore[arg-type]
    open_streams.append(me)
    cap = max(1, int(request.app[SETTINGS_KEY].web.max_event_streams_per_user))
    while len(open_streams) > cap:
        oldest = open_streams.pop(0)
        oldest.superseded = True
        oldest.task.cancel()
    try:
        yield
    except asyncio.CancelledError:
        if not me.superseded:
            raise
        me.task.uncancel()
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write(SUPERSEDED)
    finally:
        if me in open_streams:
            open_streams.remove(me)
        if not open_streams:
            request.app[STREAMS_KEY].pop(user.id, None)


def visible_to(fields: dict[str, str], user: User) -> bool:
    """May ``user`` see this stream entry? (pure; the rules of the module docstring)"""
    audience = fields.get("audience", "")
    agent_id = fields.get("agent_id", "")
    if audience == "agent":
        return agent_id == str(user.id)
    if user.role == Role.AGENT:
        return bool(agent_id) and agent_id == str(user.id)
    if audience == "leads":
        return user.role in LEAD_ROLES
    if audience == "unit":
        try:
            data = json.loads(fields.get("data") or "{}")
        except ValueError:
            return False
        return user.unit_id is not None and data.get("unit_id") == user.unit_id
    return False


def sse_message(entry_id: str, fields: dict[str, str]) -> bytes:
    """One SSE message; ``data`` is the event's JSON on a single line."""
    data = (fields.get("data") or "{}").replace("\n", " ")
    return f"id: {entry_id}\nevent: {fields.get('name', 'message')}\ndata: {data}\n\n".encode()


def open_pop(entries: list[tuple[str, dict[str, str]]], agent_id: int) -> tuple[str, dict[str, str]] | None:
    """From entries newest first: this agent's latest screen pop whose call has not ended."""
    ended: set[str] = set()
    for entry_id, fields in entries:
        name = fields.get("name")
        if name not in (ev.CallEnded.name, ev.ScreenPop.name):
            continue
        try:
            call_id = json.loads(fields.get("data") or "{}").get("call_id")
        except ValueError:
            continue
        if name == ev.CallEnded.name:
            ended.add(call_id)
        elif fields.get("agent_id") == str(agent_id):
            return None if call_id in ended else (entry_id, fields)
    return None


async def _start(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache, no-transform",
        "X-Accel-Buffering": "no", "Connection": "keep-alive",
    })
    await response.prepare(request)
    await response.write(f"retry: {RETRY_MS}\n\n".encode())
    return response


async def _follow(redis, user: User, response: web.StreamResponse, last_id: str) -> None:
    """Write the user's entries of the stream after ``last_id`` as they come, until cancelled."""
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    while True:
        # Short blocking reads: redis-py's default socket timeout (5 s) must not cut them off.
        batches = await redis.xread({ev.STREAM: last_id}, count=200, block=BLOCK_MS)
        for _stream, entries in batches or ():
            for entry_id, fields in entries:
                last_id = entry_id
                if visible_to(fields, user):
                    await response.write(sse_message(entry_id, fields))
                    last_write = loop.time()
        if loop.time() - last_write >= KEEPALIVE_SECONDS:
            await response.write(b": keep-alive\n\n")
            last_write = loop.time()


async def events_stream(request: web.Request) -> web.StreamResponse:
    """GET /events: this user's live events as text/event-stream."""
    user: User = request[USER_KEY]
    redis = request.app[REDIS_KEY]
    last_id = request.headers.get("Last-Event-ID") or request.query.get("last_id") or ""
    if STREAM_ID.fullmatch(last_id) and any(int(part) >= 2**64 for part in last_id.split("-")):
        raise json_error(400, "事件编号超出范围，请刷新页面", "last_id")  # Redis would refuse it mid-stream
    response = await _start(request)
    try:  # the browser may go away at any write, the first ones included
        if not STREAM_ID.fullmatch(last_id):
            # A fresh desk: start from now, after replaying a pop of a call still going on.
            newest = await redis.xrevrange(ev.STREAM, count=1)
            last_id = newest[0][0] if newest else "0-0"
            if user.role == Role.AGENT:
                pop = open_pop(await redis.xrevrange(ev.STREAM, count=REPLAY_SCAN), user.id)
                if pop is not None:
                    await response.write(sse_message(*pop))
        await response.write(f"event: hello\ndata: {json.dumps({'last_id': last_id})}\n\n".encode())
        async with stream_slot(request, user, response):
            await _follow(redis, user, response, last_id)
    except (ConnectionResetError, RuntimeError):  # the browser went away
        pass
    return response


def add_routes(app: web.Application) -> None:
    app[STREAMS_KEY] = {}
    app.router.add_get("/events", events_stream)

