"""Ticket pages for every role, shaped after the handling units' mobile manual (seed 000):
home counters (§3.1), the filtered list (§3.2, §3.6), the detail with progress bar,
tracking log and action dialogs (§3.2.1, §3.2.2), and the "my" page (§3.7).

Pages read through tickets.queries; actions and uploads go from the browser to
the tickets JSON API (tickets/api.py) with the CSRF header.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from agent_desk.auth import forbidden_page
from agent_desk.common import local_time, local_zone
from core.inputs import InputError, query_int
from core.models import ROLE_LABELS, User
from core.web import DB_KEY, SETTINGS_KEY, USER_KEY
from recordings.access import audible_ticket_recordings
from tickets import clock, dispatch, risk, rules
from tickets.deadlines import active_policy, days_left, policy_name, today_local
from tickets.outbox import notices_for
from tickets.queries import (
    EXPIRY_BUCKETS,
    MAX_PAGE,
    TicketFilter,
    closing_rate,
    find_by_number,
    home_counters,
    list_tickets,
    ticket_calls,
    ticket_evidence,
    tracking_log,
    unit_choices,
    unit_locations,
)
from tickets.vocabulary import CLOSED_STATES, STATE_LABELS, State
from tickets.workflow import ACTIONS, available_actions, can_view

if TYPE_CHECKING:  # the rows the services return; the pages read them, never query the tables
    from tickets.models import Ticket

PAGE_SIZE = 20
# Actions with their own controls on the page rather than a dialog.
NOT_DIALOGS = frozenset({"补充凭证", "关联来电"})
PROGRESS = ("登记", "待受理", "受理中", "待审核结案", "办结")


def today(request: web.Request) -> dt.date:
    """Today on the rules' clock (tickets/clock.py), so the counters agree with the scheduler's reminders."""
    settings = request.app[SETTINGS_KEY]
    return today_local(active_policy(policy_name(settings)), clock.now(settings))


def progress_step(ticket: Ticket) -> int:
    """Index in PROGRESS of the ticket's current stage (the manual's progress bar)."""
    if ticket.state in CLOSED_STATES or ticket.state == State.HANDED_OVER:
        return 4
    return {State.ACCEPTED: 2, State.PENDING_REVIEW: 3}.get(ticket.state, 1)


def card(ticket: Ticket, day: dt.date) -> dict[str, Any]:
    return {"number": ticket.number, "state": ticket.state.value, "state_label": ticket.state_label,
            "kind_label": ticket.kind_label, "hotline": ticket.hotline, "days_left": days_left(ticket, day),
            "complaint_object": ticket.complaint_object, "event_category": ticket.event_category,
            "complainant_name": ticket.complainant_name, "complainant_phone": ticket.complainant_phone,
            "respondent_name": ticket.respondent_name, "respondent_phone": ticket.respondent_phone,
            "supervised": ticket.supervised, "risk_level": ticket.risk_level,
            "unit": ticket.unit.name if ticket.unit else ""}


async def unit_home(request: web.Request) -> web.Response:
    user: User = request[USER_KEY]
    async with request.app[DB_KEY].session() as db:
        counters = await home_counters(db, user, today(request))
    states = [{"value": s.value, "label": STATE_LABELS[s], "count": counters["per_state"][s.value]} for s in State]
    return aiohttp_jinja2.render_template("unit_home.html", request, {"c": counters, "states": states})


async def _location_options(request: web.Request) -> dict[str, list[str]]:
    async with request.app[DB_KEY].session() as db:
        return await unit_locations(db)


def _filter_options() -> dict[str, list[str]]:
    cats = dispatch.categories()
    return {"objects": sorted({o for objs in cats.complaint_objects.values() for o in objs}),
            "events": sorted({e for evs in cats.event_categories.values() for e in evs})}


async def ticket_list(request: web.Request) -> web.Response:
    user: User = request[USER_KEY]
    day = today(request)
    error = None
    try:
        flt = TicketFilter.from_query(request.query)
        page_no = query_int(request.query.get("page"), "page", "页码", 1, 1, MAX_PAGE)
    except InputError as exc:
        error = exc.message
        flt, page_no = TicketFilter(), 1
    async with request.app[DB_KEY].session() as db:
        page = await list_tickets(db, user, flt, day, page_no, PAGE_SIZE)
    query = {k: v for k, v in request.query.items() if k != "page" and v}
    pages = max(1, -(-page.total // PAGE_SIZE))
    return aiohttp_jinja2.render_template("tickets.html", request, {
        "cards": [card(t, day) for t in page.items], "total": page.total, "page": page.page, "pages": pages,
        "q": request.query, "error": error, "expiry_buckets": list(EXPIRY_BUCKETS),
        "states": [(s.value, STATE_LABELS[s]) for s in State], "locations": await _location_options(request),
        "options": _filter_options(),
        "prev_url": f"?{urlencode({**query, 'page': page.page - 1})}" if page.page > 1 else None,
        "next_url": f"?{urlencode({**query, 'page': page.page + 1})}" if page.page < pages else None,
        "export_query": urlencode(query),
    })


async def _unit_choices(db, ticket: Ticket, action: str) -> list[dict[str, Any]]:
    return [{"id": u.id, "name": u.name} for u in await unit_choices(db, ticket, action)]


async def _dialogs(db, ticket: Ticket, user: User) -> list[dict[str, Any]]:
    """Each available action with its required inputs, for the browser's dialogs."""
    dialogs = []
    for name in available_actions(ticket, user):
        if name in NOT_DIALOGS:
            continue
        fields = []
        for f in ACTIONS[name].fields:
            spec: dict[str, Any] = {"key": f.key, "label": f.label, "kind": f.kind, "required": f.required}
            if f.kind == "unit":
                spec["choices"] = await _unit_choices(db, ticket, name)
            elif f.kind == "clauses":
                spec["choices"] = list(rules.profile(ticket.hotline).rejection_clauses)
            elif f.kind == "authority":
                spec["choices"] = list(rules.profile(ticket.hotline).authorities)
            elif f.kind == "level":
                spec["choices"] = list(risk.active_rules().levels)
            fields.append(spec)
        dialogs.append({"action": name, "fields": fields})
    return dialogs


