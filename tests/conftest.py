"""Test harness: one real platform stack per test session.

The ``stack`` fixture runs exactly what ``./hotline up`` runs (Asterisk in its
runtime, Redis, the IVR, CTI, desk and recordings services under supervisord)
in a throwaway var folder on test ports, so it can run beside a demo stack.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

TEST_PORTS = {
    "HOTLINE_SIP_PORT": "5160",
    "HOTLINE_SIP_RTP_START": "12000",
    "HOTLINE_SIP_RTP_END": "12999",
    "HOTLINE_AMI_PORT": "5138",
    "HOTLINE_AGI_PORT": "4673",
    "HOTLINE_WEB_PORT": "8180",
    "HOTLINE_REDIS_PORT": "6480",
    # Tests decide hours themselves; the default demo calendar would make results depend on the clock.
    "HOTLINE_HOURS_MODE": "always",
    "HOTLINE_QUEUES_MAX_WAIT_SECONDS": "20",
    "HOTLINE_QUEUES_WRAPUP_SECONDS": "1",
}


@dataclass
class Stack:
    settings: Any
    runtime: Any

    def asterisk_path(self, inside: str) -> Path:
        return self.runtime.host_path(inside)

    def recording_path(self, relative: str) -> Path:
        return self.runtime.host_path(self.runtime.inside("spool", "monitor", relative))

    def log(self, service: str) -> str:
        path = self.settings.log_dir / f"{service}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    from cli import stack as platform
    from core.settings import load_settings

    var = Path(tempfile.mkdtemp(prefix="hotline-test-"))
    saved = {k: os.environ.get(k) for k in [*TEST_PORTS, "HOTLINE_VAR"]}
    os.environ.update(TEST_PORTS)
    os.environ["HOTLINE_VAR"] = str(var)
    settings = load_settings()
    runtime = None
    try:
        runtime = platform.up(settings, say=lambda line: print(line, flush=True))
        yield Stack(settings, runtime)
    finally:
        platform.down(settings, say=lambda _line: None)
        if runtime is not None:
            platform.purge_instance(settings, runtime)
        shutil.rmtree(var, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest_asyncio.fixture(scope="session")
async def ami(stack: Stack) -> AsyncIterator[Any]:
    from core.ami import AmiClient

    client = AmiClient(stack.settings)
    await client.connect()
    yield client
    await client.close()


@pytest_asyncio.fixture(scope="session")
async def db(stack: Stack) -> AsyncIterator[Any]:
    from core.db import Database

    database = Database(stack.settings.database_url)
    yield database
    await database.close()


@pytest_asyncio.fixture(scope="session")
async def redis(stack: Stack) -> AsyncIterator[Any]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(stack.settings.redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float = 30, interval: float = 0.25,
                   what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def waiter() -> Callable[..., Awaitable[Any]]:
    return wait_for
