"""用户与坐席 (admin only): list, search, create, edit, disable/enable, lock/unlock, reset the password.

The work is core.accounts' (checked fields, audit rows); this module turns forms into its calls and
its refusals into the form again with every problem. Side effects outside the database:
* an agent's changed skills reach a logged-in agent at once: the CTI (owner of agent state and the
  queue memberships) is told over the command channel (cti.protocol, action "skills");
* a locked, disabled or reset user's desk sessions end at once, and an agent among them is signed out
  of the queues by the CTI (QueueRemove on every node, state 签出/离线), audited as 签出队列.
A generated password is shown once, in the answer to the request that made it, and stored only hashed.
"""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from agent_desk import login_guard
from agent_desk.admin import admin_only
from agent_desk.admin_telephony import apply_telephony
from agent_desk.auth import end_sessions
from agent_desk.common import download
from core import accounts, admin_audit, bulk_import, content
from core.inputs import record_id, text
from core.models import ROLE_LABELS, Role, User
from core.web import DB_KEY, REDIS_KEY, SETTINGS_KEY, USER_KEY
from cti import protocol
from tickets.unit_import import UNITS

ACTIVE_FILTERS = {"": None, "1": True, "0": False}


def _user_id(request: web.Request) -> int:
    return record_id(request.match_info["id"], "id", "用户")


async def _user_or_404(request: web.Request) -> User:
    user = await accounts.get_user(request.app[DB_KEY], _user_id(request))
    if user is None:
        raise web.HTTPNotFound(text="用户不存在")
    return user


