"""The seat agent's desk: state bar, screen pop with the ticket form, call control, knowledge, inbox.

The page is rendered once; the pop arrives over /events (see live.py) and the
buttons call the JSON endpoints below, which drive Asterisk through cti.control.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import select

from agent_desk import webphone
from agent_desk.auth import require_roles
from agent_desk.common import ami, ami_failure, ami_nodes, local_time, local_zone
from agent_desk.knowledge import load_knowledge, load_phrases, render_phrases
from core.ami import AmiError
from core.inputs import record_id
from core.models import Role, User
from core.vocabulary import SELECTABLE_PAUSE_REASONS, AgentState, reason_label, state_label
from core.web import DB_KEY, REDIS_KEY, SETTINGS_KEY, USER_KEY, json_error, read_json
from cti import callbacks, control
from cti.models import CallbackRequest, CallbackStatus
from recordings.models import Recording
from tickets import dispatch
from tickets.models import KIND_LABELS, Source, Ticket
from tickets.workflow import visible_ticket_filter

HELD_PREFIX = "hotline:desk:held:"  # agent id -> citizen channel put on hold from the desk
CONSULT_PREFIX = "hotline:desk:consult:"  # agent id -> target of an attended transfer in consultation
PHONE_NUMBER = re.compile(r"^\+?\d{3,20}$")
AGENT_ONLY = require_roles(Role.AGENT, Role.ADMIN)


def _state_json(session: dict[str, Any] | None) -> dict[str, Any]:
    session = session or {"state": AgentState.OFFLINE}
    state = session.get("state", AgentState.OFFLINE)
    reason = session.get("reason")
    return {"state": state, "state_label": state_label(state), "reason": reason,
            "reason_label": reason_label(reason),
            "since": session.get("since"), "webphone": webphone.is_browser_phone(session.get("phone")),
            "phone": session.get("phone"), "queues": session.get("queues", [])}


@cache
def _category_labels() -> dict[str, str]:
    """IVR complaint-object codes (the pop's ``category``) -> the Chinese names the ticket form uses."""
    try:
        from ivr.menu import load_all_menus

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


async def inbox(request: web.Request, user: User, limit: int = 30) -> dict[str, list[dict[str, Any]]]:
    """Voice messages, tickets from voice messages and pending callbacks the user may see."""
    zone = local_zone(request)
    async with request.app[DB_KEY].session() as db:
        voicemails = (await db.scalars(select(Recording).where(Recording.kind == "voicemail")
                                       .order_by(Recording.started_at.desc()).limit(limit))).all()
        tickets = (await db.scalars(select(Ticket).where(visible_ticket_filter(user), Ticket.source == Source.VOICEMAIL)
                                    .order_by(Ticket.created_at.desc()).limit(limit))).all()
        callbacks = (await db.scalars(select(CallbackRequest).where(
            CallbackRequest.status.in_((CallbackStatus.PENDING, CallbackStatus.FAILED)))
            .order_by(CallbackRequest.position_at).limit(limit))).all()
    return {
        "voicemails": [{"id": r.id, "number": r.caller_number or "未知号码", "hotline": r.hotline,
                        "at": local_time(r.started_at, zone, "%m-%d %H:%M"), "ticket": r.ticket_number,
                        "seconds": round(r.duration_seconds or 0), "transcript": r.transcript} for r in voicemails],
        "tickets": [{"number": t.number, "phone": t.complainant_phone, "state": t.state_label,
                     "at": local_time(t.created_at, zone, "%m-%d %H:%M")} for t in tickets],
        "callbacks": [{"id": c.id, "number": c.number, "hotline": c.hotline, "source": c.source,
                       "status": c.status.value, "attempts": c.attempts,
                       "at": local_time(c.position_at, zone, "%m-%d %H:%M")} for c in callbacks],
    }


@AGENT_ONLY
async def desk_page(request: web.Request) -> web.Response:
    user: User = request[USER_KEY]
    settings = request.app[SETTINGS_KEY]
    session = await control.agent_session(request.app[REDIS_KEY], user.id)
    phrases = render_phrases(load_phrases(), list(dispatch.unit_config().national),
                             settings["centre"].get("region", ""), user.agent_number or "")
    return aiohttp_jinja2.render_template("desk.html", request, {
        "state": _state_json(session), "extensions": settings["sip"]["agent_extensions"],
        "pause_reasons": SELECTABLE_PAUSE_REASONS, "phrases": phrases, "options": _form_options(),
        "inbox": await inbox(request, user), "knowledge_problem": load_knowledge().problem,
    })


@AGENT_ONLY
async def get_state(request: web.Request) -> web.Response:
    session = await control.agent_session(request.app[REDIS_KEY], request[USER_KEY].id)
    return web.json_response(_state_json(session))


@AGENT_ONLY
async def post_state(request: web.Request) -> web.Response:
    """POST /api/desk/state {action: login|ready|pause|logout, phone?, reason?}"""
    user: User = request[USER_KEY]
    data = await read_json(request)
    action = data.get("action")
    redis = request.app[REDIS_KEY]
    try:
        if action == "login":
            phone = str(data.get("phone") or "")
            ami_nodes(request)  # before an endpoint is made for nothing
            if phone == webphone.WEBPHONE:
                phone = await webphone.open_phone(request.app, user)
            elif phone not in request.app[SETTINGS_KEY]["sip"]["agent_extensions"]:
                raise json_error(400, "请选择有效的分机号", "phone")
            try:
                session = await control.agent_login(ami_nodes(request), redis, user, phone)
            except AmiError:
                if webphone.is_browser_phone(phone):
                    await webphone.close_phone(request.app, user.id)
                raise
        elif action == "ready":
            session = await control.agent_ready(ami_nodes(request), redis, user)
        elif action == "pause":
            session = await control.agent_pause(ami_nodes(request), redis, user, str(data.get("reason") or ""))
        elif action == "logout":
            before = await control.agent_session(redis, user.id) or {}
            await control.agent_logout(ami_nodes(request), redis, user)
            if webphone.is_browser_phone(before.get("phone")):
                await webphone.close_phone(request.app, user.id)
            session = await control.agent_session(redis, user.id)
        else:
            raise json_error(400, "未知的操作", "action")
    except AmiError as exc:
        raise ami_failure(exc) from None
    return web.json_response(_state_json(session))


def live_call_channels(channels: list[dict[str, str]], phone: str) -> tuple[str | None, str | None]:
    """(agent channel, citizen channel) of the agent phone's bridged call (pure)."""
    mine = next((c for c in channels if c.get("Channel", "").startswith(f"PJSIP/{phone}-")), None)
    if mine is None:
        return None, None
    bridge = mine.get("BridgeId") or ""
    peer = next((c for c in channels if bridge and c.get("BridgeId") == bridge and c is not mine), None)
    return mine["Channel"], peer["Channel"] if peer else None


@AGENT_ONLY
async def post_call(request: web.Request) -> web.Response:
    """POST /api/desk/call/{op}: hang up, hold, resume, transfer (blind/attended, then complete/cancel)
    or call back."""
    user: User = request[USER_KEY]
    op = request.match_info["op"]
    data = await read_json(request)
    hotline = str(data.get("hotline") or "")
    if hotline and hotline not in dispatch.unit_config().national:
        # It travels in an AMI Originate header: a line break or comma there would add headers or variables.
        raise json_error(400, f"热线应为 {'、'.join(dispatch.unit_config().national)} 之一", "hotline")
    redis = request.app[REDIS_KEY]
    session = await control.agent_session(redis, user.id)
    if not session or session.get("state") == AgentState.OFFLINE:
        raise json_error(409, "请先使用分机登录")
    phone = session["phone"]
    client = ami(request, session.get("node"))  # the node the agent's phone is on: their calls are there
    try:
        if op == "callback":
            number = str(data.get("number") or "").strip()
            if not PHONE_NUMBER.match(number):
                raise json_error(400, "请输入有效的电话号码", "number")
            callback_id = data.get("callback_id")
            if callback_id is None:  # a call the agent starts by hand
                call_id = await control.call_citizen(client, user.id, phone, number, hotline=hotline)
            else:  # a request from the inbox: claimed first, so two agents never both call the citizen
                call_id = await _call_back(request, user, phone, callback_id, client)
            return web.json_response({"ok": True, "call_id": call_id, "message": f"正在呼叫 {number}，请接听话机"})
        agent_chan, citizen_chan = live_call_channels(await control.live_channels(client), phone)
        held_key = f"{HELD_PREFIX}{user.id}"
        if agent_chan is None:
            raise json_error(409, "当前没有进行中的通话")
        if op == "hangup":
            # The agent leaves; the citizen stays for the satisfaction survey (一次一评), which no agent
            # may skip: a citizen the agent put on hold goes there from the music.
            held = await redis.get(held_key)
            if held and citizen_chan is None:
                await control.to_survey(client, held)
            await control.hangup(client, agent_chan)
            await redis.delete(held_key)
        elif op == "hold":
            if citizen_chan is None:
                raise json_error(409, "通话已处于保持状态")
            await control.hold(client, citizen_chan, agent_chan)
            await redis.set(held_key, citizen_chan, ex=3600)
        elif op == "resume":
            held = await redis.get(held_key)
            if not held:
                raise json_error(409, "没有处于保持状态的通话")
            await control.resume(client, held, agent_chan)
            await redis.delete(held_key)
        elif op == "transfer":
            target = str(data.get("target") or "").strip()
            if not (re.fullmatch(r"123\d\d-[a-z]+", target) or re.fullmatch(r"8\d{3}", target)):
                raise json_error(400, "请选择转接的队列或坐席分机", "target")
            if data.get("mode", "blind") == "attended":
                await control.attended_transfer(client, agent_chan, target)
                await redis.set(f"{CONSULT_PREFIX}{user.id}", target, ex=3600)
                return web.json_response({"ok": True, "message": f"正在咨询 {target}，客户在听等待音乐；"
                                                                 "可完成转接或取消"})
            await control.blind_transfer(client, agent_chan, target)
        elif op in ("complete", "cancel"):
            if not await redis.delete(f"{CONSULT_PREFIX}{user.id}"):
                raise json_error(409, "当前没有进行中的咨询转接")
            if op == "complete":
                await control.complete_transfer(client, agent_chan)
                return web.json_response({"ok": True, "message": "已完成转接"})
            await control.cancel_transfer(client, agent_chan)
            return web.json_response({"ok": True, "message": "已取消转接，回到原通话"})
        else:
            raise json_error(404, "未知的通话操作")
    except AmiError as exc:
        raise ami_failure(exc) from None
    return web.json_response({"ok": True})


async def _call_back(request: web.Request, user: User, phone: str, callback_id: Any, client) -> str:
    if not isinstance(callback_id, int):
        raise json_error(400, "回拨任务编号无效", "callback_id")
    callback_id = record_id(callback_id, "callback_id", "回拨任务")
    db = request.app[DB_KEY]
    async with db.session() as session:
        pending = await session.get(CallbackRequest, callback_id)
    if pending is None:
        raise json_error(404, "回拨任务不存在", "callback_id")
    if not await callbacks.claim(db, callback_id, user.id):
        raise json_error(409, "该回拨已由其他坐席处理或已结束", "callback_id")
    return await callbacks.dial_claimed(db, client, pending, user.id, phone)


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
    app.router.add_get("/api/knowledge", knowledge_search)
