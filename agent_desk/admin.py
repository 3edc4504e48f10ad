"""The admin's pages: 账号解锁 — log-in locks of accounts and source addresses, lifted with one button.

Each unlock is audited (agent_desk/login_guard.py); the page also shows the latest audit rows.
"""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from agent_desk import login_guard
from agent_desk.auth import forbidden_page, require_roles
from agent_desk.common import local_time, local_zone
from core.models import Role
from core.web import DB_KEY, REDIS_KEY, USER_KEY

AUDIT_ROWS = 50
ACTION_LABELS = {"lock": "锁定", "unlock": "解锁"}

_admin_only = require_roles(Role.ADMIN)


@_admin_only
async def unlock_page(request: web.Request) -> web.Response:
    zone = local_zone(request)
    locks = await login_guard.list_locks(request.app[REDIS_KEY])
    rows = await login_guard.recent_audit(request.app[DB_KEY], AUDIT_ROWS)
    return aiohttp_jinja2.render_template("admin_unlock.html", request, {
        "locks": [{"kind": lock.kind, "kind_label": login_guard.KIND_LABELS[lock.kind], "subject": lock.subject,
                   "failures": lock.failures, "since": local_time(lock.since, zone),
                   "minutes_left": lock.minutes_left} for lock in locks],
        "audit": [{"at": local_time(row.at, zone), "action": ACTION_LABELS.get(row.action, row.action),
                   "kind": login_guard.KIND_LABELS.get(row.subject_kind, row.subject_kind),
                   "subject": row.subject, "actor": row.actor or "系统（自动）", "address": row.address or "—",
                   "detail": row.detail} for row in rows],
        "done": request.query.get("done", ""),
    })


@_admin_only
async def unlock_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    kind, subject = str(form.get("kind", "")), str(form.get("subject", "")).strip()
    if kind not in login_guard.KINDS or not subject:
        return forbidden_page(request, "请选择要解锁的账号或来源地址", 400)
    user = request[USER_KEY]
    await login_guard.unlock(request.app[REDIS_KEY], request.app[DB_KEY], kind, subject, user.username,
                             login_guard.source_address(request))
    raise web.HTTPSeeOther("/admin/unlock?done=1")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/unlock", unlock_page)
    app.router.add_post("/admin/unlock", unlock_submit)
