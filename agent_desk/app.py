"""The web desk application: wiring of routes, auth, templates and live events."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp_jinja2
import jinja2
import redis.asyncio as aioredis
from aiohttp import web

from agent_desk import admin, auth, desk, lead, live, login_guard, playback, units
from agent_desk.common import AMI_KEY, template_context
from core.ami import AmiClient
from core.db import Database
from core.logs import setup_logging
from core.settings import Settings
from core.web import DB_KEY, REDIS_KEY, SETTINGS_KEY
from tickets.api import routes as ticket_routes

HERE = Path(__file__).resolve().parent
AMI_CONNECT_KEY = web.AppKey("ami_connect", asyncio.Task)


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


async def _start_ami(app: web.Application) -> None:
    """Connect to AMI in the background: the desk serves pages while Asterisk is still starting."""
    client = AmiClient(app[SETTINGS_KEY], events="off")
    app[AMI_KEY] = client

    async def connect() -> None:
        with contextlib.suppress(Exception):
            await client.connect(timeout=None)

    app[AMI_CONNECT_KEY] = asyncio.create_task(connect())


async def _close(app: web.Application) -> None:
    if AMI_KEY in app:
        await app[AMI_KEY].close()
    await app[DB_KEY].close()
    await app[REDIS_KEY].aclose()


def build_app(settings: Settings, with_ami: bool = True) -> web.Application:
    app = web.Application(client_max_size=20 * 1024 * 1024,
                          middlewares=[security_headers, auth.auth_middleware])
    app[SETTINGS_KEY] = settings
    app[DB_KEY] = Database(settings.database_url)
    app[REDIS_KEY] = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=jinja2.select_autoescape(default=True),
        context_processors=[template_context], undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v: "—" if v is None else f"{v * 100:.1f}%"
    env.filters["secs"] = lambda v: "—" if v is None else f"{v:.1f} 秒"
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static", HERE / "static")
    for module in (auth, live, desk, units, lead, playback, admin):
        module.add_routes(app)
    app.router.add_routes(ticket_routes)
    app.on_startup.append(login_guard.warm_up)
    if with_ami:
        app.on_startup.append(_start_ami)
    app.on_cleanup.append(_close)
    return app


async def main(settings: Settings, stop: asyncio.Event) -> None:
    setup_logging("agent_desk")
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, settings["web"]["host"], settings["web"]["port"])
    await site.start()
    await stop.wait()
    await runner.cleanup()
