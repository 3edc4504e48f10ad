"""Fixtures of the desk tests.

Light tests run the desk application in process (aiohttp test client) against
a migrated SQLite file with the demo users and a private redis-server; browser
tests use the real ``stack`` (tests/conftest.py) and Playwright on Debian's Chromium.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from core.settings import Settings, load_settings
from tests.redis_server import free_port, private_redis


@pytest.fixture(scope="session")
def desk_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from cli.demo import seed_demo_data
    from cli.stack import migrate

    var = tmp_path_factory.mktemp("desk-var")
    port = free_port()
    settings = load_settings(var_dir=var, env={"HOTLINE_REDIS_PORT": str(port)})
    with private_redis(settings):
        migrate(settings)
        asyncio.run(seed_demo_data(settings))
        yield settings


@pytest_asyncio.fixture
async def desk(desk_settings: Settings) -> AsyncIterator[DeskClient]:
    from agent_desk.app import build_app
    from core.redis import connect

    app = build_app(desk_settings, with_ami=False)
    client = TestClient(TestServer(app))
    await client.start_server()
    tools = connect(desk_settings, "tools")  # what a test inspects, beyond what the desk's own user may do
    try:
        yield DeskClient(client, desk_settings, tools)
    finally:
        await client.close()
        await tools.aclose()


class DeskClient:
    """An in-process browser: cookies, log-in, CSRF token of the last page."""

    def __init__(self, client: TestClient, settings: Settings, tools_redis: Any = None) -> None:
        self.client = client
        self.settings = settings
        self.tools_redis = tools_redis
        self.csrf = ""

    @property
    def app(self):
        return self.client.app

    async def login(self, username: str, password: str | None = None) -> Any:
        page = await (await self.client.get("/login")).text()
        token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
        response = await self.client.post("/login", data={
            "username": username, "password": password or self.settings.secrets["demo_password"], "_csrf": token,
        }, allow_redirects=False)
        if response.status == 302:
            await self.page(response.headers["Location"])
        return response

    async def page(self, path: str) -> str:
        response = await self.client.get(path)
        text = await response.text()
        match = re.search(r'name="csrf-token" content="([^"]*)"', text)
        if match:
            self.csrf = match.group(1)
        return text

    async def post_json(self, path: str, body: dict[str, Any], csrf: bool = True) -> Any:
        headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        return await self.client.post(path, json=body, headers=headers)


# --- the administration services on SQLite and PostgreSQL (tests/conftest.py db_url) ----------------

SERVICE_USERS = "svc"  # the service tests' users start with this; nothing else does


@pytest.fixture(scope="module")
def file_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The shipped settings (password rules, extensions) on a throwaway var folder."""
    return load_settings(var_dir=tmp_path_factory.mktemp("service-var"))


async def _wipe_service_users(database: Any) -> None:
    from sqlalchemy import delete

    from core.admin_audit import AdminChange
    from core.models import User

    async with database.transaction() as session:
        await session.execute(delete(AdminChange))
        await session.execute(delete(User).where(User.username.startswith(SERVICE_USERS)))


@pytest_asyncio.fixture
async def service_db(db_url: str) -> AsyncIterator[Any]:
    """A migrated database (both backends) with the call centre unit, an admin ``svc_admin``, and no audit
    rows or service-test users left from before."""
    from sqlalchemy import select

    from core.db import Database
    from core.models import Role, Unit, User

    database = Database(db_url)
    await _wipe_service_users(database)
    async with database.transaction() as session:
        if await session.scalar(select(Unit).where(Unit.code == "callcentre")) is None:
            session.add(Unit(code="callcentre", name="热线中心", level="call_centre", path="/"))
        session.add(User(username=f"{SERVICE_USERS}_admin", display_name="管理员", password_hash="-", role=Role.ADMIN))
    yield database
    await _wipe_service_users(database)
    await database.close()
