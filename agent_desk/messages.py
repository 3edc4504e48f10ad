"""The message centre pages (every role) and the team lead's list of tickets in a reminder step.

* ``GET /messages`` — the user's messages, newest first, each linking to its ticket;
* ``GET /api/messages`` — the same as JSON with the unread count (the badge on every page reads it, then
  follows ``inbox`` events on the live stream); ``?ticket=<number>`` only those about one ticket;
* ``POST /api/messages/read`` — mark messages read (``{"ids": [...]}``, or every unread one);
* ``GET /reminders`` — team leads and admins: every open ticket in a 催办/超期/督办跟踪 step, with the step
  and the date it fell due (001 §5), within their ticket scope.
"""

from __future__ import annotations

import re

import aiohttp_jinja2
from aiohttp import web

from agent_desk.auth import forbidden_page
from agent_desk.common import local_time, local_zone
from core.inputs import record_id
from core.models import LEAD_ROLES, User
from core.web import DB_KEY, USER_KEY, json_error, read_json
from tickets.message_centre import list_messages, mark_read, unread_count
from tickets.queries import reminded_tickets
from tickets.vocabulary import STATE_LABELS

MAX_IDS = 500
TICKET_NUMBER = re.compile(r"\d{8,20}")  # as the ticket API's routes (tickets/api.py NUMBER)


def _rows(messages: list[dict], request: web.Request) -> list[dict]:
    zone = local_zone(request)
    return [{**m, "created_at": local_time(m["created_at"], zone)} for m in messages]


async def messages_page(request: web.Request) -> web.Response:
    user: User = request[USER_KEY]
    async with request.app[DB_KEY].session() as db:
        rows = await list_messages(db, user, 200)
        unread = await unread_count(db, user)
    return aiohttp_jinja2.render_template("messages.html", request, {"messages": _rows(rows, request),
                                                                     "unread": unread})


async def messages_api(request: web.Request) -> web.Response:
    """``?ticket=<number>``: only the messages about that ticket."""
    user: User = request[USER_KEY]
    number = request.query.get("ticket")
    if number is not None and not TICKET_NUMBER.fullmatch(number):
        raise json_error(400, "工单号格式不正确", "ticket")
    async with request.app[DB_KEY].session() as db:
        rows = await list_messages(db, user, 50, number)
        unread = await unread_count(db, user)
    return web.json_response({"unread": unread, "messages": _rows(rows, request)})


async def read_api(request: web.Request) -> web.Response:
    user: User = request[USER_KEY]
    body = await read_json(request)
    ids = body.get("ids") if isinstance(body, dict) else None
    if ids is not None:
        if not isinstance(ids, list) or len(ids) > MAX_IDS:
            raise json_error(400, f"ids 应为最多 {MAX_IDS} 个消息编号的列表", "ids")
        ids = [record_id(i, "ids", "消息编号") for i in ids]
    async with request.app[DB_KEY].transaction() as db:
        marked = await mark_read(db, user, ids)
    async with request.app[DB_KEY].session() as db:
        unread = await unread_count(db, user)
    return web.json_response({"marked": marked, "unread": unread})


async def reminders_page(request: web.Request) -> web.Response:
    user: User = request[USER_KEY]
    if user.role not in LEAD_ROLES:
        return forbidden_page(request, "只有班长或管理员可以查看催办工单")
    zone = local_zone(request)
    async with request.app[DB_KEY].session() as db:
        rows = await reminded_tickets(db, user)
    items = [{"number": t.number, "state": STATE_LABELS[t.state], "unit": t.unit.name if t.unit else "",
              "step": f.label, "rule": f.rule, "due_on": local_time(f.due_on, zone, "%Y-%m-%d"),
              "fired_at": local_time(f.fired_at, zone)} for t, f in rows]
    return aiohttp_jinja2.render_template("reminders.html", request, {"items": items})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/messages", messages_page)
    app.router.add_get("/api/messages", messages_api)
    app.router.add_post("/api/messages/read", read_api)
    app.router.add_get("/reminders", reminders_page)
