"""Desk call control on a live call through the real Asterisk: hold, resume, blind transfer to a colleague."""

from __future__ import annotations

import re

import aiohttp
import pytest
from sqlalchemy import select

from cli.democall import citizen_speech, originate_citizen
from cti.models import CallRecord
from tests.sipp import SippPhone

pytestmark = pytest.mark.stack


class Desk:
    """An agent's desk session over HTTP, as the page's JavaScript uses it (cookie + CSRF header)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies for 127.0.0.1
        self.csrf = ""

    async def login(self, username: str, password: str) -> None:
        async with self.http.get(f"{self.base}/login") as resp:
            token = re.search(r'name="_csrf" value="([^"]+)"', await resp.text()).group(1)
        async with self.http.post(f"{self.base}/login", data={"_csrf": token, "username": username,
                                                              "password": password, "next": "/desk"}) as resp:
            page = await resp.text()
        self.csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        async with self.http.post(f"{self.base}{path}", json=body, headers={"X-CSRF-Token": self.csrf}) as resp:
            return resp.status, await resp.json()

    async def close(self) -> None:
        await self.http.close()


async def _channels(ami) -> list[dict]:
    reply = await ami.action({"Action": "CoreShowChannels"}, as_list=True)
    return [dict(m) for m in reply if m.get("Event") == "CoreShowChannel"]


async def _channel_of(ami, phone: str) -> dict | None:
    return next((c for c in await _channels(ami) if c["Channel"].startswith(f"PJSIP/{phone}-")), None)


async def test_agent_holds_resumes_and_transfers_a_live_call_from_the_desk(stack, ami, db, waiter, no_agents):
    password = stack.settings.secrets["demo_password"]
    phones = [SippPhone(stack.settings, "8001").start(), SippPhone(stack.settings, "8003").start()]
    first, second = Desk(stack.settings.web_url), Desk(stack.settings.web_url)
    try:
        for phone in phones:
            await phone.wait_registered(stack.runtime)
        await first.login("agent1", password)
        await second.login("agent3", password)
        assert (await first.post("/api/desk/state", {"action": "login", "phone": "8001"}))[0] == 200
        assert (await second.post("/api/desk/state", {"action": "login", "phone": "8003"}))[0] == 200
        assert (await first.post("/api/desk/state", {"action": "ready"}))[0] == 200  # only agent1 takes queue calls

        status, body = await first.post("/api/desk/call/hold", {})
        assert status == 409 and body["error"] == "当前没有进行中的通话"

        speech = citizen_speech(stack.settings, "demo-complaint")
        call = await originate_citizen(ami, "12301", keys="0", caller="13755556666", hold_seconds=45,
                                       speech_path=speech, delay_seconds=5)
        await waiter(lambda: _bridged(ami, "8001"), timeout=40, what="agent1 talking to the citizen")

        assert (await first.post("/api/desk/call/hold", {}))[0] == 200
        held = await waiter(lambda: _in_context(ami, "desk-hold", "citizen"), what="the citizen on hold")
        assert held["Application"] == "MusicOnHold"

        assert (await first.post("/api/desk/call/resume", {}))[0] == 200
        await waiter(lambda: _bridged(ami, "8001"), what="the call resumed")

        assert (await first.post("/api/desk/call/transfer", {"target": "8003", "mode": "blind"}))[0] == 200
        await waiter(lambda: _bridged(ami, "8003"), timeout=20, what="agent3 talking to the citizen")

        async def closed():
            async with db.session() as session:
                row = await session.scalar(select(CallRecord).where(CallRecord.call_id == call.call_id))
            return row if row and row.ended_at else None

        record = await waiter(closed, timeout=60, what="the call to end")
    finally:
        for desk in (first, second):
            await desk.post("/api/desk/state", {"action": "logout"})
            await desk.close()
        for phone in phones:
            phone.stop()
    assert record.agent_extension == "8001" and not record.abandoned
    assert [t["kind"] for t in record.transfers] == ["blind"]
    assert record.hold_seconds > 0
    talk_span = (record.ended_at - record.answered_at).total_seconds()
    assert 0 < record.talk_seconds <= talk_span - record.hold_seconds + 0.01  # hold is not talk, one figure
    assert record.recording_file  # one recording across hold and transfer (MixMonitor rides the citizen leg)


async def _bridged(ami, phone: str) -> dict | None:
    channels = await _channels(ami)
    mine = next((c for c in channels if c["Channel"].startswith(f"PJSIP/{phone}-")), None)
    if mine and mine.get("BridgeId"):
        peers = [c for c in channels if c.get("BridgeId") == mine["BridgeId"] and c is not mine]
        return mine if peers else None
    return None


async def _in_context(ami, context: str, exten: str) -> dict | None:
    return next((c for c in await _channels(ami) if c.get("Context") == context and c.get("Exten") == exten), None)


