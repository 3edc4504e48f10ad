"""Sessions in Redis are bound to the server's cookie key (issue 12 item 2).

The attacker here has full read/write access to the hotline keys in Redis (the ``tools`` ACL user, more
than any service has) but not var/secrets.toml. They must not be able to log in as anyone.
"""

from __future__ import annotations

import hashlib
import json
import secrets

import redis.exceptions
from sqlalchemy import select

from agent_desk.auth import COOKIE, SESSION_PREFIX
from core.models import User
from core.redis import connect
from core.web import DB_KEY


async def _user_id(desk, username: str) -> int:
    async with desk.app[DB_KEY].session() as db:
        return await db.scalar(select(User.id).where(User.username == username))


async def _as_cookie(desk, token: str) -> int:
    """Status of the team leads' wallboard API when presenting ``token`` as the session cookie."""
    desk.client.session.cookie_jar.clear()
    desk.client.session.cookie_jar.update_cookies({COOKIE: token})
    response = await desk.client.get("/api/wallboard", allow_redirects=False)
    return response.status


async def _session_keys(desk) -> set[str]:
    return set(await desk.tools_redis.keys(SESSION_PREFIX + "*"))


async def test_a_session_forged_in_redis_without_the_cookie_key_does_not_log_in(desk):
    admin = await _user_id(desk, "admin")
    token = secrets.token_urlsafe(32)
    value = {"user_id": admin, "csrf": "forged", "expires": 4_000_000_000, "mac": "0" * 64}
    # Every key a forger might guess: the token's plain hash, an HMAC with a guessed key, the token itself.
    for key in (hashlib.sha256(token.encode()).hexdigest(), token,
                hashlib.sha256(b"guess" + token.encode()).hexdigest()):
        await desk.tools_redis.set(SESSION_PREFIX + key, json.dumps(value), ex=600)
    assert await _as_cookie(desk, token) == 401


async def test_a_session_copied_from_redis_cannot_be_used_or_moved_onto_another_key(desk):
    before = await _session_keys(desk)
    await desk.login("admin", desk.settings.secrets["admin_password"])
    admin_keys = await _session_keys(desk) - before
    assert len(admin_keys) == 1
    admin_key = admin_keys.pop()
    admin_value = await desk.tools_redis.get(admin_key)
    admin_token = next(c.value for c in desk.client.session.cookie_jar if c.key == COOKIE)
    assert await _as_cookie(desk, admin_token) == 200  # the real cookie works

    # The key (or any part of the value) presented as a cookie is not a session.
    assert await _as_cookie(desk, admin_key.removeprefix(SESSION_PREFIX)) == 401
    assert await _as_cookie(desk, json.loads(admin_value)["csrf"]) == 401

    # An agent logs in, finds their own session key and puts the admin's sealed value under it.
    desk.client.session.cookie_jar.clear()
    before = await _session_keys(desk)
    await desk.login("agent1")
    agent_token = next(c.value for c in desk.client.session.cookie_jar if c.key == COOKIE)
    agent_key = (await _session_keys(desk) - before).pop()
    assert await _as_cookie(desk, agent_token) == 403  # the agent's own session works, without the lead's rights
    await desk.tools_redis.set(agent_key, admin_value, ex=600)
    assert await _as_cookie(desk, agent_token) == 401


async def test_redis_refuses_a_client_without_a_password_and_each_user_keeps_to_its_own_commands(desk):
    settings = desk.settings
    anonymous = redis.asyncio.Redis(host="127.0.0.1", port=settings.redis.port)
    try:
        try:
            await anonymous.get(SESSION_PREFIX + "x")
            refused = False
        except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError):
            refused = True
        assert refused, "a client without a password read from Redis"
    finally:
        await anonymous.aclose()
    for service, forbidden in (("agent_desk", ("FLUSHALL",)), ("agent_desk", ("CONFIG", "GET", "*")),
                               ("agent_desk", ("KEYS", "*")), ("ivr", ("SET", SESSION_PREFIX + "x", "1")),
                               ("recordings", ("GET", SESSION_PREFIX + "x")), ("cti", ("FLUSHDB",)),
                               ("tools", ("FLUSHALL",)), ("tools", ("CONFIG", "SET", "appendonly", "no"))):
        client = connect(settings, service)
        try:
            try:
                await client.execute_command(*forbidden)
                allowed = True
            except redis.exceptions.NoPermissionError:
                allowed = False
            assert not allowed, f"{service} may run {forbidden}"
        finally:
            await client.aclose()


async def test_while_redis_is_down_the_desk_answers_a_chinese_503_not_500(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from agent_desk.app import build_app
    from core.settings import load_settings
    from tests.redis_server import free_port

    settings = load_settings(var_dir=tmp_path, env={"HOTLINE_REDIS_PORT": str(free_port())})  # nobody there
    client = TestClient(TestServer(build_app(settings, with_ami=False)))
    await client.start_server()
    try:
        client.session.cookie_jar.update_cookies({COOKIE: secrets.token_urlsafe(32)})
        api = await client.get("/api/tickets")
        assert api.status == 503 and "稍后重试" in (await api.json())["error"]
        page = await client.get("/desk", allow_redirects=False)
        assert page.status == 503 and "稍后重试" in await page.text()
        assert (await client.get("/healthz")).status == 200  # the process itself is fine
    finally:
        await client.close()
