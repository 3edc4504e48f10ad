"""Issue 12 items 2, 10, 13 and issue 13 item 5 on the real stack: Redis and AMI users, the bench-only echo
DID, and the desk through Redis restarts."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import re
import signal
import stat
import time

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from cli.democall import originate_citizen
from cli.stack import supervisorctl
from core.ami import AmiClient, ami_username
from core.redis import SERVICES, connect, username

# --- Redis: a password for everyone, each service its own commands ---------------------------------------


async def test_the_stacks_redis_refuses_a_client_without_a_password(stack):
    anonymous = aioredis.Redis(host="127.0.0.1", port=stack.settings.redis.port)
    try:
        with pytest.raises((redis_errors.AuthenticationError, redis_errors.ResponseError)):
            await anonymous.keys("*")
    finally:
        await anonymous.aclose()
    wrong = aioredis.Redis(host="127.0.0.1", port=stack.settings.redis.port,
                           username=username("agent_desk"), password="not-the-password")
    try:
        with pytest.raises(redis_errors.AuthenticationError):
            await wrong.ping()
    finally:
        await wrong.aclose()
    command_line = " ".join(p.read_text() for p in _redis_cmdlines())
    assert "hotline-" not in command_line and all(
        stack.settings.secrets[f"redis_{s}"] not in command_line for s in SERVICES)  # `ps` shows no password


def _redis_cmdlines():
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        cmdline = proc / "cmdline"
        with contextlib.suppress(OSError):
            if b"redis-server" in cmdline.read_bytes():
                yield cmdline


async def test_no_service_was_refused_a_command_it_needs_and_none_may_administer_redis(stack, redis):
    """ACL LOG is Redis's own record of every refused command: by this point the session's earlier tests
    (calls, desk, recordings) have run with the services' own users."""
    await asyncio.sleep(3)  # a few heartbeats and metric flushes of every service
    log = [_entry(e) for e in await redis.execute_command("ACL", "LOG")]
    # "auth" entries are the failed log-ins of the test above; a refused command or key is "command"/"key".
    refused = [e for e in log if e.get("reason") != "auth" and e.get("username") != username("tools")]
    assert not refused, refused
    for service in ("ivr", "cti", "agent_desk", "recordings"):
        client = connect(stack.settings, service)
        try:
            for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("SHUTDOWN",), ("ACL", "LIST"),
                            ("GET", "hotline:web:session:x" if service != "agent_desk" else "other:x")):
                with pytest.raises(redis_errors.NoPermissionError):
                    await client.execute_command(*command)
        finally:
            await client.aclose()


def _entry(raw) -> dict:
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=False))


# --- AMI: each process its own account ---------------------------------------------------------------------


async def _reply(client: AmiClient, action: dict) -> dict:
    reply = await client.action(action)
    return reply[0] if isinstance(reply, list) else reply


async def test_the_ctis_ami_account_may_not_run_cli_commands_or_touch_the_configuration(stack):
    client = AmiClient(stack.settings, "cti", events="off")
    await client.connect()
    try:
        for action in ({"Action": "Command", "Command": "core show version"},
                       {"Action": "GetConfig", "Filename": "manager.conf"},
                       {"Action": "UpdateConfig", "SrcFilename": "manager.conf", "DstFilename": "manager.conf"},
                       {"Action": "Reload"}, {"Action": "ModuleLoad", "Module": "app_system.so", "LoadType": "load"}):
            reply = await _reply(client, action)
            assert reply.get("Response") == "Error" and "ermission" in str(reply.get("Message")), (action, reply)
        # What it does need still works.
        assert (await _reply(client, {"Action": "CoreShowChannels"})).get("Response") == "Success"
    finally:
        await client.close()


