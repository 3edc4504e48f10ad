"""The desk's browser phone (网页电话): a WebRTC endpoint per agent session and its SIP WebSocket proxy.

How the browser reaches Asterisk: the page opens a same-origin WebSocket to ``/phone/ws`` (session cookie,
agent role, Origin checked); the desk relays it to Asterisk's SIP WebSocket on 127.0.0.1 (http.conf,
``transport-ws`` in pjsip.conf). So no SIP port and no second TLS certificate face the browser: behind a TLS
terminator the page and its phone share the desk's one origin. Media (DTLS-SRTP over ICE) goes between the
browser and Asterisk's RTP ports.

Credentials: signing in with 网页电话 creates endpoint/auth/aor ``web<user id>`` over ARI's dynamic
configuration (sorcery memory wizard, sorcery.conf) with a fresh random password, which only that agent's
own session can read (``GET /api/desk/webphone``); signing out or logging out deletes them, so they are
useless afterwards. Through the proxy a browser may only send requests as its own endpoint (From user).

When the WebSocket drops, the agent is paused with reason ``phone`` (网页电话离线) so the queue offers no
call to a dead browser; when the phone registers again, the agent is ready again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import aiohttp
import jinja2
import structlog
from aiohttp import web

from agent_desk.auth import require_roles
from core.asterisk_config import CONF_DIR, ari_username
from core.models import Role, User
from core.settings import AsteriskNode, Settings
from core.vocabulary import AgentState, PauseReason
from core.web import REDIS_KEY, SETTINGS_KEY, USER_KEY, json_error
from cti import protocol, read

WEBPHONE = "webrtc"  # the 签入 phone choice that means "this browser"
log = structlog.get_logger(service="agent_desk")
AWAY_REASON = PauseReason.PHONE  # pause reason while the browser phone is not connected
CREDENTIALS_PREFIX = "hotline:desk:webphone:"  # user id -> JSON {endpoint, password}
ENDPOINT_PREFIX = protocol.BROWSER_PHONE_PREFIX
TEMPLATE = "webrtc-defaults"
AGENT_ONLY = require_roles(Role.AGENT, Role.ADMIN)
SECOND_TAB = 4409  # WebSocket close code: this agent's phone is already open in another tab
REPLACED = 4000   # the same tab reconnected: the older connection is closed
SIP_FROM = re.compile(r"^(?:From|f)[ \t]*:[^\r\n]*?sips?:([^@;>\s]+)@", re.IGNORECASE | re.MULTILINE)
REGISTERED = re.compile(r"^SIP/2\.0 200 .*?^CSeq:[ \t]*\d+[ \t]+REGISTER.*?;expires=([1-9])",
                        re.IGNORECASE | re.MULTILINE | re.DOTALL)


@dataclass
class Link:
    tab: str
    browser: web.WebSocketResponse


CLIENT_KEY = web.AppKey("webphone_http", aiohttp.ClientSession)
LINKS_KEY = web.AppKey("webphone_links", dict)
FIELDS_KEY = web.AppKey("webphone_fields", list)


def endpoint_name(user_id: int) -> str:
    return f"{ENDPOINT_PREFIX}{user_id}"


def is_browser_phone(phone: str | None) -> bool:
    return bool(phone) and str(phone).startswith(ENDPOINT_PREFIX)


def template_fields(settings: Settings) -> list[tuple[str, str]]:
    """The options of pjsip.conf's ``[webrtc-defaults](!)`` template, rendered as Asterisk gets them."""
    text = (CONF_DIR / "pjsip.conf").read_text()
    lines = text[text.index(f"[{TEMPLATE}](!)"):].splitlines()[1:]
    body = "\n".join(line for line in lines[:next((i for i, line in enumerate(lines) if not line.strip()),
                                                   len(lines))])
    sip = settings.sip
    rendered = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(body).render(
        sip_bind=phone_node(settings).address, session_timers=sip.session_timers,
        session_expires=sip.session_expires_seconds, session_min_se=sip.session_min_se_seconds)
    fields = []
    for line in rendered.splitlines():
        key, _, value = line.partition("=")
        if line.strip() and not line.lstrip().startswith(";") and key.strip() != "type":
            fields.append((key.strip(), value.strip()))
    return fields


def phone_node(settings: Settings) -> AsteriskNode:
    """Browser phones live on the first Asterisk node (the only one with the HTTP server, http.conf)."""
    return settings.nodes[0]


