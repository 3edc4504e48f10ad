"""The web desk application: wiring of routes, auth, templates and live events."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from aiohttp import web

from core.db import Database
from core.settings import Settings
from core.web import DB_KEY, REDIS_KEY, SETTINGS_KEY


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def build_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=20 * 1024 * 1024)
    app[SETTINGS_KEY] = settings
    app[DB_KEY] = Database(settings.database_url)
    app[REDIS_KEY] = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    app.router.add_get("/healthz", healthz)

    async def _close(app: web.Application) -> None:
        await app[DB_KEY].close()
        await app[REDIS_KEY].aclose()

    app.on_cleanup.append(_close)
    return app


async def main(settings: Settings, stop: asyncio.Event) -> None:
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings["web"]["host"], settings["web"]["port"])
    await site.start()
    await stop.wait()
    await runner.cleanup()
