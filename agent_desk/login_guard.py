"""Log-in throttling and lockout, and password checks that cost the same for every username.

Failed log-ins are counted per account (the username as typed, known or not, so a lock tells
nothing about which accounts exist) and per source address, over ``[web] login_window_minutes``.
Reaching ``login_account_failures`` / ``login_address_failures`` locks the account or address for
``login_lock_minutes``; while locked even the right password is refused with 429. An admin lifts a
lock on the 账号解锁 page (agent_desk/admin.py) or with ``./hotline unlock``; every lock and unlock
is a row in ``security_audit``.

The state lives in Redis, not the database: it is short-lived counters with expiry (INCR + EXPIRE),
written on every failed attempt, which Redis does without touching the database's write lock, and
the platform's redis-server keeps an append-only file, so locks survive a desk (and Redis) restart.

argon2 verification runs in a small pool of worker threads (it takes ~100 ms of CPU and would
otherwise stall every other request on the event loop), and an unknown username is verified against a dummy hash so it
costs what a wrong password costs.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aiohttp import web
from sqlalchemy import select

from core.db import Database
from core.models import SecurityAudit, User
from core.settings import Settings
from core.web import DB_KEY, REDIS_KEY, SETTINGS_KEY

PREFIX = "hotline:web:login:"
KINDS = ("account", "address")
KIND_LABELS = {"account": "账号", "address": "来源地址"}
MAX_SUBJECT = 128  # longer usernames cannot exist; the key stays bounded


@dataclass(frozen=True)
class Limits:
    account_failures: int
    address_failures: int
    window_seconds: int
    lock_seconds: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        web_cfg = settings.web
        return cls(int(web_cfg.login_account_failures), int(web_cfg.login_address_failures),
                   int(web_cfg.login_window_minutes) * 60, int(web_cfg.login_lock_minutes) * 60)

    def failures_for(self, kind: str) -> int:
        return self.account_failures if kind == "account" else self.address_failures


@dataclass(frozen=True)
class Lock:
    kind: str  # "account" | "address"
    subject: str
    failures: int
    since: datetime
    seconds_left: int

    @property
    def minutes_left(self) -> int:
        return max(1, math.ceil(self.seconds_left / 60))

    @property
    def message(self) -> str:
        return f"登录失败次数过多，请 {self.minutes_left} 分钟后再试或联系管理员解锁"


def _key(what: str, kind: str, subject: str) -> str:
    return f"{PREFIX}{what}:{kind}:{subject[:MAX_SUBJECT]}"


def source_address(request: web.Request) -> str:
    """The client's address; behind a trusted local proxy, the hop it appended to X-Forwarded-For."""
    if request.app[SETTINGS_KEY].web.trust_forwarded_for:
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
        if hops:
            return hops[-1][:64]
    return (request.remote or "unknown")[:64]


async def _read_lock(redis: Any, kind: str, subject: str) -> Lock | None:
    key = _key("lock", kind, subject)
    raw, ttl = await redis.get(key), await redis.ttl(key)
    if not raw:
        return None
    data = json.loads(raw)
    return Lock(kind, data["subject"], int(data["failures"]), datetime.fromisoformat(data["since"]),
                max(int(ttl), 0))


async def active_lock(redis: Any, username: str, address: str) -> Lock | None:
    """The lock that refuses this attempt (the address first: it covers every username)."""
    return await _read_lock(redis, "address", address) or await _read_lock(redis, "account", username)


async def audit(db: Database, action: str, kind: str, subject: str, actor: str | None,
                address: str | None, detail: str = "") -> None:
    async with db.transaction() as session:
        session.add(SecurityAudit(action=action, subject_kind=kind, subject=subject[:MAX_SUBJECT],
                                  actor=actor, address=address, detail=detail[:255]))


async def recent_audit(db: Database, limit: int) -> list[SecurityAudit]:
    """The newest lock and unlock audit rows (the admin's unlock page)."""
    async with db.session() as session:
        return list((await session.scalars(select(SecurityAudit).order_by(SecurityAudit.id.desc()).limit(limit))).all())