def _ari_url(settings: Settings, kind: str, name: str) -> str:
    return (f"http://{phone_node(settings).address}:{settings.webphone.http_port}"
            f"/ari/asterisk/config/dynamic/res_pjsip/{kind}/{name}")


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


async def _ari(app: web.Application, method: str, kind: str, name: str, fields: list[tuple[str, str]] = ()) -> None:
    settings = app[SETTINGS_KEY]
    body = {"fields": [{"attribute": k, "value": v} for k, v in fields]} if method == "PUT" else None
    try:
        async with app[CLIENT_KEY].request(
                method, _ari_url(settings, kind, name), json=body,
                headers={"Authorization": _basic(ari_username(settings), settings.secrets["ari_desk"])},
                timeout=aiohttp.ClientTimeout(total=5)) as resp:
            if resp.status >= 400 and not (method == "DELETE" and resp.status == 404):
                raise json_error(409, f"网页电话开通失败（电话系统答复 {resp.status}），请稍后重试或改用话机分机")
    except (aiohttp.ClientError, TimeoutError):
        if method == "DELETE":  # Asterisk unreachable: its memory objects die with it; the password is gone
            return
        raise json_error(409, "暂时无法连接电话系统，网页电话未能开通，请稍后重试") from None


async def credentials(redis, user_id: int) -> dict[str, str] | None:
    raw = await redis.get(f"{CREDENTIALS_PREFIX}{user_id}")
    return json.loads(raw) if raw else None


async def open_phone(app: web.Application, user: User) -> str:
    """Create this session's endpoint with a new password (replacing any earlier one); returns its name."""
    name = endpoint_name(user.id)
    password = secrets.token_urlsafe(24)
    await _ari(app, "PUT", "auth", name, [("auth_type", "userpass"), ("username", name), ("password", password)])
    await _ari(app, "PUT", "aor", name, [("max_contacts", "1"), ("remove_existing", "yes")])
    await _ari(app, "PUT", "endpoint", name, [*app[FIELDS_KEY], ("aors", name), ("auth", name),
                                              ("callerid", f'"坐席 {user.display_name}" <{name}>')])
    await app[REDIS_KEY].set(f"{CREDENTIALS_PREFIX}{user.id}",
                             json.dumps({"endpoint": name, "password": password}))
    return name


async def close_phone(app: web.Application, user_id: int) -> None:
    """Delete the endpoint and its password and hang up the browser's link: nothing of it works afterwards."""
    await app[REDIS_KEY].delete(f"{CREDENTIALS_PREFIX}{user_id}")
    link = app[LINKS_KEY].pop(user_id, None)
    if link is not None:
        await link.browser.close(code=1000, message="已签出".encode())
    name = endpoint_name(user_id)
    for kind in ("endpoint", "aor", "auth"):
        await _ari(app, "DELETE", kind, name)


async def _agent_command(app: web.Application, user: User, **args: Any) -> None:
    """An agent-state command to the CTI (cti.protocol) made by the desk itself, not by the agent: a CTI
    that is away or refuses is logged, the desk goes on."""
    try:
        await protocol.send(app[REDIS_KEY], "agent_state", {"agent_id": user.id, **args})
    except (protocol.CtiUnavailable, protocol.Refused) as exc:
        log.warning("webphone_agent_command_failed", user=user.username, args=args, error=str(exc))


async def end_session(app: web.Application, user: User) -> None:
    """At log-out: an agent on the browser phone leaves the queues and the endpoint is deleted."""
    redis = app[REDIS_KEY]
    if await credentials(redis, user.id) is None:
        return
    session = await read.agent_session(redis, user.id)
    if is_browser_phone(session.phone) and session.logged_in:
        await _agent_command(app, user, action="logout")
    await close_phone(app, user.id)


@AGENT_ONLY
async def get_credentials(request: web.Request) -> web.Response:
    """GET /api/desk/webphone: the agent's own browser-phone account (only while signed in with 网页电话)."""
    user: User = request[USER_KEY]
    creds = await credentials(request.app[REDIS_KEY], user.id)
    if creds is None:
        raise json_error(409, "请先选择“网页电话”签入")
    link = request.app[LINKS_KEY].get(user.id)
    tab = request.query.get("tab", "")
    if link is not None and not link.browser.closed and link.tab != tab:
        raise json_error(409, "网页电话已在另一个窗口或标签页中使用，本页不会接听来电；请关闭另一个页面后刷新本页")
    return web.json_response({**creds, "ws_path": "/phone/ws",
                              "ice_gathering_timeout_ms": request.app[SETTINGS_KEY].webphone.ice_gathering_timeout_ms})


