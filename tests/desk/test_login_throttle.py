"""Log-in throttling (issue 12 item 6): lockout per account and per source address, lifted by an admin
(desk page or ./hotline unlock), audited; argon2 off the event loop and as costly for unknown users."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from dataclasses import replace

import argon2
import pytest
from sqlalchemy import select

import core.models
from agent_desk import login_guard
from core.models import SecurityAudit, User
from core.settings import REPO_ROOT
from core.web import DB_KEY, REDIS_KEY

LOCKED = "登录失败次数过多"


@pytest.fixture(autouse=True)
async def clean_locks(desk):
    """The desk tests share one Redis: no lock or count leaks into, or out of, these tests."""
    async def wipe() -> None:
        redis = desk.app[REDIS_KEY]
        for key in [k async for k in redis.scan_iter(match=login_guard.PREFIX + "*")]:
            await redis.delete(key)

    await wipe()
    yield
    await wipe()


async def audit_rows(desk, subject: str) -> list[SecurityAudit]:
    async with desk.app[DB_KEY].session() as db:
        return list((await db.scalars(select(SecurityAudit).where(SecurityAudit.subject == subject)
                                      .order_by(SecurityAudit.id))).all())


async def hotline_unlock(desk, *args: str) -> subprocess.CompletedProcess:
    """``./hotline unlock …`` against the test desk's var folder and Redis."""
    env = {**os.environ, "HOTLINE_VAR": str(desk.settings.var_dir),
           "HOTLINE_REDIS_PORT": str(desk.settings.redis.port)}
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "cli", "unlock", *args],
                                   cwd=REPO_ROOT, env=env, capture_output=True, text=True)


async def logout(desk) -> None:
    await desk.client.post("/logout", data={"_csrf": desk.csrf}, allow_redirects=False)


async def test_200_wrong_passwords_lock_the_account_until_an_admin_unlocks_it(desk):
    for _ in range(200):
        assert (await desk.login("agent2", "wrong-password")).status in (401, 429)
    refused = await desk.login("agent2")  # the right password
    text = await refused.text()
    assert refused.status == 429, text
    assert re.search(LOCKED + r"，请 \d+ 分钟后再试或联系管理员解锁", text)
    assert int(refused.headers["Retry-After"]) > 0
    [lock] = await audit_rows(desk, "agent2")
    assert (lock.action, lock.subject_kind, lock.actor) == ("lock", "account", None)

    # Another account from the same address is not affected by agent2's lock.
    assert (await desk.login("agent3")).status == 302
    await logout(desk)

    assert (await desk.login("admin", desk.settings.secrets["admin_password"])).status == 302
    page = await desk.page("/admin/unlock")
    assert "账号解锁" in page and "agent2" in page
    unlocked = await desk.client.post("/admin/unlock", data={"_csrf": desk.csrf, "kind": "account",
                                                             "subject": "agent2"}, allow_redirects=False)
    assert unlocked.status == 303
    assert "agent2" not in (await desk.page("/admin/unlock")).split('id="audit"')[0]
    await logout(desk)

    assert (await desk.login("agent2")).status == 302
    rows = await audit_rows(desk, "agent2")
    assert [(r.action, r.actor) for r in rows] == [("lock", None), ("unlock", "admin")]
    assert rows[1].address == "127.0.0.1"


async def test_unknown_usernames_lock_like_real_ones(desk):
    """A lock must not tell an attacker which accounts exist."""
    limit = desk.settings.web.login_account_failures
    statuses = {}
    for name in ("agent4", "no-such-user"):
        statuses[name] = [(await desk.login(name, "wrong")).status for _ in range(limit + 1)]
    assert statuses["agent4"] == statuses["no-such-user"] == [401] * (limit - 1) + [429, 429]


