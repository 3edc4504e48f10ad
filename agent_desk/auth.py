"""Log-in, server-side sessions in Redis, CSRF protection and the auth middleware.

A session is a random token in an HttpOnly, SameSite=Lax cookie; Redis holds
``{user_id, csrf, expires, mac}`` under HMAC(cookie key, token) with a sliding
expiry of ``[web] session_minutes``. ``mac`` seals the value to its key with the
cookie key (var/secrets.toml), so neither reading nor writing Redis yields a
usable session. Losing Redis only means logging in again.
Every state-changing request carries the session's CSRF token: forms in the
``_csrf`` field, ``fetch`` calls in the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
from aiohttp import web

from agent_desk import login_guard
from agent_desk.common import SESSION_KEY, page_context
from core.models import LEAD_ROLES, Role, User
from core.users import active_user
from core.web import DB_KEY, REDIS_KEY, SETTINGS_KEY, USER_KEY, json_error

COOKIE = "hotline_session"
LOGIN_CSRF_COOKIE = "hotline_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "_csrf"
SESSION_PREFIX = "hotline:web:session:"
SESSION_REFRESH_SECONDS = 60  # sliding expiry: re-sealed when older than this
PUBLIC_PREFIXES = ("/static/", "/vendor/")  # the desk's own files and the npm libraries it serves
PUBLIC_PATHS = frozenset({"/login", "/healthz"})
# Where a user who must set their own password may go before they have (agent_desk/account.py).
PASSWORD_PAGE = "/account/password"
PASSWORD_PATHS = frozenset({PASSWORD_PAGE, "/logout"})
MAX_NEXT_LENGTH = 2000
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Run at log-out before the session is dropped, each with (app, user): the pages above this module
# register theirs (app.py: the browser phone's endpoint and password die with the desk session).
LOGOUT_HOOKS = web.AppKey("logout_hooks", list)

LEADS = LEAD_ROLES
UNIT_ROLES = frozenset({Role.UNIT_HANDLER, Role.UNIT_HEAD})


@dataclass
class Session:
    token_hash: str
    user_id: int
    csrf: str


def _hash(key: str, token: str) -> str:
    """The Redis key of a cookie token: an HMAC with the server's cookie key, so a key read from Redis
    is not a cookie and no cookie can be derived from it."""
    return hmac.new(key.encode(), b"session-id:" + token.encode(), hashlib.sha256).hexdigest()


def _seal(key: str, token_hash: str, user_id: int, csrf: str, expires: int) -> str:
    """MAC over everything a session grants, bound to its own Redis key: someone who can write to Redis
    but lacks the cookie key can neither mint a session nor move another user's session onto their key."""
    message = f"session-value:{token_hash}:{user_id}:{csrf}:{expires}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def _ttl(app: web.Application) -> int:
    return int(app[SETTINGS_KEY].web.session_minutes) * 60


def _cookie_key(app: web.Application) -> str:
    return app[SETTINGS_KEY].secrets["web_cookie_key"]


async def _store_session(app: web.Application, session: Session) -> None:
    expires = int(time.time()) + _ttl(app)
    value = {"user_id": session.user_id, "csrf": session.csrf, "expires": expires,
             "mac": _seal(_cookie_key(app), session.token_hash, session.user_id, session.csrf, expires)}
    await app[REDIS_KEY].set(SESSION_PREFIX + session.token_hash, json.dumps(value), ex=_ttl(app))


async def create_session(app: web.Application, user_id: int) -> tuple[str, Session]:
    token = secrets.token_urlsafe(32)
    session = Session(_hash(_cookie_key(app), token), user_id, secrets.token_urlsafe(24))
    await _store_session(app, session)
    return token, session


