"""503 in Chinese while Redis (sessions, live events, agent state) is really unreachable, never a 500.

core.redis.connect already retries a lost connection for a few seconds with backoff (a Redis restart is
invisible to users); only an outage longer than that reaches this middleware.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agent_desk.auth import is_api

MESSAGE = "系统暂时无法访问会话服务，请稍后重试"
log = logging.getLogger("agent_desk")

_PAGE = ("<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>503</title></head>"
         f"<body><h1>503</h1><p>{MESSAGE}</p><p><a href=\"\">重试</a></p></body></html>")


@web.middleware
async def redis_unavailable(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.warning("redis unavailable on %s %s: %s", request.method, request.path, exc)
        if is_api(request):
            return web.Response(status=503, text=json.dumps({"error": MESSAGE}, ensure_ascii=False),
                                content_type="application/json", headers={"Retry-After": "5"})
        return web.Response(status=503, text=_PAGE, content_type="text/html", headers={"Retry-After": "5"})
