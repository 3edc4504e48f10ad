"""Admin pages 电话分机 and 队列 (/admin/extensions, /admin/queues): list, search, create, edit, disable.

The rows are core.provisioning's (which audits every change); after each change the page asks the CTI to
apply it to every Asterisk node (command ``telephony_apply``, cti/provisioning.py), so it takes effect
without a restart. Should the CTI be away, the change is kept and the page says it is not live yet and
offers 立即生效 (POST /admin/telephony/apply). A generated phone password is shown once, on the page that
answers the creation or the re-generation, never in a URL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from agent_desk.admin import admin_only
from agent_desk.login_guard import source_address
from core import provisioning
from core.admin_audit import record
from core.provisioning import KIND_LABELS, STRATEGIES, ProvisioningError
from core.web import DB_KEY, REDIS_KEY, SETTINGS_KEY, USER_KEY
from cti import protocol

APPLY_SECONDS = 60.0  # rendering and reloading every node; a node's reloads take a second or two


async def apply_telephony(request: web.Request) -> str:
    """Have the CTI apply the database's phones and queues; '' when live, else why not (for people)."""
    try:
        await protocol.send(request.app[REDIS_KEY], "telephony_apply", {}, execution=APPLY_SECONDS)
    except (protocol.Refused, protocol.CtiUnavailable) as exc:
        return f"修改已保存，但尚未生效：{exc}。请稍后点「立即生效」。"
    return ""


def _notice(applied: str, done: str) -> str:
    return f"?done={quote(done)}" + (f"&problem={quote(applied)}" if applied else "")


def _flash(request: web.Request) -> dict[str, str]:
    return {"done": request.query.get("done", "")[:200], "problem": request.query.get("problem", "")[:300]}


def _form(post: Any, names: tuple[str, ...]) -> dict[str, str]:
    return {name: str(post.get(name, "")).strip() for name in names}


# --- phones --------------------------------------------------------------------------------------------

PHONE_FIELDS = ("extension", "label", "kind")


def _render_phone_form(request: web.Request, phone: dict[str, Any], error: ProvisioningError | None = None,
                       new: bool = True) -> web.Response:
    response = aiohttp_jinja2.render_template("admin_extension_form.html", request, {
        "phone": phone, "new": new, "kinds": list(KIND_LABELS.items()),
        "error": error.message if error else "", "error_field": error.field if error else ""})
    if error:
        response.set_status(error.status)
    return response


@admin_only
async def extensions_page(request: web.Request) -> web.Response:
    search = request.query.get("q", "")[:64]
    phones = await provisioning.list_phones(request.app[DB_KEY], search)
    return aiohttp_jinja2.render_template("admin_extensions.html", request, {
        "phones": [{**p.public(), "kind_label": KIND_LABELS.get(provisioning.PhoneKind(p.kind), p.kind)}
                   for p in phones], "q": search, **_flash(request)})


@admin_only
async def extension_new(request: web.Request) -> web.Response:
    return _render_phone_form(request, {"extension": "", "label": "", "kind": "agent", "enabled": True})


async def _password_page(request: web.Request, extension: str, password: str, applied: str,
                         created: bool) -> web.Response:
    return aiohttp_jinja2.render_template("admin_extension_password.html", request, {
        "extension": extension, "password": password, "problem": applied, "created": created})


@admin_only
async def extension_create(request: web.Request) -> web.Response:
    data = _form(await request.post(), PHONE_FIELDS)
    try:
        phone, password = await provisioning.create_phone(request.app[DB_KEY], data, request[USER_KEY],
                                                          source_address(request))
    except ProvisioningError as exc:
        return _render_phone_form(request, {**data, "enabled": True}, exc)
    return await _password_page(request, phone.extension, password, await apply_telephony(request), created=True)


async def _phone(request: web.Request) -> provisioning.PhoneView:
    extension = request.match_info["extension"]
    phone = await provisioning.get_phone(request.app[DB_KEY], extension)
    if phone is None:
        raise web.HTTPNotFound(text=f"分机 {extension} 不存在")
    return phone


@admin_only
async def extension_edit(request: web.Request) -> web.Response:
    return _render_phone_form(request, (await _phone(request)).public(), new=False)


@admin_only
async def extension_update(request: web.Request) -> web.Response:
    phone = await _phone(request)
    post = await request.post()
    data: dict[str, Any] = _form(post, ("label", "kind"))
    data["enabled"] = post.get("enabled") == "on"
    try:
        _before, after = await provisioning.update_phone(request.app[DB_KEY], phone.extension, data,
                                                         request[USER_KEY], source_address(request))
    except ProvisioningError as exc:
        return _render_phone_form(request, {**phone.public(), **data}, exc, new=False)
    done = f"分机 {after.extension} 已保存" + ("" if after.enabled else "（已停用，不能再注册）")
    raise web.HTTPSeeOther("/admin/extensions" + _notice(await apply_telephony(request), done))


