"""The authorization matrix: every route of the desk × every role, against the real stack.

The routes come from the application's own route table (``build_app``); each one must have its rule
declared in :data:`RULES` below (method + path pattern → which roles pass and what the others get), so a
new route without a declared rule fails :func:`test_every_route_has_a_declared_rule`.

The unit-boundary rows are real: a complaint registered at the call centre and dispatched to the
Guangdong province unit (12301-GD), with evidence and a recorded call linked to it, seen by
* ``owner``   gd_handler  — the handling unit the ticket is dispatched to,
* ``sibling`` sc_handler  — Sichuan, another province under the same national unit,
* ``parent``  nat12301    — the national unit above Guangdong,
besides ``anonymous``, ``agent`` (agent1, who took the call), ``lead`` (lead1) and ``admin``.
One log-in per role serves every request; POST /logout runs last.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy import select

from core.filemodes import private_umask
from core.models import Unit, User
from cti.models import CallRecord, CallState
from recordings.models import Recording
from tickets.models import Ticket, TicketCall

pytestmark = pytest.mark.stack

ROLES = ("anonymous", "agent", "lead", "owner", "sibling", "parent", "admin")
USERS = {"agent": "agent1", "lead": "lead1", "owner": "gd_handler", "sibling": "sc_handler",
         "parent": "nat12301", "admin": "admin"}
LOGGED_IN = ROLES[1:]

# What a role gets: OK = 2xx or a redirect elsewhere than the log-in page; PASS = past the authorization
# checks (any answer but 401/403/404 or the log-in page, e.g. a 400 for the deliberately incomplete
# input of a state-changing request); LOGIN = 401 for APIs, a redirect to /login for pages; or a status.
OK, PASS, LOGIN, LOGGED_OUT = "ok", "pass", "login", "logged out"  # LOGGED_OUT: 302 to plain /login
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@dataclass(frozen=True)
class Rule:
    path: str  # the request's path; {number}, {evidence_id} and {recording_id} are the fixture's
    expect: dict[str, Any]
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    upload: bool = False
    stream: bool = False  # an event stream: only the answer's status is read


def rule(path: str, ok: Any = OK, *, who: tuple[str, ...] = LOGGED_IN, others: Any = 403, anonymous: Any = LOGIN,
         **extra: Any) -> Rule:
    """``who`` get ``ok``; the other logged-in roles get ``others``; overrides per role as keywords."""
    expect = {role: ok if role in who else others for role in LOGGED_IN}
    expect["anonymous"] = anonymous
    expect.update({role: extra.pop(role) for role in ROLES if role in extra})
    return Rule(path, expect, **extra)


def public(path: str, ok: Any = OK, **extra: Any) -> Rule:
    return rule(path, ok, anonymous=ok, **extra)


def viewers(path: str, ok: Any = OK, hidden: Any = 404, **extra: Any) -> Rule:
    """Whoever may see the ticket: the centre that registered it, its unit and the units above; admin."""
    return rule(path, ok, sibling=hidden, **extra)


COMPLAINT = {"kind": "complaint", "hotline": "12301", "description": "矩阵测试：导游强迫购物",
             "complainant_phone": "13800000009", "complainant_name": "张三", "respondent_name": "某旅行社",
             "complaint_object": "旅行社及导游领队", "event_category": "强迫或变相强迫购物", "province": "广东省"}
AGENT_DESK = ("agent", "admin")
LEADS = ("lead", "admin")

RULES: dict[str, Rule] = {
    "GET /healthz": public("/healthz"),
    "GET /static": public("/static/desk.css"),
    "GET /login": public("/login"),
    "POST /login": public("/login", 403, form={"username": "agent1", "password": "x"}),  # no log-in CSRF cookie
    "POST /logout": rule("/logout", LOGGED_OUT, form={}),
    "GET /": rule("/"),
    "GET /events": rule("/events", stream=True),
    "GET /desk": rule("/desk", who=AGENT_DESK),
    "GET /api/desk/state": rule("/api/desk/state", who=AGENT_DESK),
    "POST /api/desk/state": rule("/api/desk/state", PASS, who=AGENT_DESK, json={"action": "?"}),
    "POST /api/desk/call/{op}": rule("/api/desk/call/hold", PASS, who=AGENT_DESK, json={}),
    "GET /api/desk/visits": rule("/api/desk/visits", who=AGENT_DESK),
    "POST /api/desk/visits/{id}": rule("/api/desk/visits/999999", PASS, who=AGENT_DESK, json={}),
    "GET /api/knowledge": rule("/api/knowledge?q=退款"),
    "GET /vendor/sip.js": public("/vendor/sip.js/index.js"),
    "GET /vendor/echarts": public("/vendor/echarts/echarts.min.js"),
    # The browser phone: only an agent's own session, and only once signed in with 网页电话 (409 before).
    "GET /api/desk/webphone": rule("/api/desk/webphone", PASS, who=AGENT_DESK),
    "GET /phone/ws": rule("/phone/ws", PASS, who=AGENT_DESK),
    "GET /unit": rule("/unit"),
    "GET /tickets": rule("/tickets"),
    "GET /tickets/{number}": viewers("/tickets/{number}"),  # a hidden ticket looks missing (#12 item 15)
    "GET /my": rule("/my"),
    # The message centre: every logged-in user, their own unit's messages only (tests/test_workflow_e2e.py).
    "GET /messages": rule("/messages"),
    "GET /api/messages": rule("/api/messages"),
    "POST /api/messages/read": rule("/api/messages/read", json={"ids": []}),
    "GET /reminders": rule("/reminders", who=LEADS),
    "GET /wallboard": rule("/wallboard", who=LEADS),
    "GET /api/wallboard": rule("/api/wallboard", who=LEADS),
    "POST /api/wallboard/spy": rule("/api/wallboard/spy", PASS, who=LEADS, json={}),
    "GET /api/wallboard/alerts": rule("/api/wallboard/alerts", who=LEADS),
    "POST /api/wallboard/alerts": rule("/api/wallboard/alerts", PASS, who=LEADS, json={"longest_wait_seconds": "x"}),
    "GET /report": rule("/report", who=LEADS),
    "GET /report/export": rule("/report/export?format=csv", who=LEADS),
    # The yearly evaluation (004 §7.1): the same people as the report.
    "GET /evaluation": rule("/evaluation", who=LEADS),
    "GET /evaluation/export": rule("/evaluation/export?format=xlsx", who=LEADS),
    "GET /recordings/{id}": viewers("/recordings/{recording_id}", hidden=403),
    # The administration area (agent_desk/admin*.py): the admin only.
    "GET /admin": rule("/admin", who=("admin",)),
    "GET /admin/audit": rule("/admin/audit", who=("admin",)),
    "GET /admin/audit/export": rule("/admin/audit/export?format=csv", who=("admin",)),
    "GET /admin/users": rule("/admin/users", who=("admin",)),
    "GET /admin/import/{kind}": rule("/admin/import/agents", who=("admin",)),
    "POST /admin/import/{kind}": rule("/admin/import/agents", PASS, who=("admin",), form={}),
    "GET /admin/import/{kind}/template": rule("/admin/import/agents/template?format=csv", who=("admin",)),
    "GET /admin/export/{kind}": rule("/admin/export/agents?format=csv", who=("admin",)),
    "POST /admin/users": rule("/admin/users", PASS, who=("admin",), form={}),
    "GET /admin/users/new": rule("/admin/users/new", who=("admin",)),
    "GET /admin/users/{id}": rule("/admin/users/1", who=("admin",)),
    "POST /admin/users/{id}": rule("/admin/users/999999", 404, who=("admin",), form={}),
    "POST /admin/users/{id}/active": rule("/admin/users/999999/active", 404, who=("admin",), form={}),
    "POST /admin/users/{id}/password": rule("/admin/users/999999/password", 404, who=("admin",), form={}),
    "POST /admin/users/{id}/lock": rule("/admin/users/999999/lock", 404, who=("admin",), form={}),
    # Everyone sets their own password (a new user is sent there first).
    "GET /account/password": rule("/account/password"),
    "POST /account/password": rule("/account/password", PASS, form={}),
    "GET /admin/unlock": rule("/admin/unlock", who=("admin",)),
    "POST /admin/unlock": rule("/admin/unlock", PASS, who=("admin",), form={}),
    # 电话分机 and 队列 (agent_desk/admin_telephony.py): the empty forms are refused (400) before anything is
    # written; a password is re-generated only for a phone that exists (this one does not: 404 past the check).
    "GET /admin/extensions": rule("/admin/extensions", who=("admin",)),
    "GET /admin/extensions/new": rule("/admin/extensions/new", who=("admin",)),
    "POST /admin/extensions": rule("/admin/extensions", PASS, who=("admin",), form={}),
    "GET /admin/extensions/{extension}": rule("/admin/extensions/8101", who=("admin",)),
    "POST /admin/extensions/{extension}": rule("/admin/extensions/8101", PASS, who=("admin",), form={}),
    "POST /admin/extensions/{extension}/password": rule("/admin/extensions/8999/password", 404, who=("admin",),
                                                        form={}),
    "GET /admin/queues": rule("/admin/queues", who=("admin",)),
    "GET /admin/queues/new": rule("/admin/queues/new", who=("admin",)),
    "POST /admin/queues": rule("/admin/queues", PASS, who=("admin",), form={}),
    "GET /admin/queues/{name}": rule("/admin/queues/12301-general", who=("admin",)),
    "POST /admin/queues/{name}": rule("/admin/queues/12301-general", PASS, who=("admin",), form={}),
    "POST /admin/telephony/apply": rule("/admin/telephony/apply", who=("admin",), form={}),
    # Content and policies (agent_desk/admin_content.py): menus, knowledge, phrases, policies, hours.
    "GET /admin/menus/listen": rule("/admin/menus/listen?text=人工服务请按0", who=("admin",)),
    "GET /admin/{section}": rule("/admin/knowledge", who=("admin",)),
    "GET /admin/{section}/edit": rule("/admin/phrases/edit?file=phrases.yaml", who=("admin",)),
    "POST /admin/{section}/edit": rule("/admin/phrases/edit", PASS, who=("admin",), form={}),  # no file: 400
    "GET /api/tickets/openapi.json": rule("/api/tickets/openapi.json"),
    "GET /api/tickets": rule("/api/tickets"),
    "GET /api/tickets/export": rule("/api/tickets/export?format=csv"),
    "GET /api/tickets/counters": rule("/api/tickets/counters"),
    "GET /api/tickets/closing-rates": rule("/api/tickets/closing-rates"),
    "GET /api/tickets/suggest-unit": rule("/api/tickets/suggest-unit?hotline=12301&province=广东省"),
    "GET /api/tickets/{number}": viewers("/api/tickets/{number}"),
    "GET /api/tickets/{number}/log": viewers("/api/tickets/{number}/log"),
    "GET /api/tickets/{number}/archive": viewers("/api/tickets/{number}/archive", PASS),  # 409 while open
    "GET /api/tickets/{number}/evidence": viewers("/api/tickets/{number}/evidence"),
    "GET /api/tickets/{number}/evidence/{evidence_id}": viewers("/api/tickets/{number}/evidence/{evidence_id}"),
    # Registration: the call centre's agents and leads, and the admin.
    "POST /api/tickets": rule("/api/tickets", who=("agent", "lead", "admin"), json=COMPLAINT),
    # 受理 (accept) is the handling unit's own step: only it (and the admin) get past the permission check.
    "POST /api/tickets/{number}/actions": viewers("/api/tickets/{number}/actions", 403, owner=PASS, admin=PASS,
                                                  json={"action": "受理", "inputs": {}}),
    # Risk overrides: leads and unit heads who see the ticket, and the admin.
    "POST /api/tickets/{number}/risk": viewers("/api/tickets/{number}/risk", 403, lead=PASS, admin=PASS,
                                               json={"level": "III"}),
    "POST /api/tickets/{number}/evidence": viewers("/api/tickets/{number}/evidence", upload=True),
}
LAST = ("POST /logout",)  # ends the role's session


def route_table(var: Path) -> set[str]:
    """METHOD + path pattern of every route of the desk application (HEAD goes with its GET)."""
    from agent_desk.app import build_app
    from core.settings import load_settings

    app = build_app(load_settings(var_dir=var), with_ami=False)
    keys = {f"{r.method} {r.resource.canonical}" for r in app.router.routes()}
    heads = {k for k in keys if k.startswith("HEAD ")}
    assert {h.replace("HEAD ", "GET ", 1) for h in heads} <= keys  # every HEAD is its GET's twin
    return keys - heads


def test_every_route_has_a_declared_rule(tmp_path):
    routes = route_table(tmp_path)  # a throwaway var folder: build_app needs settings, starts nothing
    assert sorted(routes - RULES.keys()) == [], "routes without a rule in RULES: declare who may use them"
    assert sorted(RULES.keys() - routes) == [], "rules for routes that no longer exist"
    for key, declared in RULES.items():
        assert set(declared.expect) == set(ROLES), key


# --- the real stack ------------------------------------------------------------------------------------

@dataclass
class World:
    number: str
    evidence_id: int
    recording_id: int
    clients: dict[str, aiohttp.ClientSession] = field(default_factory=dict)
    csrf: dict[str, str] = field(default_factory=dict)


async def login(base: str, username: str, password: str) -> tuple[aiohttp.ClientSession, str]:
    client = aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True))
    page = await (await client.get("/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    response = await client.post("/login", data={"username": username, "password": password, "_csrf": token},
                                 allow_redirects=False)
    assert response.status == 302, f"{username}: {response.status} {await response.text()}"
    home = await (await client.get(response.headers["Location"])).text()
    return client, re.search(r'name="csrf-token" content="([^"]*)"', home).group(1)


@pytest_asyncio.fixture(scope="module")
async def world(stack, db) -> AsyncIterator[World]:
    base, secrets_ = stack.settings.web_url, stack.settings.secrets
    clients: dict[str, aiohttp.ClientSession] = {
        "anonymous": aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True))}
    csrf = {"anonymous": ""}
    try:
        for role, username in USERS.items():
            password = secrets_["admin_password"] if username == "admin" else secrets_["demo_password"]
            clients[role], csrf[role] = await login(base, username, password)
        async with db.session() as session:
            gd = await session.scalar(select(Unit).where(Unit.code == "12301-GD"))
            agent = await session.scalar(select(User).where(User.username == "agent1"))
        # The ticket: registered by agent1 at the call centre, dispatched to Guangdong.
        response = await clients["agent"].post("/api/tickets", json={**COMPLAINT, "unit_id": gd.id},
                                               headers={"X-CSRF-Token": csrf["agent"]})
        assert response.status == 201, await response.text()
        ticket = await response.json()
        assert ticket["unit"]["id"] == gd.id
        number = ticket["number"]
        form = aiohttp.FormData()
        form.add_field("file", PNG, filename="发票.png", content_type="image/png")
        response = await clients["owner"].post(f"/api/tickets/{number}/evidence", data=form,
                                               headers={"X-CSRF-Token": csrf["owner"]})
        assert response.status == 201, await response.text()
        evidence_id = (await response.json())["id"]
        # The call the ticket came from, as the CTI and the recordings worker file it, taken by agent1.
        call_id = f"matrix-{uuid.uuid4().hex}"
        relative = f"matrix/{call_id}.wav"
        path = stack.settings.recordings_dir / relative
        with private_umask():  # as the recordings worker files it: nothing for other local users
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"RIFF" + secrets.token_bytes(64))
        async with db.transaction() as session:
            session.add(CallRecord(call_id=call_id, hotline="12301", caller_number=COMPLAINT["complainant_phone"],
                                   state=CallState.ENDED, agent_id=agent.id))
            await session.flush()
            ticket_id = (await session.execute(select(Ticket.id).where(Ticket.number == number))).scalar_one()
            session.add(TicketCall(ticket_id=ticket_id, call_id=call_id))
            recording = Recording(call_id=call_id, path=relative, format="wav", hotline="12301")
            session.add(recording)
            await session.flush()
            recording_id = recording.id
        yield World(number, evidence_id, recording_id, clients, csrf)
    finally:
        for client in clients.values():
            await client.close()


async def answer(world: World, role: str, method: str, declared: Rule) -> tuple[int, str]:
    """(status, Location) of one request of ``role``; no redirect is followed."""
    client = world.clients[role]
    path = declared.path.format(number=world.number, evidence_id=world.evidence_id,
                                recording_id=world.recording_id)
    headers = {"X-CSRF-Token": world.csrf[role]} if method != "GET" else {}
    kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
    if declared.json is not None:
        kwargs["json"] = declared.json
    elif declared.form is not None:
        kwargs["data"] = declared.form
    elif declared.upload:
        form = aiohttp.FormData()
        form.add_field("file", PNG, filename="凭证.png", content_type="image/png")
        kwargs["data"] = form
    async with client.request(method, path, **kwargs) as response:
        if not declared.stream:
            await response.read()
        return response.status, response.headers.get("Location", "")


def matches(expected: Any, status: int, location: str) -> bool:
    to_login = status in (301, 302, 303, 307) and location.startswith("/login")
    if expected == LOGIN:
        return status == 401 or to_login
    if expected == LOGGED_OUT:
        return status == 302 and location == "/login"
    if expected == OK:
        return 200 <= status < 400 and not to_login
    if expected == PASS:
        return status < 500 and status not in (401, 403, 404) and not to_login
    return status == expected


async def test_every_route_answers_every_role_as_declared(world):
    order = [k for k in RULES if k not in LAST] + list(LAST)
    wrong = []
    for key in order:
        method, _, _pattern = key.partition(" ")
        declared = RULES[key]
        for role in ROLES:
            status, location = await answer(world, role, method, declared)
            if not matches(declared.expect[role], status, location):
                wrong.append(f"{key} as {role}: got {status} {location}, declared {declared.expect[role]}")
    assert wrong == []
