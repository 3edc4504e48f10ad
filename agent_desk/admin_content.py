"""The admin's 内容与策略 pages: IVR menus, knowledge base, service phrases, risk rules, deadline policies and
the holiday calendar, edited as the YAML they are, checked by the platform's own loaders before anything
is saved (core.content), and taken up by the IVR, desk and scheduler without a restart.

A refused change is answered 400 with the file, line and reason in Chinese and the text as submitted, so
nothing typed is lost; a saved one is published to the instance's content folder (never config/) with
who, from where and when, and shown in the file's history (for the knowledge base, entry by entry).
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp_jinja2
from aiohttp import web

from agent_desk.auth import require_roles
from agent_desk.common import local_time, local_zone
from agent_desk.knowledge import knowledge_changes
from agent_desk.login_guard import source_address
from core import content, inputs
from core.models import Role
from core.policy import PolicyError, PolicyErrors
from core.settings import CONFIG_DIR, ConfigError
from core.web import USER_KEY
from ivr.menu import load_all_menus

_admin_only = require_roles(Role.ADMIN)
MAX_CHARS = content.MAX_BYTES  # characters: the byte limit is checked again by core.content


def _problems(exc: ConfigError) -> list[dict[str, object]]:
    errors = exc.errors if isinstance(exc, PolicyErrors) else [exc]
    return [{"text": str(e), "line": getattr(e, "line", None) if isinstance(e, PolicyError) else None}
            for e in errors]


def _menu_preview(relative: str) -> list[dict[str, str]]:
    """The prompts the (candidate) menu says, in the order a caller meets them."""
    hotline = relative.removeprefix("menus/").removesuffix(".yaml")
    menu = load_all_menus().get(hotline)
    return [{"name": p.name, "text": p.text, "audio": p.audio or ""} for p in menu.prompts()] if menu else []


def _preview(relative: str) -> Callable[[], list[dict[str, str]]] | None:
    return (lambda: _menu_preview(relative)) if relative.startswith("menus/") else None


def _file(request: web.Request, raw: object) -> str:
    name = inputs.text(raw if raw is not None else "", "file", "文件", max_length=200, multiline=False)
    try:
        return content.checked_name(name)
    except ConfigError as exc:
        raise inputs.InputError(str(exc), "file", 404) from None


def _edit_context(request: web.Request, relative: str, text: str, **extra: object) -> dict[str, object]:
    zone = local_zone(request)
    revisions = content.history(relative)
    changes = []
    if relative == "knowledge.yaml":
        shipped = (CONFIG_DIR / relative).read_text(encoding="utf-8")
        changes = [{"version": c.version, "at": local_time(c.at, zone), "user": c.user, "hotline": c.hotline,
                    "entry": c.entry, "question": c.question, "action": c.action, "fields": "、".join(c.fields)}
                   for c in knowledge_changes(revisions, shipped)]
    kind = content.kind_of(relative)
    return {"file": relative, "title": kind.title if kind else relative, "text": text,
            "edited": content.is_edited(relative), "version": content.version(),
            "history": [{"version": r.version, "at": local_time(r.at, zone), "user": r.user,
                         "address": r.address or "—", "note": r.note or ("恢复默认" if r.text is None else "修改"),
                         "sha": r.sha} for r in reversed(revisions)],
            "changes": changes, "problems": [], "preview": None, "checked": False, "done": "", **extra}


@_admin_only
async def content_list(request: web.Request) -> web.Response:
    zone = local_zone(request)
    rows = []
    for relative in content.files():
        kind = content.kind_of(relative)
        last = (content.history(relative) or [None])[-1]
        rows.append({"file": relative, "title": kind.title if kind else relative, "edited": content.is_edited(relative),
                     "last": f"{local_time(last.at, zone)} {last.user}" if last else "—"})
    return aiohttp_jinja2.render_template("admin_content.html", request,
                                          {"rows": rows, "version": content.version()})


@_admin_only
async def content_edit_page(request: web.Request) -> web.Response:
    relative = _file(request, request.query.get("file"))
    context = _edit_context(request, relative, content.text_of(relative), done=request.query.get("done", ""))
    if relative.startswith("menus/"):
        context["preview"] = _menu_preview(relative)
    return aiohttp_jinja2.render_template("admin_content_edit.html", request, context)


@_admin_only
async def content_edit_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    relative = _file(request, form.get("file"))
    action = str(form.get("action", "save"))
    if action == "revert":
        text = None
    else:
        raw = form.get("text")
        if not isinstance(raw, str):
            raise inputs.InputError("请填写文件内容", "text")
        text = inputs.text(raw, "text", "文件内容", max_length=MAX_CHARS) + "\n"
    try:
        if action == "check":
            preview = content.validate(relative, text, _preview(relative))
            return aiohttp_jinja2.render_template("admin_content_edit.html", request, _edit_context(
                request, relative, text or "", preview=preview, checked=True))
        user = request[USER_KEY]
        content.save(relative, text, user.username, source_address(request),
                     note="恢复为随平台发布的版本" if text is None else "")
    except ConfigError as exc:
        response = aiohttp_jinja2.render_template("admin_content_edit.html", request, _edit_context(
            request, relative, text if text is not None else content.text_of(relative), problems=_problems(exc)))
        response.set_status(400)
        return response
    content.refresh()  # this desk's own caches (the IVR and scheduler follow within a second)
    raise web.HTTPSeeOther(f"/admin/content/edit?file={relative}&done=1")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/content", content_list)
    app.router.add_get("/admin/content/edit", content_edit_page)
    app.router.add_post("/admin/content/edit", content_edit_submit)
