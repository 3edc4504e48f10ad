"""The admin's content pages: IVR menus, knowledge base, service phrases, risk rules and deadline policies,
working hours and holidays, edited as the YAML they are, checked by the platform's own loaders before
anything is saved (core.content), and taken up by the IVR, desk and scheduler without a restart.

A refused change is answered 400 with the file, line and reason in Chinese and the text as submitted, so
nothing typed is lost; a saved one is published to the instance's content folder (never config/), written
to the admin audit log (before/after), and shown in the file's history (the knowledge base entry by entry).
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from agent_desk.auth import require_roles
from agent_desk.common import local_time, local_zone
from agent_desk.knowledge import knowledge_changes
from agent_desk.login_guard import source_address
from core import content, inputs
from core.models import Role, UnitLevel
from core.policy import PolicyError, PolicyErrors
from core.settings import CONFIG_DIR, ConfigError
from core.web import DB_KEY, SETTINGS_KEY, USER_KEY
from ivr.menu import load_all_menus
from ivr.prompts import PromptError, convert_to_asterisk_wav, human_recording, synthesized
from tickets import dispatch, outbox

_admin_only = require_roles(Role.ADMIN)
MAX_CHARS = content.MAX_BYTES  # characters: the byte limit is checked again by core.content

# The admin navigation's sections (admin_nav.html) and the files each one edits.
SECTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "menus": ("语音菜单", ("menus/*.yaml",), "每条热线的语音导航：提示音文字、按键与去向、满意度评价。"),
    "knowledge": ("知识库", ("knowledge.yaml",), "咨询的标准答复（004 §6.1.4、§6.2.3.1）：坐席工作台的知识库检索和语音导航的“咨询”菜单都用它。"),
    "phrases": ("服务用语", ("phrases.yaml",), "坐席工作台的服务用语面板（004 附录 B）。"),
    "policies": ("风险与时限规则", ("risk-rules.yaml", "deadlines/*.yaml"), "风险研判规则与办理时限。"),
    "units": ("处理单位", ("units.yaml", "notices.yaml"),
              "国家、省、市、县四级处理单位（units.yaml）及接收通知的联系方式（notices.yaml 的 contacts）。新增单位写在上级的 "
              "children 下；单位不能删除（工单和账号引用它们），停用请写 disabled: true，停用后不再派单给它及其下级。"),
    "hours": ("工作时间与节假日", ("calendar.yaml",),
              "值班时间与本中心的节假日调整（临时放假 holiday、调休上班 workday），优先于法定节假日日历；"
              "语音导航的下班提示和办理时限的工作日都按它计算。"),
}
SECTION_PATTERN = "|".join(SECTIONS)
LEVEL_LABELS = {UnitLevel.CALL_CENTRE: "呼叫中心", UnitLevel.NATIONAL: "国家级", UnitLevel.PROVINCE: "省级",
                UnitLevel.CITY: "市级", UnitLevel.COUNTY: "县级"}


def _section_of(relative: str) -> str:
    return next(name for name, (_t, patterns, _h) in SECTIONS.items()
                if any(fnmatch.fnmatchcase(relative, p) for p in patterns))


def _problems(exc: ConfigError) -> list[dict[str, object]]:
    errors = exc.errors if isinstance(exc, PolicyErrors) else [exc]
    return [{"text": str(e), "line": e.line if isinstance(e, PolicyError) else None} for e in errors]


def _menu_preview(relative: str) -> list[dict[str, str]]:
    """The prompts the (candidate) menu says, in the order a caller meets them."""
    hotline = relative.removeprefix("menus/").removesuffix(".yaml")
    menu = load_all_menus().get(hotline)
    return [{"name": p.name, "text": p.text, "audio": p.audio or ""} for p in menu.prompts()] if menu else []


def _preview(relative: str) -> Callable[[], list[dict[str, str]]] | None:
    return (lambda: _menu_preview(relative)) if relative.startswith("menus/") else None


def _file(section: str, raw: object) -> str:
    name = inputs.text(raw if raw is not None else "", "file", "文件", max_length=200, multiline=False)
    if not name:
        raise inputs.InputError("请选择要编辑的文件", "file")
    try:
        relative = content.checked_name(name)
    except ConfigError as exc:
        raise inputs.InputError(str(exc), "file", 404) from None
    if _section_of(relative) != section:
        raise inputs.InputError(f"不能编辑的文件：{name}", "file", 404)
    return relative


def _edit_context(request: web.Request, section: str, relative: str, text: str,
                  **extra: object) -> dict[str, object]:
    zone = local_zone(request)
    revisions = content.history(relative)
    changes = []
    if relative == "knowledge.yaml":
        shipped = (CONFIG_DIR / relative).read_text(encoding="utf-8")
        changes = [{"version": c.version, "at": local_time(c.at, zone), "user": c.user, "hotline": c.hotline,
                    "entry": c.entry, "question": c.question, "action": c.action, "fields": "、".join(c.fields)}
                   for c in knowledge_changes(revisions, shipped)]
    kind = content.kind_of(relative)
    return {"section": section, "section_title": SECTIONS[section][0], "file": relative,
            "title": kind.title if kind else relative, "text": text,
            "edited": content.is_edited(relative), "version": content.version(),
            "history": [{"version": r.version, "at": local_time(r.at, zone), "user": r.user,
                         "address": r.address or "—", "note": r.note or ("恢复默认" if r.text is None else "修改"),
                         "sha": r.sha} for r in reversed(revisions)],
            "changes": changes, "problems": [], "preview": None, "checked": False, "done": "", **extra}


@_admin_only
async def section_page(request: web.Request) -> web.Response:
    section = request.match_info["section"]
    title, patterns, help_text = SECTIONS[section]
    zone = local_zone(request)
    rows = []
    for relative in content.files():
        if not any(fnmatch.fnmatchcase(relative, p) for p in patterns):
            continue
        kind = content.kind_of(relative)
        last = (content.history(relative) or [None])[-1]
        rows.append({"file": relative, "href": f"/admin/{section}/edit?file={quote(relative)}",
                     "title": kind.title if kind else relative, "edited": content.is_edited(relative),
                     "last": f"{local_time(last.at, zone)} {last.user}" if last else "—"})
    query = inputs.text(request.query.get("q", ""), "q", "搜索", max_length=50, multiline=False)
    return aiohttp_jinja2.render_template("admin_content.html", request, {
        "section": section, "section_title": title, "help": help_text, "rows": rows, "version": content.version(),
        "units": _unit_tree(query) if section == "units" else None, "q": query})


def _unit_tree(query: str) -> list[dict[str, object]]:
    """The units, parents first and indented by level, with their notice contacts; ``query`` filters by name,
    code or place (each hit shown with the chain of units above it)."""
    specs = dispatch.load_unit_config().units
    contacts = outbox.unit_contacts()
    by_code = {s.code: s for s in specs}

    def chain(spec: dispatch.UnitSpec) -> list[str]:
        names = []
        while spec.parent_code:
            spec = by_code[spec.parent_code]
            names.append(spec.name)
        return names[::-1]

    rows = []
    for spec in specs:
        words = " ".join(filter(None, (spec.code, spec.name, spec.province, spec.city, spec.county)))
        if query and query not in words:
            continue
        contact = contacts.get(spec.code)
        rows.append({"code": spec.code, "name": spec.name, "level": LEVEL_LABELS.get(spec.level, spec.level),
                     "depth": len(chain(spec)), "above": " › ".join(chain(spec)), "disabled": spec.disabled,
                     "place": " ".join(filter(None, (spec.province, spec.city, spec.county))) or "—",
                     "phone": contact.phone if contact else "", "sms": contact.sms if contact else "",
                     "email": contact.email if contact else ""})
    return rows


@_admin_only
async def edit_page(request: web.Request) -> web.Response:
    section = request.match_info["section"]
    relative = _file(section, request.query.get("file"))
    context = _edit_context(request, section, relative, content.text_of(relative),
                            done=request.query.get("done", ""))
    if relative.startswith("menus/"):
        context["preview"] = _menu_preview(relative)
    return aiohttp_jinja2.render_template("admin_content_edit.html", request, context)


@_admin_only
async def edit_submit(request: web.Request) -> web.StreamResponse:
    section = request.match_info["section"]
    form = await request.post()
    relative = _file(section, form.get("file"))
    action = str(form.get("action", "save"))
    text: str | None = None
    if action != "revert":
        raw = form.get("text")
        if not isinstance(raw, str) or not raw.strip():
            raise inputs.InputError("请填写文件内容", "text")
        text = inputs.text(raw, "text", "文件内容", max_length=MAX_CHARS) + "\n"
    try:
        if action == "check":
            preview = content.validate(relative, text, _preview(relative))
            return aiohttp_jinja2.render_template("admin_content_edit.html", request, _edit_context(
                request, section, relative, text or "", preview=preview, checked=True))
        await content.publish(request.app[DB_KEY], request[USER_KEY], source_address(request), relative, text)
    except ConfigError as exc:
        response = aiohttp_jinja2.render_template("admin_content_edit.html", request, _edit_context(
            request, section, relative, text if text is not None else content.text_of(relative),
            problems=_problems(exc)))
        response.set_status(400)
        return response
    content.refresh()  # this desk's own caches (the IVR and scheduler follow within a second)
    raise web.HTTPSeeOther(f"/admin/{section}/edit?file={quote(relative)}&done=1")


MAX_PROMPT_CHARS = 500  # far above any menu prompt (a caller would not sit through it)
_voice = asyncio.Lock()  # one synthesis at a time: the TTS engine is one per process anyway


def _listen_file(cache: Path, text: str, recording: str) -> Path:
    if recording:
        source = human_recording(recording)
        if source is None:
            raise inputs.InputError(f"录音文件不存在：{recording}", "recording", 404)
        target = cache / f"rec-{source.stat().st_mtime_ns}-{source.name}"
        if not target.exists():
            convert_to_asterisk_wav(source, target)
        return target
    return synthesized(text, cache)


@_admin_only
async def listen(request: web.Request) -> web.StreamResponse:
    """A menu prompt as the caller will hear it (issue 17 item 1: a preview of the prompts): the IVR's own
    voice and 8 kHz conversion for a text (also one only checked, not yet saved), or the recorded file."""
    text = inputs.text(request.query.get("text", ""), "text", "提示音文字", max_length=MAX_PROMPT_CHARS,
                       multiline=False).strip()
    recording = inputs.text(request.query.get("recording", ""), "recording", "录音文件", max_length=200,
                            multiline=False).strip()
    if not text and not recording:
        raise inputs.InputError("请给出要试听的提示音文字", "text")
    cache = request.app[SETTINGS_KEY].var_dir / "prompt-preview"
    try:
        async with _voice:
            path = await asyncio.to_thread(_listen_file, cache, text, recording)
    except PromptError:
        raise inputs.InputError("语音合成失败，请稍后再试；来电中的提示音不受影响", "text", 503) from None
    return web.Response(body=path.read_bytes(), content_type="audio/wav",
                        headers={"Cache-Control": "private, max-age=3600"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/menus/listen", listen)
    app.router.add_get(f"/admin/{{section:{SECTION_PATTERN}}}", section_page)
    app.router.add_get(f"/admin/{{section:{SECTION_PATTERN}}}/edit", edit_page)
    app.router.add_post(f"/admin/{{section:{SECTION_PATTERN}}}/edit", edit_submit)