async def test_many_usernames_from_one_address_lock_the_address_and_the_cli_unlocks_it(desk, monkeypatch):
    monkeypatch.setattr(desk.settings, "web", replace(desk.settings.web, login_address_failures=8))
    for i in range(8):
        assert (await desk.login(f"guess{i}", "wrong")).status in (401, 429)
    refused = await desk.login("agent5")  # a real account, right password, never failed itself
    assert refused.status == 429 and LOCKED in await refused.text()
    [lock] = await audit_rows(desk, "127.0.0.1")
    assert (lock.action, lock.subject_kind) == ("lock", "address")

    cli = await hotline_unlock(desk, "--address", "127.0.0.1")
    assert cli.returncode == 0 and "unlocked" in cli.stdout, cli.stderr
    assert (await desk.login("agent5")).status == 302
    rows = await audit_rows(desk, "127.0.0.1")
    assert [r.action for r in rows] == ["lock", "unlock"] and rows[1].actor.startswith("命令行")


async def test_the_cli_unlocks_an_account(desk):
    for _ in range(desk.settings.web.login_account_failures):
        await desk.login("lead1", "wrong")
    assert (await desk.login("lead1")).status == 429
    cli = await hotline_unlock(desk, "lead1")
    assert cli.returncode == 0 and "unlocked" in cli.stdout, cli.stderr
    assert (await desk.login("lead1")).status == 302


class CountingHasher:
    """The real argon2 hasher, recording on which thread each verification runs."""

    def __init__(self, real: argon2.PasswordHasher) -> None:
        self.real = real
        self.verify_threads: list[int] = []

    def verify(self, hash: str, password: str) -> bool:
        self.verify_threads.append(threading.get_ident())
        return self.real.verify(hash, password)

    def hash(self, password: str) -> str:
        return self.real.hash(password)


async def test_unknown_users_cost_one_argon2_verification_off_the_event_loop(desk, monkeypatch):
    hasher = CountingHasher(core.models._hasher)
    monkeypatch.setattr(core.models, "_hasher", hasher)
    loop_thread = threading.get_ident()

    assert (await desk.login("nobody-here", "wrong")).status == 401
    assert (await desk.login("agent1", "wrong")).status == 401
    assert (await desk.login("agent1")).status == 302
    assert len(hasher.verify_threads) == 3  # unknown, wrong and right: one verification each
    assert loop_thread not in hasher.verify_threads

    # The dummy hash is made with the same argon2 parameters as real users' hashes.
    async with desk.app[DB_KEY].session() as db:
        agent = await db.scalar(select(User).where(User.username == "agent1"))
    assert argon2.extract_parameters(login_guard._dummy_user().password_hash) == \
        argon2.extract_parameters(agent.password_hash)


async def test_behind_a_trusted_proxy_the_forwarded_address_is_throttled_not_the_proxys(desk, monkeypatch):
    monkeypatch.setattr(desk.settings, "web", replace(desk.settings.web, trust_forwarded_for=True,
                                                      login_address_failures=3))
    hasher = CountingHasher(core.models._hasher)
    monkeypatch.setattr(core.models, "_hasher", hasher)

    async def attempt(username: str, password: str | None, client_address: str) -> int:
        page = await (await desk.client.get("/login")).text()
        token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
        response = await desk.client.post("/login", data={
            "username": username, "password": password or desk.settings.secrets["demo_password"], "_csrf": token,
        }, headers={"X-Forwarded-For": f"203.0.113.9, {client_address}"}, allow_redirects=False)
        return response.status

    assert [await attempt(f"guess{i}", "wrong", "198.51.100.7") for i in range(3)] == [401, 401, 429]
    verified = len(hasher.verify_threads)
    assert await attempt("agent4", None, "198.51.100.7") == 429
    assert len(hasher.verify_threads) == verified  # a locked source gets no password check at all
    assert await attempt("agent4", None, "198.51.100.8") == 302  # another client behind the same proxy
    [lock] = await audit_rows(desk, "198.51.100.7")
    assert lock.subject_kind == "address"
