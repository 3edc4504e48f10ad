"""Pieces shared by the desk's pages: commands to the CTI, role menus, template context, small helpers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from core.models import ROLE_LABELS, Role, User
from core.sheets import XLSX_TYPE, csv_bytes, xlsx_bytes
from core.web import REDIS_KEY, SETTINGS_KEY, USER_KEY, json_error
from cti import protocol

SESSION_KEY = "session"  # request[SESSION_KEY]: the desk session (agent_desk.auth.Session) of the logged-in user


@dataclass(frozen=True)
class MenuItem:
    href: str
    label: str
    icon: str  # a single character shown on the phone's bottom bar


_DESK = MenuItem("/desk", "坐席工作台", "☎")
_TICKETS = MenuItem("/tickets", "工单", "☰")
_WALLBOARD = MenuItem("/wallboard", "实时监控", "◉")
_SUPERVISE = MenuItem("/tickets?supervised=true", "督办工单", "★")
_REPORT = MenuItem("/report", "服务质量报表", "▤")
_EVALUATION = MenuItem("/evaluation", "服务质量评价", "✓")
_UNIT_HOME = MenuItem("/unit", "首页", "⌂")
_MY = MenuItem("/my", "我的", "☺")
_ADMIN = MenuItem("/admin", "系统管理", "⚙")  # the admin area's own navigation lists its pages (admin_nav.html)

MENUS: dict[Role, tuple[MenuItem, ...]] = {
    Role.AGENT: (_DESK, _TICKETS, _MY),
    Role.TEAM_LEAD: (_WALLBOARD, _TICKETS, _SUPERVISE, _REPORT, _EVALUATION, _MY),
    Role.UNIT_HANDLER: (_UNIT_HOME, _TICKETS, _MY),
    Role.UNIT_HEAD: (_UNIT_HOME, _TICKETS, _MY),
    Role.ADMIN: (_WALLBOARD, _TICKETS, _SUPERVISE, _REPORT, _EVALUATION, _ADMIN, _MY),
}


async def template_context(request: web.Request) -> dict[str, Any]:
    """aiohttp_jinja2 context processor: the user, their menu and the CSRF token on every page."""
    return page_context(request)


def page_context(request: web.Request) -> dict[str, Any]:
    """What base.html needs; also for pages rendered before the context processors ran (auth errors)."""
    user: User | None = request.get(USER_KEY)
    session = request.get(SESSION_KEY)
    return {
        "user": user,
        "role_label": ROLE_LABELS.get(user.role, "") if user else "",
        "menu": MENUS.get(user.role, ()) if user else (),
        "csrf": session.csrf if session else "",
        "path": request.path,
        "centre_name": request.app[SETTINGS_KEY].centre.name,
    }


def local_zone(request: web.Request) -> ZoneInfo:
    return ZoneInfo(request.app[SETTINGS_KEY].timezone)


def local_time(value: dt.datetime | None, zone: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return value.astimezone(zone).strftime(fmt) if value else "—"


async def cti_command(request: web.Request, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Have the CTI carry out a command (cti.protocol); its refusal or absence becomes a Chinese 4xx/503."""
    try:
        return await protocol.send(request.app[REDIS_KEY], name, args)
    except protocol.Refused as exc:
        raise json_error(exc.status, exc.message, exc.field) from None
    except protocol.CtiUnavailable as exc:
        raise json_error(503, str(exc)) from None


def sheet_response(request: web.Request, rows: list[list[Any]], title: str, stem: str) -> web.Response:
    """A download of ``rows`` as CSV or XLSX (``?format=``, CSV by default), formula-safe (core.sheets)."""
    fmt = request.query.get("format", "csv")
    if fmt not in ("csv", "xlsx"):
        raise json_error(400, "导出格式应为 csv 或 xlsx", "format")
    return download(csv_bytes(rows) if fmt == "csv" else xlsx_bytes(title, rows), fmt, stem)


def download(body: bytes, fmt: str, stem: str) -> web.Response:
    """A CSV or XLSX file to save as ``stem.fmt``."""
    return web.Response(body=body, content_type="text/csv" if fmt == "csv" else XLSX_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{stem}.{fmt}"'})
