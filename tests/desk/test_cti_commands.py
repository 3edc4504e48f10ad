"""The desk's commands to the CTI (issue 14 item 1): the CTI is the one writer of agent state and the one
AMI user for call control; the desk asks over the command channel (cti.protocol) and reads cti.read."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from sqlalchemy import select

from cli.stack import supervisorctl
from core.models import User
from core.service import heartbeat_key
from cti import protocol, read
from tests.desk.http_client import Desk

pytestmark = pytest.mark.stack


async def _members(ami, username: str) -> dict[str, dict]:
    """Asterisk's own view: the queue members named after ``username``, by phone."""
    reply = await ami.action({"Action": "QueueStatus"}, as_list=True, timeout=10)
    found: dict[str, dict] = {}
    for m in reply:
        if m.get("Event") == "QueueMember" and f"({username})" in str(m.get("Name") or m.get("MemberName")):
            found.setdefault(re.sub(r"^PJSIP/", "", m.get("StateInterface") or m.get("Location")), dict(m))
    return found


async def _agent_id(db, username: str) -> int:
    async with db.session() as session:
        return (await session.scalar(select(User).where(User.username == username))).id


async def test_with_the_cti_stopped_a_desk_command_is_refused_in_chinese_in_time_and_never_done_later(
        stack, ami, db, redis, waiter, no_agents):
    desk = Desk(stack.settings.web_url)
    agent1 = await _agent_id(db, "agent1")
    try:
        await desk.login("agent1", stack.settings.secrets["demo_password"])
        supervisorctl(stack.settings, "stop", "cti")
        try:
            # Just stopped: its heartbeat has not run out yet, so the desk sends and waits for a pickup.
            await redis.set(heartbeat_key("cti"), str(time.time()), ex=30)
            started = time.monotonic()
            status, body = await desk.post("/api/desk/state", {"action": "login", "phone": "8001"})
            waited = time.monotonic() - started
            assert status == 503 and body["error"] == "电话系统（CTI）3 秒内未响应，操作未执行，请稍后重试", body
            assert waited < protocol.PICKUP_SECONDS + protocol.EXECUTION_SECONDS, waited
            sent = await redis.xrevrange(protocol.COMMANDS, count=1)
            command_id = sent[0][1]["id"]
            assert json.loads(sent[0][1]["args"]) == {"agent_id": agent1, "action": "login", "phone": "8001"}
            # Once its heartbeat is gone the desk does not even send.
            await redis.delete(heartbeat_key("cti"))
            status, body = await desk.post("/api/desk/call/callback", {"number": "13800000001"})
            assert status == 409 and body["error"] == "请先使用分机登录"  # read from the CTI's state: no CTI needed
            status, body = await desk.post("/api/desk/state", {"action": "ready"})
            assert status == 503 and body["error"] == "电话系统（CTI）未运行，请稍后重试或联系管理员", body
            assert (await redis.xrevrange(protocol.COMMANDS, count=1))[0][1]["id"] == command_id
        finally:
            supervisorctl(stack.settings, "start", "cti")
        # The CTI, back, finds the login it was too late for and leaves it undone.
        await waiter(lambda: _logged(stack, "command_abandoned", command_id), timeout=60,
                     what="the restarted CTI to drop the abandoned command")
        assert await _members(ami, "agent1") == {}
        assert not (await read.agent_session(redis, agent1)).logged_in
        assert await redis.hget(read.AGENT_BY_PHONE, "8001") is None
        # And carries out the next one.
        await waiter(lambda: _cti_ready(redis), timeout=60, what="the CTI taking commands")
        status, body = await desk.post("/api/desk/state", {"action": "login", "phone": "8001"})
        assert status == 200 and body["state"] == "paused" and body["phone"] == "8001", body
        assert set(await _members(ami, "agent1")) == {"8001"}
    finally:
        await desk.post("/api/desk/state", {"action": "logout"})
        await desk.close()


async def _logged(stack, event: str, command_id: str) -> bool:
    return any(event in line and command_id in line for line in stack.log("cti").splitlines())


async def _cti_ready(redis) -> bool:
    return await protocol.cti_problem(redis) is None


async def test_concurrent_commands_for_one_agent_lose_no_update(stack, ami, db, redis, waiter, no_agents):
    """Two tabs of one agent log in on two phones at once, then pause and ready race: the CTI runs one
    agent's commands one after the other, so its session and Asterisk's queue members always agree."""
    await waiter(lambda: _cti_ready(redis), timeout=60, what="the CTI taking commands")
    desk = Desk(stack.settings.web_url)
    agent1 = await _agent_id(db, "agent1")
    try:
        await desk.login("agent1", stack.settings.secrets["demo_password"])
        answers = await asyncio.gather(*(desk.post("/api/desk/state", {"action": "login", "phone": phone})
                                         for phone in ("8001", "8003")))
        won = [body["phone"] for status, body in answers if status == 200]
        lost = [body for status, body in answers if status != 200]
        assert len(won) == 1 and len(lost) == 1, answers
        assert lost[0]["error"] == f"您已在分机 {won[0]} 登录，请先退出", answers
        assert set(await _members(ami, "agent1")) == set(won)  # no second phone left ringing for nobody
        session = await read.agent_session(redis, agent1)
        assert session.phone == won[0] and await redis.hget(read.AGENT_BY_PHONE, won[0]) == str(agent1)

        for reason in ("meeting", "training", "break"):
            answers = await asyncio.gather(desk.post("/api/desk/state", {"action": "pause", "reason": reason}),
                                           desk.post("/api/desk/state", {"action": "ready"}))
            assert [status for status, _ in answers] == [200, 200], answers
            session = await read.agent_session(redis, agent1)
            member = (await _members(ami, "agent1"))[won[0]]
            paused_in_asterisk = member["Paused"] == "1"
            assert (session.state == "paused") == paused_in_asterisk, (session, member)
            if paused_in_asterisk:
                assert session.reason == member.get("PausedReason") == reason, (session, member)
        status, body = await desk.post("/api/desk/state", {"action": "logout"})
        assert status == 200 and body["state"] == "offline"
        assert await _members(ami, "agent1") == {}
    finally:
        await desk.post("/api/desk/state", {"action": "logout"})
        await desk.close()
