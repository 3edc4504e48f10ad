"""Shared pieces of the aiohttp applications: app keys, JSON errors in plain Chinese."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from core.db import Database
from core.inputs import InputError, check_json
from core.settings import Settings

SETTINGS_KEY = web.AppKey("settings", Settings)
DB_KEY = web.AppKey("db", Database)
REDIS_KEY = web.AppKey("redis", object)  # redis.asyncio.Redis
_SURROGATES = re.compile(r"[\ud800-\udfff]")
USER_KEY = "user"  # request[USER_KEY]: the logged-in core.models.User, set by the desk's auth middleware
# app[ERROR_PAGE_KEY](request, message, status, field): the desk's Chinese error page (JSON for API calls).
ERROR_PAGE_KEY = web.AppKey("error_page", object)


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
        415: web.HTTPUnsupportedMediaType, 422: web.HTTPUnprocessableEntity, 503: web.HTTPServiceUnavailable,
    }.get(status, web.HTTPBadRequest)
    text = json.dumps(body, ensure_ascii=False)
    if _SURROGATES.search(text):  # an echoed lone surrogate cannot be sent as UTF-8: escape it instead
        text = json.dumps(body)
    kwargs: dict[str, Any] = {"text": text, "content_type": "application/json"}
    if exc_class is web.HTTPRequestEntityTooLarge:
        return exc_class(max_size=extra.get("max_size", 0), actual_size=extra.get("actual_size", 0), **kwargs)
    return exc_class(**kwargs)


def input_error(exc: InputError) -> web.HTTPException:
    return json_error(exc.status, exc.message, exc.field)


@web.middleware
async def input_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refused input anywhere below becomes a 4xx naming the field: an error page for pages, JSON otherwise."""
    try:
        return await handler(request)
    except InputError as exc:
        page = request.app.get(ERROR_PAGE_KEY)
        if page is None:
            raise input_error(exc) from None
        return page(request, exc.message, exc.status, exc.field)


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except RecursionError:
        raise json_error(400, "请求内容嵌套层级过深") from None
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer of thousands of digits
        raise json_error(400, "请求内容不是有效的 JSON") from exc
    if not isinstance(data, dict):
        raise json_error(400, "请求内容应为 JSON 对象")
    check_json(data)
    return data