@admin_only
async def extension_password(request: web.Request) -> web.Response:
    phone = await _phone(request)
    password = await provisioning.regenerate_password(request.app[DB_KEY], phone.extension, request[USER_KEY],
                                                      source_address(request))
    return await _password_page(request, phone.extension, password, await apply_telephony(request), created=False)


# --- queues --------------------------------------------------------------------------------------------

QUEUE_FIELDS = ("name", "hotline", "business", "strategy", "ring_seconds", "max_wait_seconds",
                "announce_every_seconds", "wrapup_seconds", "music_class")


def _render_queue_form(request: web.Request, queue: dict[str, Any], error: ProvisioningError | None = None,
                       new: bool = True) -> web.Response:
    response = aiohttp_jinja2.render_template("admin_queue_form.html", request, {
        "queue": queue, "new": new, "strategies": list(STRATEGIES.items()), "hotlines": provisioning.HOTLINES,
        "error": error.message if error else "", "error_field": error.field if error else ""})
    if error:
        response.set_status(error.status)
    return response


@admin_only
async def queues_page(request: web.Request) -> web.Response:
    search = request.query.get("q", "")[:64]
    queues = await provisioning.list_queues(request.app[DB_KEY], search)
    return aiohttp_jinja2.render_template("admin_queues.html", request, {
        "queues": [{**q.public(), "strategy_label": STRATEGIES.get(q.strategy, q.strategy)} for q in queues],
        "q": search, **_flash(request)})


@admin_only
async def queue_new(request: web.Request) -> web.Response:
    timings = request.app[SETTINGS_KEY].queues  # a new queue starts from the timings of config/hotline.toml
    return _render_queue_form(request, {
        "name": "", "hotline": "12301", "business": "", "strategy": "rrmemory", "ring_seconds": timings.ring_seconds,
        "max_wait_seconds": timings.max_wait_seconds, "announce_every_seconds": timings.announce_every_seconds,
        "wrapup_seconds": timings.wrapup_seconds, "music_class": "default", "enabled": True})


@admin_only
async def queue_create(request: web.Request) -> web.Response:
    data = _form(await request.post(), QUEUE_FIELDS)
    try:
        queue = await provisioning.create_queue(request.app[DB_KEY], data, request[USER_KEY],
                                                source_address(request))
    except ProvisioningError as exc:
        return _render_queue_form(request, {**data, "enabled": True}, exc)
    raise web.HTTPSeeOther("/admin/queues" + _notice(await apply_telephony(request), f"队列 {queue.name} 已新建"))


async def _queue(request: web.Request) -> provisioning.QueueView:
    name = request.match_info["name"]
    queue = await provisioning.get_queue(request.app[DB_KEY], name)
    if queue is None:
        raise web.HTTPNotFound(text=f"队列 {name} 不存在")
    return queue


@admin_only
async def queue_edit(request: web.Request) -> web.Response:
    return _render_queue_form(request, (await _queue(request)).public(), new=False)


@admin_only
async def queue_update(request: web.Request) -> web.Response:
    queue = await _queue(request)
    post = await request.post()
    data: dict[str, Any] = _form(post, QUEUE_FIELDS[1:])
    data["enabled"] = post.get("enabled") == "on"
    try:
        _before, after = await provisioning.update_queue(request.app[DB_KEY], queue.name, data, request[USER_KEY],
                                                         source_address(request))
    except ProvisioningError as exc:
        return _render_queue_form(request, {**queue.public(), **data}, exc, new=False)
    done = f"队列 {after.name} 已保存" + ("" if after.enabled else "（已停用：不再进新来电，已在排队的来电照常接听）")
    raise web.HTTPSeeOther("/admin/queues" + _notice(await apply_telephony(request), done))


@admin_only
async def apply_now(request: web.Request) -> web.Response:
    """立即生效: apply what the database holds (after a CTI outage); audited as a 生效 of both tables."""
    back = "/admin/queues" if (await request.post()).get("back") == "queues" else "/admin/extensions"
    problem = await apply_telephony(request)
    if not problem:
        await record(request.app[DB_KEY], request[USER_KEY], source_address(request), "extension", "*", "reload",
                     None, {"applied": True})
    raise web.HTTPSeeOther(back + _notice(problem, "" if problem else "已在所有节点生效"))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/extensions", extensions_page)
    app.router.add_get("/admin/extensions/new", extension_new)
    app.router.add_post("/admin/extensions", extension_create)
    app.router.add_get("/admin/extensions/{extension}", extension_edit)
    app.router.add_post("/admin/extensions/{extension}", extension_update)
    app.router.add_post("/admin/extensions/{extension}/password", extension_password)
    app.router.add_get("/admin/queues", queues_page)
    app.router.add_get("/admin/queues/new", queue_new)
    app.router.add_post("/admin/queues", queue_create)
    app.router.add_get("/admin/queues/{name}", queue_edit)
    app.router.add_post("/admin/queues/{name}", queue_update)
    app.router.add_post("/admin/telephony/apply", apply_now)
