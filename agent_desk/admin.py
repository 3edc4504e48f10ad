"""The administration area (admin role only), route prefix /admin: 概览, 审计日志 and 账号解锁.

Every admin page extends templates/admin_base.html, which puts the one shared navigation
(templates/admin_nav.html) beside it; a new section adds its line there and its routes in a module of its
own (agent_desk/admin_<section>.py, listed in pyproject.toml's "no SQL, no AMI" handler contract, with
``admin_only`` from here). Changes are audited through core.admin_audit.record_change.

账号解锁: log-in locks of accounts and source addresses, lifted with one button; each unlock is audited in
security_audit (agent_desk/login_guard.py) and in the admin audit log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from agent_desk import login_guard
from agent_desk.auth import forbidden_page, require_roles
from agent_desk.common import local_time, local_zone, sheet_response
from core import admin_audit
from core.inputs import iso_date, text
from core.models import Role
from core.web import DB_KEY, REDIS_KEY, USER_KEY

AUDIT_ROWS = 50
AUDIT_PAGE_ROWS = 200
ACTION_LABELS = {"lock": "锁定", "unlock": "解锁"}
AUDIT_FILTERS = ("actor", "entity", "action", "text", "from", "to")

admin_only: Callable = require_roles(Role.ADMIN)


def _row_view(row: admin_audit.AdminChange, zone: Any) -> dict[str, Any]:
    before, after = row.before or {}, row.after or {}
    return {"at": local_time(row.at, zone), "actor": row.actor, "address": row.address or "—",
            "entity": admin_audit.ENTITY_LABELS.get(row.entity, row.entity), "entity_id": row.entity_id,
            "action": admin_audit.ACTION_LABELS.get(row.action, row.action),
            "changes": [{"field": f, "before": before.get(f, "—"), "after": after.get(f, "—")}
                        for f in admin_audit.changed_fields(row)]}


@admin_only
async def home_page(request: web.Request) -> web.Response:
    _total, rows = await admin_audit.search(request.app[DB_KEY], admin_audit.AuditQuery(), limit=10)
    zone = local_zone(request)
    return aiohttp_jinja2.render_template("admin_home.html", request, {
        "recent": [_row_view(row, zone) for row in rows]})


def _audit_query(request: web.Request) -> tuple[admin_audit.AuditQuery, dict[str, str]]:
    """The audit search from the query string (dates are local days, ``to`` included); bad input is a 400."""
    q = {name: text(request.query.get(name, ""), name, label, max_length=64, multiline=False)
         for name, label in zip(AUDIT_FILTERS, ("操作人", "对象类型", "操作", "对象或内容", "开始日期", "结束日期"),
                                strict=True)}
    zone = local_zone(request)

    def start_of(day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(), zone)

    since = start_of(iso_date(q["from"], "from", "开始日期")) if q["from"] else None
    until = start_of(iso_date(q["to"], "to", "结束日期") + dt.timedelta(days=1)) if q["to"] else None
    return admin_audit.AuditQuery(actor=q["actor"], entity=q["entity"], action=q["action"], text=q["text"],
                                  since=since, until=until), q


@admin_only
async def audit_page(request: web.Request) -> web.Response:
    query, q = _audit_query(request)
    total, rows = await admin_audit.search(request.app[DB_KEY], query, limit=AUDIT_PAGE_ROWS)
    zone = local_zone(request)
    return aiohttp_jinja2.render_template("admin_audit.html", request, {
        "q": q, "total": total, "rows": [_row_view(row, zone) for row in rows],
        "query": urlencode({k: v for k, v in q.items() if v}),
        "entities": sorted(admin_audit.ENTITY_LABELS.items(), key=lambda kv: kv[1]),
        "actions": list(admin_audit.ACTION_LABELS.items())})


@admin_only
async def audit_export(request: web.Request) -> web.Response:
    query, _q = _audit_query(request)
    if request.query.get("format", "csv") not in ("csv", "xlsx"):
        return forbidden_page(request, "导出格式应为 csv 或 xlsx", 400, "format")
    _total, rows = await admin_audit.search(request.app[DB_KEY], query, limit=None)
    zone = local_zone(request)
    table = admin_audit.export_rows(rows, lambda at: local_time(at, zone))
    return sheet_response(request, table, "审计日志", f"admin-audit-{dt.datetime.now(zone):%Y%m%d-%H%M%S}")


@admin_only
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


@admin_only
async def unlock_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    kind, subject = str(form.get("kind", "")), str(form.get("subject", "")).strip()
    if kind not in login_guard.KINDS or not subject:
        return forbidden_page(request, "请选择要解锁的账号或来源地址", 400)
    user, address = request[USER_KEY], login_guard.source_address(request)
    if await login_guard.unlock(request.app[REDIS_KEY], request.app[DB_KEY], kind, subject, user.username, address):
        await admin_audit.record(request.app[DB_KEY], user, address, "login_lock", f"{kind}:{subject}", "unlock",
                                 {"locked": True}, {"locked": False})
    raise web.HTTPSeeOther("/admin/unlock?done=1")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin", home_page)
    app.router.add_get("/admin/audit", audit_page)
    app.router.add_get("/admin/audit/export", audit_export)
    app.router.add_get("/admin/unlock", unlock_page)
    app.router.add_post("/admin/unlock", unlock_submit)