async def test_the_desk_has_no_ami_account_and_holds_no_ami_connection(stack, ami):
    """The CTI carries out the desk's call control (issue 14 item 1): manager.conf names no desk user and
    Asterisk sees no manager session from the desk process."""
    manager_conf = stack.asterisk_path(stack.runtime.inside("etc", "manager.conf")).read_text()
    users = re.findall(r"^\[([^\]]+)\]", manager_conf, re.M)
    assert "general" in users and not [u for u in users if "desk" in u], users
    reply = await ami.action({"Action": "Command", "Command": "manager show connected"})
    connected = "\n".join(str(m.get("Output", "")) for m in (reply if isinstance(reply, list) else [reply]))
    assert ami_username(stack.settings, "cti") in connected, connected  # the listing is read right
    assert f"{stack.settings.ami.username}-desk" not in connected, connected


async def test_a_carrier_call_to_the_bench_echo_did_10000_is_refused_on_a_normal_stack(stack, ami, waiter):
    call = await originate_citizen(ami, "10000", caller="13800009999", hold_seconds=3, delay_seconds=0)
    master = stack.asterisk_path(stack.runtime.inside("log", "cdr-csv", "Master.csv"))

    async def cdr_row():
        if not master.exists():
            return None
        with master.open(newline="") as f:
            return next((row for row in csv.reader(f) if call.call_id in row), None)

    row = await waiter(cdr_row, timeout=30, what="the CDR of the call to 10000")
    dst, context, last_app, disposition = row[2], row[3], row[7], row[14]
    assert (dst, context) == ("10000", "from-carrier"), row
    assert last_app == "Hangup" and disposition != "ANSWERED", row  # the unallocated-DID branch, never Echo()
    assert "10000" not in stack.runtime.rx("dialplan show 10000@from-carrier").split("=>")[0]


def test_bench_stacks_still_switch_the_echo_did_on():
    from bench.capacity import CAPACITY_SETTINGS
    from bench.live import BENCH_SETTINGS

    assert BENCH_SETTINGS["HOTLINE_ASTERISK_BENCH_ECHO"] == CAPACITY_SETTINGS["HOTLINE_ASTERISK_BENCH_ECHO"] == "true"


# --- the desk across Redis restarts -------------------------------------------------------------------------


class Probe:
    """A logged-in agent and a stream of fresh log-ins, recording every HTTP status the desk answers."""

    def __init__(self, stack) -> None:
        self.base = stack.settings.web_url
        self.password = stack.settings.secrets["demo_password"]
        self.statuses: list[tuple[float, str, int, str]] = []
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def _note(self, what: str, response: aiohttp.ClientResponse) -> int:
        body = await response.text()
        self.statuses.append((time.monotonic(), what, response.status, body[:200]))
        return response.status

    async def login(self, http: aiohttp.ClientSession) -> int:
        async with http.get(f"{self.base}/login") as resp:
            page = await resp.text()
            if resp.status != 200:
                return await self._note("login page", resp)
        token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
        async with http.post(f"{self.base}/login", allow_redirects=False,
                             data={"_csrf": token, "username": "agent2", "password": self.password}) as resp:
            return await self._note("login", resp)

    async def session_lookup(self) -> int:
        async with self.http.get(f"{self.base}/api/tickets?page_size=1", allow_redirects=False) as resp:
            return await self._note("session", resp)

    async def fresh_login(self) -> int:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            return await self.login(http)

    async def hammer(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError):
                await asyncio.gather(self.session_lookup(), self.fresh_login())
            await asyncio.sleep(0.05)

    def errors(self) -> list:
        return [s for s in self.statuses if s[2] >= 500 and s[2] != 503]


def _redis_pid(stack) -> int:
    out = supervisorctl(stack.settings, "pid", "redis").stdout.strip()
    return int(out) if out.isdigit() else 0


