"""The seat agent's desk: state bar, screen pop with the ticket form, call control, knowledge, inbox.

The page is rendered once; the pop arrives over /events (see live.py) and the
buttons call the JSON endpoints below, which send commands to the CTI (cti.protocol): the desk has
no AMI connection and never writes agent state.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from agent_desk import webphone
from agent_desk.auth import require_roles
from agent_desk.common import cti_command, local_time, local_zone
from agent_desk.knowledge import load_knowledge, phrases, render_phrases
from core.inputs import record_id
from core.models import Role, User
from core.provisioning import enabled_extensions
from core.satisfaction import LABELS as GRADE_LABELS
from core.vocabulary import SELECTABLE_PAUSE_REASONS
from core.web import DB_KEY, REDIS_KEY, SETTINGS_KEY, USER_KEY, json_error, read_json
from cti import protocol, read
from cti.callbacks import count_open_requests, open_requests
from cti.protocol import PHONE_NUMBER
from ivr.menu import load_all_menus
from recordings.voicemail import recent_voicemails
from tickets import clock, dispatch, return_visits
from tickets.queries import voicemail_tickets
from tickets.vocabulary import KIND_LABELS, STATE_LABELS

AGENT_ONLY = require_roles(Role.AGENT, Role.ADMIN)


@cache
def _category_labels() -> dict[str, str]:
    """IVR complaint-object codes (the pop's ``category``) -> the Chinese names the ticket form uses."""
    try:
        menus = load_all_menus()
    except Exception:  # noqa: BLE001 - no IVR menus: the agent picks the object by hand
        return {}
    return {c.category: c.label for hotline in menus.values() for menu in hotline.menus.values()
            for c in menu.choices.values() if c.category and c.label}


def _form_options() -> dict[str, Any]:
    cats = dispatch.categories()
    return {"objects": {h: list(objs) for h, objs in cats.complaint_objects.items()},
            "events": {h: list(e) for h, e in cats.event_categories.items()},
            "kinds": {k.value: label for k, label in KIND_LABELS.items()},
            "category_labels": _category_labels()}


async def inbox(request: web.Request, user: User, limit: int = 30) -> dict[str, Any]:
    """Voice messages, tickets from voice messages and pending callbacks the user may see."""
    zone = local_zone(request)
    async with request.app[DB_KEY].session() as db:
        voicemails = await recent_voicemails(db, limit)
        tickets = await voicemail_tickets(db, user, limit)
        callbacks = await open_requests(db, limit)
        callbacks_total = await count_open_requests(db)
        visits = await return_visits.open_visits(db, clock.now(request.app[SETTINGS_KEY]), limit)
    return {
        "voicemails": [{"id": r.id, "number": r.caller_number or "未知号码", "hotline": r.hotline,
                        "at": local_time(r.started_at, zone, "%m-%d %H:%M"), "ticket": r.ticket_number,
                        "seconds": round(r.duration_seconds or 0), "transcript": r.transcript} for r in voicemails],
        "tickets": [{"number": t.number, "phone": t.complainant_phone, "state": t.state_label,
                     "at": local_time(t.created_at, zone, "%m-%d %H:%M")} for t in tickets],
        "callbacks": [{"id": c.id, "number": c.number, "hotline": c.hotline, "source": c.source,
                       "status": c.status.value, "attempts": c.attempts,
                       "at": local_time(c.position_at, zone, "%m-%d %H:%M")} for c in callbacks],
        "callbacks_total": callbacks_total,
        "visits": [_visit_json(v, zone) for v in visits],
        "grades": [{"value": g, "label": GRADE_LABELS[g]} for g in return_visits.VISIT_GRADES],
    }


def _visit_json(visit: dict[str, Any], zone) -> dict[str, Any]:
    task, ticket = visit["task"], visit["ticket"]
    return {"id": task.id, "number": task.number, "hotline": task.hotline, "ticket": ticket.number,
            "outcome": STATE_LABELS[ticket.state], "status": task.status.value, "attempts": task.attempts,
            "max_attempts": task.max_attempts, "due": visit["due"], "agent_id": task.agent_id,
            "next_attempt": local_time(task.next_attempt_at, zone, "%m-%d %H:%M") if task.next_attempt_at else None,
            "closed": local_time(task.position_at, zone, "%m-%d %H:%M")}


@AGENT_ONLY
async def get_visits(request: web.Request) -> web.Response:
    """GET /api/desk/visits: the 回访 task list (closed cases to call back, oldest closing first)."""
    return web.json_response({"visits": (await inbox(request, request[USER_KEY]))["visits"]})


@AGENT_ONLY
async def post_visit_result(request: web.Request) -> web.Response:
    """POST /api/desk/visits/{id} {result, satisfaction}: 回访结果 and 满意度 onto the ticket."""
    task_id = record_id(request.match_info["id"], "task_id", "回访任务")
    data = await read_json(request)
    async with request.app[DB_KEY].transaction() as db:
        ticket = await return_visits.record_result(db, task_id, request[USER_KEY], data,
                                                   clock.now(request.app[SETTINGS_KEY]))
    return web.json_response({"ok": True, "ticket": ticket.number, "message": f"回访结果已记入工单 {ticket.number}"})


@AGENT_ONLY
async def desk_page(request: web.Request) -> web.Response:
    user: User = request[USER_KEY]
    settings = request.app[SETTINGS_KEY]
    session = await read.agent_session(request.app[REDIS_KEY], user.id)
    shown_phrases = render_phrases(phrases(), list(dispatch.unit_config().national),
                             settings.centre.region, user.agent_number or "")
    return aiohttp_jinja2.render_template("desk.html", request, {
        "state": _state_json(session), "extensions": await enabled_extensions(request.app[DB_KEY]),
        "pause_reasons": SELECTABLE_PAUSE_REASONS, "phrases": shown_phrases, "options": _form_options(),
        "inbox": await inbox(request, user), "knowledge_problem": load_knowledge().problem,
    })


def _state_json(session: read.AgentSession) -> dict[str, Any]:
    return {**session.to_json(), "webphone": webphone.is_browser_phone(session.phone)}


@AGENT_ONLY
async def get_state(request: web.Request) -> web.Response:
    return web.json_response(_state_json(await read.agent_session(request.app[REDIS_KEY], request[USER_KEY].id)))


@AGENT_ONLY
async def post_state(request: web.Request) -> web.Response:
    """POST /api/desk/state {action: login|ready|pause|logout, phone?, reason?}"""
    user: User = request[USER_KEY]
    data = await read_json(request)
    action = data.get("action")
    redis = request.app[REDIS_KEY]
    args: dict[str, Any] = {"agent_id": user.id, "action": action}
    if action == "login":
        phone = str(data.get("phone") or "")
        if phone == webphone.WEBPHONE:
            problem = await protocol.cti_problem(redis)
            if problem:  # before an endpoint is made for nothing
                raise json_error(503, problem)
            phone = await webphone.open_phone(request.app, user)
        elif phone not in await enabled_extensions(request.app[DB_KEY]):
            raise json_error(400, "请选择有效的分机号", "phone")
        try:
            await cti_command(request, "agent_state", {**args, "phone": phone})
        except web.HTTPException:
            if webphone.is_browser_phone(phone):
                await webphone.close_phone(request.app, user.id)
            raise
    elif action == "logout":
        before = await read.agent_session(redis, user.id)
        await cti_command(request, "agent_state", args)
        if webphone.is_browser_phone(before.phone):
            await webphone.close_phone(request.app, user.id)
    elif action in ("ready", "pause"):
        await cti_command(request, "agent_state", {**args, "reason": str(data.get("reason") or "")})
    else:
        raise json_error(400, "未知的操作", "action")
    return web.json_response(_state_json(await read.agent_session(redis, user.id)))


@AGENT_ONLY
async def post_call(request: web.Request) -> web.Response:
    """POST /api/desk/call/{op}: hang up, hold, resume, transfer (blind/attended, then complete/cancel)
    or call back; carried out by the CTI."""
    user: User = request[USER_KEY]
    op = request.match_info["op"]
    data = await read_json(request)
    hotline = str(data.get("hotline") or "")
    if hotline and hotline not in dispatch.unit_config().national:
        # It travels in an AMI Originate header: a line break or comma there would add headers or variables.
        raise json_error(400, f"热线应为 {'、'.join(dispatch.unit_config().national)} 之一", "hotline")
    if not (await read.agent_session(request.app[REDIS_KEY], user.id)).logged_in:
        raise json_error(409, "请先使用分机登录")
    if op == "callback":
        number = str(data.get("number") or "").strip()
        if not PHONE_NUMBER.match(number):
            raise json_error(400, "请输入有效的电话号码", "number")
        callback_id = data.get("callback_id")
        if callback_id is None:  # a call the agent starts by hand
            answer = await cti_command(request, "call", {"agent_id": user.id, "op": "dial", "number": number,
                                                         "hotline": hotline})
        else:  # a request from the inbox: claimed first, so two agents never both call the citizen
            if not isinstance(callback_id, int):
                raise json_error(400, "回拨任务编号无效", "callback_id")
            answer = await cti_command(request, "callback", {
                "agent_id": user.id, "callback_id": record_id(callback_id, "callback_id", "回拨任务")})
        return web.json_response({"ok": True, "call_id": answer["call_id"], "message": f"正在呼叫 {number}，请接听话机"})
    answer = await cti_command(request, "call", {"agent_id": user.id, "op": op, "target": data.get("target"),
                                                 "mode": data.get("mode", "blind")})
    return web.json_response({"ok": True, **({"message": answer["message"]} if "message" in answer else {})})


async def knowledge_search(request: web.Request) -> web.Response:
    """GET /api/knowledge?q=...&hotline=..."""
    base = load_knowledge()
    hits = base.search(request.query.get("q", ""), request.query.get("hotline") or None)
    return web.json_response({"problem": base.problem,
                              "items": [{"question": e.question, "answer": e.answer, "hotline": e.hotline}
                                        for e in hits]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/desk", desk_page)
    app.router.add_get("/api/desk/state", get_state)
    app.router.add_post("/api/desk/state", post_state)
    app.router.add_post(r"/api/desk/call/{op:[a-z]+}", post_call)
    app.router.add_get("/api/desk/visits", get_visits)
    app.router.add_post(r"/api/desk/visits/{id}", post_visit_result)
    app.router.add_get("/api/knowledge", knowledge_search)
