"""Shared pieces of the aiohttp applications: app keys, JSON errors in plain Chinese."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from core.db import Database
from core.settings import Settings

SETTINGS_KEY = web.AppKey("settings", Settings)
DB_KEY = web.AppKey("db", Database)
REDIS_KEY = web.AppKey("redis", object)  # redis.asyncio.Redis
USER_KEY = "user"  # request[USER_KEY]: the logged-in core.models.User, set by the desk's auth middleware


def streamed_upload(handler: Any) -> Any:
    """Mark a handler that streams its request body itself (with its own cap), so the desk's
    per-route body limit for forms and JSON does not apply to it."""
    handler.streams_upload = True
    return handler


def json_error(status: int, message: str, field: str | None = None, **extra: Any) -> web.HTTPException:
    """An HTTP error whose JSON body tells the user, in Chinese, what went wrong and where."""
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    body.update(extra)
    exc_class = {
        400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden,
        404: web.HTTPNotFound, 409: web.HTTPConflict, 413: web.HTTPRequestEntityTooLarge,
        415: web.HTTPUnsupportedMediaType, 422: web.HTTPUnprocessableEntity,
    }.get(status, web.HTTPBadRequest)
    kwargs: dict[str, Any] = {"text": json.dumps(body, ensure_ascii=False), "content_type": "application/json"}
    if exc_class is web.HTTPRequestEntityTooLarge:
        return exc_class(max_size=extra.get("max_size", 0), actual_size=extra.get("actual_size", 0), **kwargs)
    return exc_class(**kwargs)


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise json_error(400, "请求内容不是有效的 JSON") from exc
    if not isinstance(data, dict):
        raise json_error(400, "请求内容应为 JSON 对象")
    return data