def _values(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """The user's fields from the form: one checkbox per queue with its penalty beside it."""
    values: dict[str, Any] = {name: str(form.get(name, "")) for name in accounts.FIELDS if name != "skills"}
    values["skills"] = "; ".join(f"{queue}:{str(form.get(f'penalty_{queue}', '') or '0').strip()}"
                                 for queue in form.getall("skill", []) if isinstance(queue, str))
    return values


async def _form(request: web.Request, user: User | None, values: dict[str, Any], problems: list[tuple[str, str]],
                status: int = 200, notice: str = "") -> web.Response:
    queues, extensions = await accounts.form_choices(request.app[DB_KEY], request.app[SETTINGS_KEY])
    skills, _ = accounts.parse_skills(str(values.get("skills", "")), queues)
    lock = await login_guard.account_lock(request.app[REDIS_KEY], user.username) if user else None
    response = aiohttp_jinja2.render_template("admin_user.html", request, {
        "edited": user, "v": values, "problems": problems, "notice": notice,
        "errors": {field for field, _reason in problems},
        "roles": [(role.value, label) for role, label in ROLE_LABELS.items()],
        "role_value": next((r.value for r in Role if values.get("role") in (r.value, ROLE_LABELS[r])), ""),
        "units": await accounts.unit_choices(request.app[DB_KEY]),
        "queues": [(queue, queue in skills, skills.get(queue, 0)) for queue in queues],
        "extensions": extensions,
        "locked": lock is not None, "is_self": user is not None and user.id == request[USER_KEY].id,
    })
    response.set_status(status)
    return response


@admin_only
async def list_page(request: web.Request) -> web.Response:
    q = {"text": text(request.query.get("text", ""), "text", "搜索内容", max_length=64, multiline=False),
         "role": request.query.get("role", ""), "active": request.query.get("active", "")}
    if q["role"] not in {"", *(r.value for r in Role)} or q["active"] not in ACTIVE_FILTERS:
        raise web.HTTPBadRequest(text="筛选条件无效")
    total, users = await accounts.search_users(request.app[DB_KEY], q["text"], q["role"], ACTIVE_FILTERS[q["active"]])
    return aiohttp_jinja2.render_template("admin_users.html", request, {
        "q": q, "total": total, "roles": list(ROLE_LABELS.items()),
        "users": [{"user": u, "role": ROLE_LABELS[u.role], **accounts.user_values(u)} for u in users]})


@admin_only
async def new_page(request: web.Request) -> web.Response:
    return await _form(request, None, {"role": Role.AGENT.value}, [])


def _created_page(request: web.Request, user: User, password: str, what: str) -> web.Response:
    return aiohttp_jinja2.render_template("admin_password_once.html", request, {
        "edited": user, "password": password, "what": what})


@admin_only
async def create(request: web.Request) -> web.Response:
    values = _values(await request.post())
    actor, address = request[USER_KEY], login_guard.source_address(request)
    try:
        user, password = await accounts.create_user(request.app[DB_KEY], request.app[SETTINGS_KEY], actor, address,
                                                    values)
    except accounts.AccountError as exc:
        return await _form(request, None, values, exc.problems, 400)
    return _created_page(request, user, password, "已创建用户")


@admin_only
async def edit_page(request: web.Request) -> web.Response:
    user = await _user_or_404(request)
    return await _form(request, user, accounts.user_values(user), [], notice=request.query.get("notice", ""))


async def _tell_cti(request: web.Request, agent_id: int, action: str) -> str:
    """Have the CTI apply the change to a logged-in agent; what to tell the admin."""
    try:
        data = await protocol.send(request.app[REDIS_KEY], "agent_state", {"agent_id": agent_id, "action": action})
    except (protocol.Refused, protocol.CtiUnavailable) as exc:
        return f"已保存；电话系统未能立即应用（{exc}），坐席下次签入时生效"
    return "已保存，并已对在线坐席立即生效" if data.get("applied") else "已保存"


async def _sign_out(request: web.Request, user: User) -> str:
    """A locked, disabled or reset agent leaves the queues at once (the CTI: QueueRemove on every node, state
    签出), audited; what to tell the admin ('' when they were not signed in)."""
    if user.role != Role.AGENT:
        return ""
    try:
        data = await protocol.send(request.app[REDIS_KEY], "agent_state", {"agent_id": user.id, "action": "signout"})
    except (protocol.Refused, protocol.CtiUnavailable) as exc:
        return f"；电话系统未能立即签出该坐席（{exc}）"
    if not data.get("applied"):
        return ""
    await admin_audit.record(request.app[DB_KEY], request[USER_KEY], login_guard.source_address(request), "user",
                             user.username, "signout", {"phone": data.get("phone"), "queues": data.get("queues")},
                             {"phone": None, "queues": []})
    return f"，已从队列签出（分机 {data.get('phone')}）"


@admin_only
async def update(request: web.Request) -> web.StreamResponse:
    user = await _user_or_404(request)
    values = _values(await request.post())
    try:
        user, before, after = await accounts.update_user(
            request.app[DB_KEY], request.app[SETTINGS_KEY], request[USER_KEY], login_guard.source_address(request),
            user.id, values)
    except accounts.AccountError as exc:
        return await _form(request, user, values, exc.problems, 400)
    notice = "已保存" if before != after else "没有修改"
    if before["skills"] != after["skills"] or before["role"] != after["role"]:
        notice = await _tell_cti(request, user.id, "skills")
    raise web.HTTPSeeOther(f"/admin/users/{user.id}?notice={notice}")


@admin_only
async def set_active(request: web.Request) -> web.StreamResponse:
    user = await _user_or_404(request)
    active = str((await request.post()).get("active", "")) == "1"
    try:
        await accounts.set_active(request.app[DB_KEY], request[USER_KEY], login_guard.source_address(request),
                                  user.id, active)
    except accounts.AccountError as exc:
        return await _form(request, user, accounts.user_values(user), exc.problems, 400)
    notice = "已启用" if active else "已停用，其登录已全部退出"
    if not active:
        await end_sessions(request.app, user.id)
        notice += await _sign_out(request, user)
    raise web.HTTPSeeOther(f"/admin/users/{user.id}?notice={notice}")


@admin_only
async def reset_password(request: web.Request) -> web.Response:
    user = await _user_or_404(request)
    user, password = await accounts.reset_password(request.app[DB_KEY], request.app[SETTINGS_KEY], request[USER_KEY],
                                                   login_guard.source_address(request), user.id)
    await end_sessions(request.app, user.id)
    await _sign_out(request, user)
    return _created_page(request, user, password, "已重置密码")


@admin_only
async def lock(request: web.Request) -> web.StreamResponse:
    user = await _user_or_404(request)
    locking = str((await request.post()).get("lock", "")) == "1"
    actor, address = request[USER_KEY], login_guard.source_address(request)
    if locking:
        if user.id == actor.id:
            return await _form(request, user, accounts.user_values(user), [("lock", "不能锁定自己的账号")], 400)
        await login_guard.lock_account(request.app, user.username, actor.username, address)
        await end_sessions(request.app, user.id)
    else:
        await login_guard.unlock(request.app[REDIS_KEY], request.app[DB_KEY], "account", user.username,
                                 actor.username, address)
    await admin_audit.record(request.app[DB_KEY], actor, address, "user", user.username,
                             "lock" if locking else "unlock", {"locked": not locking}, {"locked": locking})
    notice = "已锁定" + await _sign_out(request, user) if locking else "已解锁"
    raise web.HTTPSeeOther(f"/admin/users/{user.id}?notice={notice}")


# --- bulk import and export (core.bulk_import) -------------------------------------------------------

IMPORT_KINDS: dict[str, bulk_import.Kind] = {kind.name: kind for kind in (bulk_import.AGENTS, bulk_import.PHONES,
                                                                           UNITS)}
# Where each kind's page lives (the import page links back, and the navigation marks it).
KIND_PAGES = {"agents": "/admin/users", "extensions": "/admin/extensions", "units": "/admin/units"}


def _kind(request: web.Request) -> bulk_import.Kind:
    kind = IMPORT_KINDS.get(request.match_info.get("kind", ""))
    if kind is None:
        raise web.HTTPNotFound(text="没有这种导入")
    return kind


def _import_page(request: web.Request, kind: bulk_import.Kind, report: bulk_import.Report | None = None,
                 mode: str = "", problem: str = "", status: int = 200) -> web.Response:
    response = aiohttp_jinja2.render_template("admin_import.html", request, {
        "kind": kind, "report": report, "mode": mode, "problem": problem, "max_rows": bulk_import.MAX_ROWS,
        "max_kb": request.app[SETTINGS_KEY].web.max_body_kb, "back": KIND_PAGES[kind.name],
        "nav_path": KIND_PAGES[kind.name]})
    response.set_status(status)
    return response


@admin_only
async def import_page(request: web.Request) -> web.Response:
    return _import_page(request, _kind(request))


@admin_only
async def import_submit(request: web.Request) -> web.Response:
    kind = _kind(request)
    form = await request.post()
    upload, mode = form.get("file"), str(form.get("mode", "dry"))
    if not isinstance(upload, web.FileField) or mode not in ("dry", "import"):
        return _import_page(request, kind, problem="请选择要导入的文件（.xlsx 或 .csv）", status=400)
    data, filename = upload.file.read(), upload.filename or ""
    db, settings = request.app[DB_KEY], request.app[SETTINGS_KEY]
    try:
        if mode == "dry":
            report = await bulk_import.dry_run(db, settings, kind, data, filename)
        else:
            report = await bulk_import.run_import(db, settings, kind, data, filename, request[USER_KEY],
                                                  login_guard.source_address(request))
    except bulk_import.FileError as exc:
        return _import_page(request, kind, problem=str(exc), status=400)
    applied = ""
    if report.written and kind is bulk_import.PHONES:
        applied = await apply_telephony(request)  # the new phones can register at once, on every node
    elif report.written and kind is UNITS:
        content.refresh()  # this desk's own caches (dispatch); the other services follow the version file
    return _import_page(request, kind, report, mode, problem=applied, status=400 if report.problems else 200)


def _format(request: web.Request) -> str:
    fmt = request.query.get("format", "xlsx")
    if fmt not in ("csv", "xlsx"):
        raise web.HTTPBadRequest(text="格式应为 csv 或 xlsx")
    return fmt


@admin_only
async def import_template(request: web.Request) -> web.Response:
    kind, fmt = _kind(request), _format(request)
    return download(bulk_import.template(kind, fmt), fmt, f"{kind.name}-template")


@admin_only
async def export(request: web.Request) -> web.Response:
    kind, fmt = _kind(request), _format(request)
    return download(await bulk_import.export(request.app[DB_KEY], kind, fmt), fmt, f"{kind.name}-export")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/import/{kind}", import_page)
    app.router.add_post("/admin/import/{kind}", import_submit)
    app.router.add_get("/admin/import/{kind}/template", import_template)
    app.router.add_get("/admin/export/{kind}", export)
    app.router.add_get("/admin/users", list_page)
    app.router.add_post("/admin/users", create)
    app.router.add_get("/admin/users/new", new_page)
    app.router.add_get("/admin/users/{id}", edit_page)
    app.router.add_post("/admin/users/{id}", update)
    app.router.add_post("/admin/users/{id}/active", set_active)
    app.router.add_post("/admin/users/{id}/password", reset_password)
    app.router.add_post("/admin/users/{id}/lock", lock)