async def ticket_page(request: web.Request) -> web.Response:
    user: User = request[USER_KEY]
    number = request.match_info["number"]
    zone, day = local_zone(request), today(request)
    async with request.app[DB_KEY].session() as db:
        ticket = await find_by_number(db, number)
        if ticket is None or not can_view(user, ticket):
            # As the JSON API: outside the unit boundary a ticket does not exist, as far as the caller can tell.
            return forbidden_page(request, f"工单 {number} 不存在", 404)
        log = await tracking_log(db, ticket)
        calls = await ticket_calls(db, ticket)
        # Only what this user may hear: a stored link does not vouch for itself (recordings.access).
        recordings = await audible_ticket_recordings(db, user, ticket)
        evidence = await ticket_evidence(db, ticket)
        dialogs = await _dialogs(db, ticket, user)
        notices = await notices_for(db, ticket.id)
    return aiohttp_jinja2.render_template("ticket.html", request, {
        "t": ticket, "c": card(ticket, day), "progress": PROGRESS, "step": progress_step(ticket),
        "log": [{"action": a.action, "operator": a.operator_name, "unit": a.operator_unit or "",
                 "at": local_time(a.at, zone), "state": a.state_label, "remark": a.remark} for a in log],
        "calls": [{"ref": c.ref, "at": local_time(c.started_at, zone), "hotline": c.hotline,
                   "talk": c.talk_seconds} for c in calls],
        "recordings": [{"id": r.id, "kind": "留言" if r.kind == "voicemail" else "通话录音",
                        "at": local_time(r.started_at, zone), "seconds": r.duration_seconds} for r in recordings],
        "evidence": [{"filename": e.filename, "size_kb": round(e.size_bytes / 1024, 1),
                      "kind": "PDF" if e.content_type == "application/pdf" else "图片",
                      "url": f"/api/tickets/{ticket.number}/evidence/{e.id}",
                      "at": local_time(e.uploaded_at, zone)} for e in evidence],
        "dialogs": dialogs,
        "notices": [{"created": local_time(n.created_at, zone), "audience": "诉求方" if n.audience == "citizen" else "处理单位",
                     "channel": "短信" if n.channel == "sms" else "邮件", "recipient": n.recipient, "body": n.body,
                     "state": n.state.value, "state_label": n.state_label, "attempts": n.attempts,
                     "sent": local_time(n.sent_at, zone) if n.sent_at else "", "error": n.last_error or ""}
                    for n in notices],
        "can_upload": "补充凭证" in available_actions(ticket, user),
        "created": local_time(ticket.created_at, zone),
    })


async def my_page(request: web.Request) -> web.Response:
    user: User = request[USER_KEY]
    async with request.app[DB_KEY].session() as db:
        rate = await closing_rate(db, user.id)
    return aiohttp_jinja2.render_template("my.html", request, {
        "rate": rate, "unit_name": user.unit.name if user.unit else "—", "role_name": ROLE_LABELS[user.role]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/unit", unit_home)
    app.router.add_get("/tickets", ticket_list)
    app.router.add_get(r"/tickets/{number:\d{8,20}}", ticket_page)
    app.router.add_get("/my", my_page)