async def load_session(app: web.Application, token: str | None) -> Session | None:
    """The live session of a cookie value, if its seal is intact; use extends its expiry (sliding window)."""
    if not token:
        return None
    token_hash = _hash(_cookie_key(app), token)
    raw = await app[REDIS_KEY].get(SESSION_PREFIX + token_hash)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        user_id, csrf, expires = int(data["user_id"]), str(data["csrf"]), int(data["expires"])
        mac = str(data["mac"])
    except (ValueError, TypeError, KeyError):
        return None  # not written by create_session
    if not hmac.compare_digest(mac, _seal(_cookie_key(app), token_hash, user_id, csrf, expires)):
        return None
    now = time.time()
    if expires <= now:
        return None  # a Redis writer may lift the key's TTL, not the sealed expiry
    session = Session(token_hash, user_id, csrf)
    if expires - now < _ttl(app) - SESSION_REFRESH_SECONDS:
        await _store_session(app, session)  # re-sealed with a new expiry, at most once a minute
    return session


async def drop_session(app: web.Application, session: Session) -> None:
    await app[REDIS_KEY].delete(SESSION_PREFIX + session.token_hash)


async def end_sessions(app: web.Application, user_id: int) -> int:
    """Drop every desk session of a user (disabled, or their password reset): their next request is refused.
    A scan over the sessions: rare (an admin's action) and bounded by the number of people logged in."""
    redis, ended = app[REDIS_KEY], 0
    async for key in redis.scan_iter(match=SESSION_PREFIX + "*", count=500):
        raw = await redis.get(key)
        try:
            owner = int(json.loads(raw)["user_id"]) if raw else None
        except (ValueError, TypeError, KeyError):
            owner = None
        if owner == user_id:
            ended += await redis.delete(key)
    return ended


async def load_user(app: web.Application, user_id: int | None = None, username: str | None = None) -> User | None:
    """An active user with ``.unit`` loaded (core.users.active_user)."""
    async with app[DB_KEY].session() as db:
        return await active_user(db, user_id, username)


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