async def record_failure(app: web.Application, username: str, address: str) -> Lock | None:
    """Count a failed log-in; the lock it caused, if this failure reached a limit."""
    redis, limits = app[REDIS_KEY], Limits.of(app[SETTINGS_KEY])
    caused: Lock | None = None
    for kind, subject in (("account", username), ("address", address)):
        key = _key("fail", kind, subject)
        # The counter is created with its expiry, then counted: no MULTI block, which Redis replays from its
        # append-only file after a restart as a client the ACL refuses (INCRBY/PEXPIREAT logged as refused).
        await redis.set(key, 0, ex=limits.window_seconds, nx=True)
        failures = await redis.incr(key)
        if failures < limits.failures_for(kind):
            continue
        since = datetime.now(UTC)
        payload = json.dumps({"subject": subject[:MAX_SUBJECT], "failures": failures, "since": since.isoformat()})
        if await redis.set(_key("lock", kind, subject), payload, ex=limits.lock_seconds, nx=True):
            await audit(app[DB_KEY], "lock", kind, subject, None, address,
                        f"{limits.window_seconds // 60} 分钟内失败 {failures} 次，锁定 {limits.lock_seconds // 60} 分钟")
            caused = caused or Lock(kind, subject[:MAX_SUBJECT], failures, since, limits.lock_seconds)
    return caused


async def record_success(redis: Any, username: str) -> None:
    """A good log-in clears the account's count (not the address's: one valid account must not reset it)."""
    await redis.delete(_key("fail", "account", username))


async def list_locks(redis: Any) -> list[Lock]:
    locks: list[Lock] = []
    for kind in KINDS:
        async for key in redis.scan_iter(match=f"{PREFIX}lock:{kind}:*", count=500):
            lock = await _read_lock(redis, kind, key.split(":", 5)[5])
            if lock is not None:
                locks.append(lock)
    return sorted(locks, key=lambda lock: lock.since, reverse=True)


async def lock_account(app: web.Application, username: str, actor: str, address: str | None) -> Lock:
    """An admin locks an account now, for ``login_lock_minutes`` as a lock after failures would; audited."""
    limits = Limits.of(app[SETTINGS_KEY])
    since = datetime.now(UTC)
    payload = json.dumps({"subject": username[:MAX_SUBJECT], "failures": 0, "since": since.isoformat()})
    await app[REDIS_KEY].set(_key("lock", "account", username), payload, ex=limits.lock_seconds)
    await audit(app[DB_KEY], "lock", "account", username, actor, address,
                f"管理员锁定 {limits.lock_seconds // 60} 分钟")
    return Lock("account", username[:MAX_SUBJECT], 0, since, limits.lock_seconds)


async def account_lock(redis: Any, username: str) -> Lock | None:
    return await _read_lock(redis, "account", username)


async def unlock(redis: Any, db: Database, kind: str, subject: str, actor: str, address: str | None) -> bool:
    """Lift a lock and forget its failures; audited. False if there was no lock."""
    if kind not in KINDS:
        raise ValueError(kind)
    removed = await redis.delete(_key("lock", kind, subject))
    await redis.delete(_key("fail", kind, subject))
    if removed:
        await audit(db, "unlock", kind, subject, actor, address, "管理员解锁")
    return bool(removed)


# --- password checks off the event loop, same cost for unknown users -------------------------------

@cache
def _dummy_user() -> User:
    """A user nobody can be: its hash is of a random secret, made with the platform's own parameters."""
    user = User(username="")
    user.set_password(secrets.token_urlsafe(32))
    return user


def _check(user: User | None, password: str) -> bool:
    return (user or _dummy_user()).check_password(password) and user is not None


@cache
def _verifiers() -> ThreadPoolExecutor:
    """Threads for argon2 (~100 ms of CPU each): one core less than the machine has, so a flood of
    log-ins queues here instead of taking every core from the event loop and the other services."""
    return ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="argon2")


async def verify_password(user: User | None, password: str) -> bool:
    """argon2 verification in a worker thread; unknown users cost one verification too."""
    return await asyncio.get_running_loop().run_in_executor(_verifiers(), _check, user, password)


async def warm_up(app: web.Application) -> None:
    """Make the dummy hash at start-up, so the first unknown username is not the slow one."""
    await asyncio.get_running_loop().run_in_executor(_verifiers(), _dummy_user)