def _same_origin(request: web.Request) -> bool:
    """Browsers send Origin on every WebSocket handshake: refuse other sites (cross-site WebSocket hijacking)."""
    origin = request.headers.get("Origin", "")
    return origin in (f"http://{request.host}", f"https://{request.host}")


@AGENT_ONLY
async def phone_ws(request: web.Request) -> web.StreamResponse:
    """GET /phone/ws: the agent's SIP WebSocket, relayed to Asterisk's loopback WebSocket."""
    app = request.app
    user: User = request[USER_KEY]
    creds = await credentials(app[REDIS_KEY], user.id)
    if creds is None:
        raise json_error(409, "请先选择“网页电话”签入")
    if not _same_origin(request):
        raise json_error(403, "不允许从其他网站连接网页电话")
    tab = request.query.get("tab", "")
    # timeout: how long a close waits for the peer's close frame; a browser that vanished sends none.
    browser = web.WebSocketResponse(protocols=("sip",), heartbeat=15, timeout=2)
    await browser.prepare(request)
    links = app[LINKS_KEY]
    current = links.get(user.id)
    if current is not None and not current.browser.closed:
        if current.tab != tab:
            await browser.close(code=SECOND_TAB, message="网页电话已在其他窗口使用".encode())
            return browser
        asyncio.create_task(current.browser.close(code=REPLACED))  # noqa: RUF006 - the old one may hang
    link = links[user.id] = Link(tab, browser)
    settings = app[SETTINGS_KEY]
    upstream_url = f"ws://{phone_node(settings).address}:{settings.webphone.http_port}/ws"
    try:
        async with app[CLIENT_KEY].ws_connect(upstream_url, protocols=("sip",), heartbeat=15) as upstream:
            await _relay(app, user, creds["endpoint"], browser, upstream)
    except aiohttp.ClientError:
        await browser.close(code=1011, message="电话系统暂时无法连接".encode())
    finally:
        if links.get(user.id) is link:
            del links[user.id]
            await _phone_away(app, user)
    return browser


async def _relay(app: web.Application, user: User, endpoint: str, browser: web.WebSocketResponse,
                 upstream: aiohttp.ClientWebSocketResponse) -> None:
    async def to_asterisk() -> None:
        async for msg in browser:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            sender = SIP_FROM.search(msg.data)
            if msg.data.strip() and not msg.data.startswith("SIP/2.0") and (
                    sender is None or sender.group(1) != endpoint):
                await browser.close(code=1008, message="只能使用本人的网页电话".encode())
                break
            await upstream.send_str(msg.data)

    async def to_browser() -> None:
        async for msg in upstream:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            await browser.send_str(msg.data)
            if REGISTERED.search(msg.data):
                await _phone_back(app, user)

    tasks = [asyncio.create_task(to_asterisk()), asyncio.create_task(to_browser())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
        await browser.close()


async def _phone_away(app: web.Application, user: User) -> None:
    """The browser is gone: no call may be offered to it (Asterisk also sees the contact disappear)."""
    session = await read.agent_session(app[REDIS_KEY], user.id)
    if not is_browser_phone(session.phone) or not session.logged_in:
        return
    if session.state == AgentState.PAUSED and session.reason != AWAY_REASON:
        return  # already paused by the agent: stays so
    await _agent_command(app, user, action="pause", reason=AWAY_REASON, by_system=True)


async def _phone_back(app: web.Application, user: User) -> None:
    session = await read.agent_session(app[REDIS_KEY], user.id)
    if session.state == AgentState.PAUSED and session.reason == AWAY_REASON:
        await _agent_command(app, user, action="ready")


async def _start(app: web.Application) -> None:
    app[CLIENT_KEY] = aiohttp.ClientSession()
    app[LINKS_KEY] = {}
    app[FIELDS_KEY] = template_fields(app[SETTINGS_KEY])


async def _stop(app: web.Application) -> None:
    for link in list(app[LINKS_KEY].values()):
        await link.browser.close(code=1001)
    await app[CLIENT_KEY].close()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/desk/webphone", get_credentials)
    app.router.add_get("/phone/ws", phone_ws)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