def is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path == "/events" or \
        "application/json" in request.headers.get("Accept", "")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _secure(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"


async def _submitted_csrf(request: web.Request) -> str | None:
    """The token from the header, or from the form body (never reads JSON bodies or streamed uploads)."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.content_type == "application/x-www-form-urlencoded":
        return (await request.post()).get(CSRF_FIELD)  # type: ignore[return-value]
    if request.content_type == "multipart/form-data" and not getattr(request.match_info.handler, "streams_upload",
                                                                     False):
        # A file in an HTML form (the admin's bulk import): read whole, within the body limit that
        # agent_desk.app's body_limits already applied. Streamed uploads send the header instead.
        field = (await request.post()).get(CSRF_FIELD)
        return field if isinstance(field, str) else None
    return None


def forbidden_page(request: web.Request, message: str, status: int = 403, field: str | None = None) -> web.Response:
    """A Chinese error page (or JSON for API calls) that keeps the layout."""
    if is_api(request):
        raise json_error(status, message, field)
    # The context processors have not run when the auth middleware itself refuses a request.
    response = aiohttp_jinja2.render_template("error.html", request,
                                              {**page_context(request), "message": message, "status": status})
    response.set_status(status)
    return response


@web.middleware
async def auth_middleware(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    if is_public(request.path):
        return await handler(request)
    session = await load_session(request.app, request.cookies.get(COOKIE))
    user = await load_user(request.app, session.user_id) if session else None
    if session is None or user is None:
        if is_api(request):
            raise json_error(401, "登录已过期，请重新登录")
        # Back to the page after log-in, unless its address is absurdly long (the redirect would be too).
        target = request.path_qs if request.method == "GET" and len(request.path_qs) <= MAX_NEXT_LENGTH else "/"
        raise web.HTTPFound(f"/login?next={quote(target, safe='')}")
    if request.method in UNSAFE_METHODS and not csrf_ok(session.csrf, await _submitted_csrf(request)):
        if is_api(request) or request.headers.get(CSRF_HEADER) is not None:
            raise json_error(403, "请求校验失败（CSRF），请刷新页面后重试")
        return forbidden_page(request, "请求校验失败（CSRF），请刷新页面后重试")
    request[USER_KEY] = user
    request[SESSION_KEY] = session
    if user.must_change_password and request.path not in PASSWORD_PATHS:
        if is_api(request):
            raise json_error(403, "请先修改初始密码")
        raise web.HTTPFound(PASSWORD_PAGE)
    return await handler(request)


def require_roles(*roles: Role) -> Callable:
    """Handler decorator: 403 (Chinese) unless the user has one of ``roles``."""
    allowed = frozenset(roles)

    def decorate(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if request[USER_KEY].role not in allowed:
                return forbidden_page(request, "您的账号无权访问此功能")
            return await handler(request)
        wrapped.__name__ = handler.__name__
        wrapped.__doc__ = handler.__doc__
        return wrapped
    return decorate


def home_for(user: User) -> str:
    if user.role == Role.AGENT:
        return "/desk"
    if user.role in LEADS:
        return "/wallboard"
    return "/unit"


def _safe_next(value: str | None) -> str | None:
    r"""A same-site path to return to after log-in, or None.

    Browsers drop tabs and newlines anywhere in a URL, trim leading spaces and control characters
    and read a backslash as a slash, so ``/\t/evil``, ``/\evil`` or `` //evil`` all become
    ``//evil``: another site. Anything a browser would rewrite is refused rather than cleaned: one
    leading slash, no whitespace, control or invisible format characters, no backslash, and no
    scheme or host once parsed. (Non-ASCII letters are kept: a filtered list's query may carry them.)
    """
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//"):
        return None
    if any(ch == "\\" or ch.isspace() or not ch.isprintable() for ch in value):
        return None
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc and parts.path.startswith("/") else None


# --- handlers ------------------------------------------------------------------

async def login_page(request: web.Request) -> web.Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = aiohttp_jinja2.render_template("login.html", request, {
        "login_csrf": token, "next": _safe_next(request.query.get("next")) or "", "error": None, "username": ""})
    _set_login_csrf(request, response, token)
    return response


def _set_login_csrf(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Lax", secure=_secure(request),
                        path="/login", max_age=3600)


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    username = str(form.get("username", "")).strip()
    next_url = _safe_next(str(form.get("next", "")))
    cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")

    def fail(message: str, status: int) -> web.Response:
        token = cookie_token or secrets.token_urlsafe(24)
        response = aiohttp_jinja2.render_template("login.html", request, {
            "login_csrf": token, "next": next_url or "", "error": message, "username": username})
        _set_login_csrf(request, response, token)
        response.set_status(status)
        return response

    def locked(lock: login_guard.Lock) -> web.Response:
        response = fail(lock.message, 429)
        response.headers["Retry-After"] = str(lock.seconds_left)
        return response

    if not cookie_token or not csrf_ok(cookie_token, str(form.get(CSRF_FIELD, ""))):
        return fail("页面已过期，请重新登录", 403)
    redis, address = request.app[REDIS_KEY], login_guard.source_address(request)
    lock = await login_guard.active_lock(redis, username, address)
    if lock is not None:  # refused before any password check: a locked account cannot be guessed at
        return locked(lock)
    user = await load_user(request.app, username=username) if username else None
    if not await login_guard.verify_password(user, str(form.get("password", ""))) or user is None:
        lock = await login_guard.record_failure(request.app, username, address)
        return locked(lock) if lock is not None else fail("用户名或密码错误", 401)
    await login_guard.record_success(redis, username)
    token, _session = await create_session(request.app, user.id)
    response = web.HTTPFound(PASSWORD_PAGE if user.must_change_password else next_url or home_for(user))
    response.set_cookie(COOKIE, token, httponly=True, samesite="Lax", secure=_secure(request), path="/")
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    for hook in request.app[LOGOUT_HOOKS]:
        await hook(request.app, request[USER_KEY])
    await drop_session(request.app, request[SESSION_KEY])
    response = web.HTTPFound("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(home_for(request[USER_KEY]))


def add_routes(app: web.Application) -> None:
    app[LOGOUT_HOOKS] = []
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", home)