@pytest.mark.parametrize("how", ["supervisorctl restart", "SIGKILL"])
async def test_the_desk_answers_at_once_after_redis_restarts_and_never_500(stack, waiter, how):
    probe = Probe(stack)
    try:
        assert await probe.login(probe.http) == 302
        assert await probe.session_lookup() == 200
        stop = asyncio.Event()
        hammering = asyncio.create_task(probe.hammer(stop))
        await asyncio.sleep(1)
        old_pid = _redis_pid(stack)
        if how == "SIGKILL":
            os.kill(old_pid, signal.SIGKILL)
            await waiter(lambda: asyncio.to_thread(lambda: _redis_pid(stack) not in (0, old_pid)), timeout=30,
                         what="supervisord to start redis-server again")
        else:
            result = await asyncio.to_thread(supervisorctl, stack.settings, "restart", "redis")
            assert "started" in result.stdout, result.stdout + result.stderr
        back = time.monotonic()
        await waiter(lambda: asyncio.to_thread(_redis_answers, stack), timeout=30, what="Redis to answer")
        # Redis is back: the very next session lookup and log-in succeed, on the pooled connections too.
        assert await probe.session_lookup() == 200, probe.statuses[-3:]
        assert await probe.fresh_login() == 302, probe.statuses[-3:]
        await asyncio.sleep(2)
        stop.set()
        await hammering
        after = [s for s in probe.statuses if s[0] > back + 1]
        assert after and all(s[2] in (200, 302) for s in after), [s for s in after if s[2] not in (200, 302)]
        assert not probe.errors(), probe.errors()
        for _t, _what, status, body in probe.statuses:
            if status == 503:
                assert "稍后重试" in body, body  # while Redis is really down: a Chinese 503
    finally:
        await probe.http.close()


def _redis_answers(stack) -> bool:
    from core.redis import connect_sync

    try:
        client = connect_sync(stack.settings)
        return bool(client.ping())
    except redis_errors.RedisError:
        return False


# --- file modes: nothing for other local users ----------------------------------------------------------


def _exposed(root) -> list[str]:
    """Files or folders below ``root`` that other users may read, write or enter (links are not followed)."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name in (".", *dirs, *files):
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o007:
                found.append(f"{oct(st.st_mode & 0o7777)} {path}")
    return found


async def test_no_data_file_is_readable_by_other_users_after_up_and_after_a_recording_is_filed(
        stack, ami, db, waiter):
    from sqlalchemy import select

    from recordings.models import Recording

    roots = [stack.settings.var_dir, stack.settings.recordings_dir, stack.runtime.host_instance_dir]
    assert not [p for root in roots for p in _exposed(root)]
    call = await originate_citizen(ami, "12301", caller="13800007777", hold_seconds=8, delay_seconds=1)

    async def filed():
        async with db.session() as session:
            row = await session.scalar(select(Recording).where(Recording.call_id == call.call_id))
            return row if row and row.sha256 else None

    row = await waiter(filed, timeout=90, what="the call's recording to be filed")
    await _upload_evidence(stack)
    stored = stack.settings.recordings_dir / row.path
    assert stored.exists() and stored.stat().st_mode & 0o077 in (0, 0o040), oct(stored.stat().st_mode)
    cdr = stack.asterisk_path(stack.runtime.inside("log", "cdr-csv", "Master.csv"))
    assert cdr.exists()
    exposed = [p for root in roots for p in _exposed(root)]
    assert not exposed, exposed


async def _upload_evidence(stack) -> None:
    """A complaint registered at the desk and a piece of evidence filed by the unit handling it."""
    from tests.desk.test_call_control import Desk
    from tests.desk.test_pages import complaint

    password = stack.settings.secrets["demo_password"]
    agent, unit = Desk(stack.settings.web_url), Desk(stack.settings.web_url)
    try:
        await agent.login("agent1", password)
        status, ticket = await agent.post("/api/tickets", complaint())
        assert status == 201, ticket
        await unit.login("th_handler", password)
        form = aiohttp.FormData()
        form.add_field("file", b"%PDF-1.4\n" + bytes(range(256)) * 4, filename="合同.pdf",
                       content_type="application/pdf")
        async with unit.http.post(f"{unit.base}/api/tickets/{ticket['number']}/evidence", data=form,
                                  headers={"X-CSRF-Token": unit.csrf}) as resp:
            assert resp.status == 201, await resp.text()
    finally:
        await agent.close()
        await unit.close()
