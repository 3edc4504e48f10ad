"""The web desk application: wiring of routes, auth, templates and live events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from agent_desk import (
    account,
    admin,
    admin_content,
    admin_telephony,
    admin_users,
    alerts,
    auth,
    desk,
    lead,
    live,
    login_guard,
    messages,
    playback,
    units,
    webphone,
)
from agent_desk.common import template_context
from agent_desk.unavailable import redis_unavailable
from core import content
from core.db import Database
from core.logs import setup_logging
from core.metrics import http_metrics
from core.redis import connect as redis_connect
from core.settings import REPO_ROOT, Settings
from core.vocabulary import js_vocabulary
from core.web import DB_KEY, ERROR_PAGE_KEY, REDIS_KEY, SETTINGS_KEY, input_errors, json_error
from tickets import return_visits
from tickets.api import evidence_cap, evidence_too_large
from tickets.api import routes as ticket_routes
from tickets.rules import check_rules

HERE = Path(__file__).resolve().parent


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@web.middleware
async def security_headers(request: web.Request, handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.content_type == "text/html":
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'")
        response.headers.setdefault("Cache-Control", "no-store")
    return response


async def too_large(request: web.Request, limit: int, upload: bool = False) -> web.StreamResponse:
    """413 in Chinese: JSON for API calls, the error page for forms. The connection is closed
    rather than the rest of an oversized body read."""
    if upload:
        raise _closing(evidence_too_large(evidence_cap(request.app), request.content_length or 0))
    message = f"提交的内容过大（上限 {limit // 1024} KB），请精简后重试"
    if auth.is_api(request) or request.content_type == "application/json":
        raise _closing(json_error(413, message, max_size=limit))
    # This middleware runs outside aiohttp_jinja2's context processors: give the page its context.
    context = {**await template_context(request), "message": message, "status": 413}
    response = aiohttp_jinja2.render_template("error.html", request, context)
    response.set_status(413)
    return _closing(response)


def _closing(response: web.Response) -> web.Response:
    response.force_close()
    return response


@web.middleware
async def content_refresh(request: web.Request, handler) -> web.StreamResponse:
    """A policy an admin saved (core.content: menus, knowledge, phrases, rules, deadlines, calendar) counts from
    the next request on: one small file read per request drops the cached copies when the version moved."""
    content.refresh()
    return await handler(request)


@web.middleware
async def body_limits(request: web.Request, handler) -> web.StreamResponse:
    """Per-route request body limits, checked on Content-Length before anything is read.

    Forms and JSON (log-in included) get ``[web] max_body_kb`` (also the app's client_max_size, which
    stops a chunked body that has no Content-Length); evidence uploads stream to disk with their own
    cap (tickets/api.py), so they are let through up to that cap plus room for the multipart framing."""
    upload = getattr(request.match_info.handler, "streams_upload", False)
    limit = evidence_cap(request.app) + 64 * 1024 if upload else body_limit(request.app)
    if request.content_length is not None and request.content_length > limit:
        return await too_large(request, limit, upload)
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge as exc:
        if exc.content_type == "application/json":  # already explained (the evidence cap)
            raise
        return await too_large(request, limit)


def body_limit(app: web.Application) -> int:
    return int(app[SETTINGS_KEY].web.max_body_kb) * 1024


async def _close(app: web.Application) -> None:
    await app[DB_KEY].close()
    await app[REDIS_KEY].aclose()


def build_app(settings: Settings, with_ami: bool | None = None) -> web.Application:
    """The desk application. It has no AMI connection (the CTI owns call control, cti.protocol);
    ``with_ami`` is accepted and ignored so that callers written before that still build it."""
    # A broken rule profile stops the start-up with the key at fault (config/rules.yaml or [tickets] rules_file).
    check_rules(settings.tickets.rules_file)
    content.use(settings.var_dir)  # policies edited in the admin area (core.content) over config/
    return_visits.configure(settings)  # likewise a wrong [return_visits]
    app = web.Application(client_max_size=int(settings.web.max_body_kb) * 1024,
                          middlewares=[http_metrics, security_headers, redis_unavailable, content_refresh, body_limits,
                                       input_errors, auth.auth_middleware])
    app[SETTINGS_KEY] = settings
    app[ERROR_PAGE_KEY] = auth.forbidden_page
    app[DB_KEY] = Database(settings.database_url)
    app[REDIS_KEY] = redis_connect(settings, "agent_desk")
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=jinja2.select_autoescape(default=True),
        context_processors=[template_context], undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v: "—" if v is None else f"{v * 100:.1f}%"
    env.filters["secs"] = lambda v: "—" if v is None else f"{v:.1f} 秒"
    env.globals["vocabulary"] = js_vocabulary()
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static", HERE / "static")
    app.router.add_static("/vendor/sip.js", REPO_ROOT / "node_modules" / "sip.js" / "lib")
    app.router.add_static("/vendor/echarts", REPO_ROOT / "node_modules" / "echarts" / "dist")
    for module in (auth, account, live, desk, units, lead, playback, admin, admin_content, admin_telephony, admin_users,
                   webphone, messages):
        module.add_routes(app)
    app[auth.LOGOUT_HOOKS].append(webphone.end_session)  # the browser phone's account ends with the session
    app.router.add_routes(ticket_routes)
    app.on_startup.append(login_guard.warm_up)
    alerts.setup(app, settings, lead.alert_data)  # [alerts] checked now; the watcher runs with the app
    app.on_cleanup.append(_close)
    return app


async def main(settings: Settings, stop: asyncio.Event) -> None:
    setup_logging("agent_desk")
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, settings.web.host, settings.web.port)
    await site.start()
    await stop.wait()
    await runner.cleanup()
