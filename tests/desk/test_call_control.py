"""Desk call control on a live call through the real Asterisk: hold, resume, blind and attended transfer."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import select

from cli.democall import citizen_speech, originate_citizen
from core.models import User
from core.vocabulary import AgentState
from cti.models import CallRecord
from sipdrivers.phones import SippPhone
from tests.desk.http_client import Desk

pytestmark = pytest.mark.stack


async def _channels(ami) -> list[dict]:
    reply = await ami.action({"Action": "CoreShowChannels"}, as_list=True)
    return [dict(m) for m in reply if m.get("Event") == "CoreShowChannel"]


async def _channel_of(ami, phone: str) -> dict | None:
    return next((c for c in await _channels(ami) if c["Channel"].startswith(f"PJSIP/{phone}-")), None)


@contextlib.asynccontextmanager
async def agents_1_and_3(stack):
    """agent1 on 8001 (ready, takes the queue call) and agent3 on 8003 (logged in, paused), both on SIPp phones."""
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
        yield first, second
    finally:
        for desk in (first, second):
            await desk.post("/api/desk/state", {"action": "logout"})
            await desk.close()
        for phone in phones:
            phone.stop()


async def _citizen_talking_to_agent1(stack, ami, waiter):
    speech = citizen_speech(stack.settings, "demo-complaint")
    call = await originate_citizen(ami, "12301", keys="0", caller="13755556666", hold_seconds=45,
                                   speech_path=speech, delay_seconds=5)
    agent1 = await waiter(lambda: _bridged(ami, "8001"), timeout=40, what="agent1 talking to the citizen")
    citizen_channel = next(c["Channel"] for c in await _channels(ami)
                           if c.get("BridgeId") == agent1["BridgeId"] and c["Channel"] != agent1["Channel"])
    return call, citizen_channel


async def _agent_state(desk, state: str) -> bool:
    status, body = await desk.get_json("/api/desk/state")
    return status == 200 and body["state"] == state


async def _closed_record(db, waiter, call_id: str) -> CallRecord:
    async def closed():
        async with db.session() as session:
            row = await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))
        return row if row and row.ended_at else None

    return await waiter(closed, timeout=60, what="the call to end")


async def test_agent_holds_resumes_and_transfers_a_live_call_from_the_desk(stack, ami, db, waiter, no_agents):
    async with agents_1_and_3(stack) as (first, _second):
        status, body = await first.post("/api/desk/call/hold", {})
        assert status == 409 and body["error"] == "当前没有进行中的通话"
        call, _citizen = await _citizen_talking_to_agent1(stack, ami, waiter)

        assert (await first.post("/api/desk/call/hold", {}))[0] == 200
        await waiter(lambda: _in_context(ami, "desk-hold", "citizen", "MusicOnHold"),
                     what="the citizen hearing music on hold")

        assert (await first.post("/api/desk/call/resume", {}))[0] == 200
        await waiter(lambda: _bridged(ami, "8001"), what="the call resumed")

        assert (await first.post("/api/desk/call/transfer", {"target": "8003", "mode": "blind"}))[0] == 200
        # The held call left Queue()'s bridge, so Asterisk sends no AgentComplete for it: agent1 must still
        # go to 话后整理 when their leg ends, then be ready again (not stay 通话中).
        await waiter(lambda: _agent_state(first, AgentState.WRAPUP), timeout=20, what="agent1 in wrap-up")
        await waiter(lambda: _bridged(ami, "8003"), timeout=20, what="agent3 talking to the citizen")
        await waiter(lambda: _agent_state(first, AgentState.READY), timeout=30, what="agent1 ready again")
        record = await _closed_record(db, waiter, call.call_id)
    assert record.agent_extension == "8001" and not record.abandoned
    assert [t["kind"] for t in record.transfers] == ["blind"]
    assert record.hold_seconds > 0
    talk_span = (record.ended_at - record.answered_at).total_seconds()
    assert 0 < record.talk_seconds <= talk_span - record.hold_seconds + 0.01  # hold is not talk, one figure
    assert record.recording_file  # one recording across hold and transfer (MixMonitor rides the citizen leg)


async def test_attended_transfer_consults_can_be_cancelled_then_completes_to_the_colleague(
        stack, ami, db, waiter, no_agents):
    async with agents_1_and_3(stack) as (first, _second):
        call, citizen = await _citizen_talking_to_agent1(stack, ami, waiter)
        status, body = await first.post("/api/desk/call/complete", {})
        assert status == 409 and body["error"] == "当前没有进行中的咨询转接"

        # Consult agent3 while the citizen waits; then think better of it and go back to the citizen.
        assert (await first.post("/api/desk/call/transfer", {"target": "8003", "mode": "attended"}))[0] == 200
        await waiter(lambda: _consulting(ami, "8001", "8003", citizen), timeout=20, what="agent1 consulting agent3")
        assert (await first.post("/api/desk/call/cancel", {}))[0] == 200
        await waiter(lambda: _gone(ami, "8003"), timeout=20, what="agent3's consultation leg to end")
        await waiter(lambda: _in_bridge_with(ami, "8001", citizen), timeout=20, what="agent1 back with the citizen")

        # Consult again and hand the citizen over. Straight after a cancel Asterisk may drop the transfer
        # code; the desk then says so in plain words and the agent simply tries again.
        for _attempt in range(3):
            status, body = await first.post("/api/desk/call/transfer", {"target": "8003", "mode": "attended"})
            if status == 200:
                break
            assert body["error"] == "咨询转接未能发起，请稍后再试", body
        assert status == 200
        await waiter(lambda: _consulting(ami, "8001", "8003", citizen), timeout=20, what="agent1 consulting agent3")
        assert (await first.post("/api/desk/call/complete", {}))[0] == 200
        await waiter(lambda: _gone(ami, "8001"), timeout=20, what="agent1 to leave the call")
        await waiter(lambda: _in_bridge_with(ami, "8003", citizen), timeout=20, what="agent3 talking to the citizen")
        record = await _closed_record(db, waiter, call.call_id)
    assert record.agent_extension == "8001" and not record.abandoned
    assert [t["kind"] for t in record.transfers] == ["attended"]
    talk_span = (record.ended_at - record.answered_at).total_seconds()
    assert 0 < record.talk_seconds <= talk_span + 0.01  # one talk figure, not agent1's plus agent3's
    assert record.recording_file


async def _bridged(ami, phone: str) -> dict | None:
    channels = await _channels(ami)
    mine = next((c for c in channels if c["Channel"].startswith(f"PJSIP/{phone}-")), None)
    if mine and mine.get("BridgeId"):
        peers = [c for c in channels if c.get("BridgeId") == mine["BridgeId"] and c is not mine]
        return mine if peers else None
    return None


async def _in_context(ami, context: str, exten: str, application: str) -> dict | None:
    return next((c for c in await _channels(ami) if (c.get("Context"), c.get("Exten"), c.get("Application"))
                 == (context, exten, application)), None)




async def _in_bridge_with(ami, phone: str, channel: str) -> bool:
    """The channel shares a bridge with the phone's leg, or with the Local channel dialling the phone."""
    channels = await _channels(ami)
    other = next((c for c in channels if c["Channel"] == channel and c.get("BridgeId")), None)
    if other is None:
        return False
    return any(c.get("BridgeId") == other["BridgeId"] and c["Channel"].startswith((f"PJSIP/{phone}-",
                                                                                   f"Local/{phone}@"))
               for c in channels)


async def _consulting(ami, agent: str, colleague: str, citizen: str) -> bool:
    """Agent and colleague talk (the colleague's phone answered); the citizen waits outside their call."""
    channels = await _channels(ami)
    mine = next((c for c in channels if c["Channel"].startswith(f"PJSIP/{agent}-") and c.get("BridgeId")), None)
    theirs = await _bridged(ami, colleague)
    if mine is None or theirs is None or not any(c["Channel"] == citizen for c in channels):
        return False
    return any(c.get("BridgeId") == mine["BridgeId"] and colleague in c["Channel"] for c in channels) \
        and not await _in_bridge_with(ami, agent, citizen)


async def _gone(ami, phone: str) -> bool:
    return await _channel_of(ami, phone) is None



async def test_team_lead_listens_whispers_and_barges_on_an_agents_live_call(stack, ami, db, waiter, no_agents):
    lead_extension = stack.settings.sip.lead_extensions[0]
    spies: list[dict] = []
    ami.on_event("ChanSpyStart", lambda _manager, event: spies.append(dict(event)))
    async with db.session() as session:
        agent1 = (await session.scalar(select(User).where(User.username == "agent1"))).id
    lead_phone, lead = SippPhone(stack.settings, lead_extension).start(), Desk(stack.settings.web_url)
    try:
        async with agents_1_and_3(stack) as (first, _second):
            await lead_phone.wait_registered(stack.runtime)
            await lead.login("lead1", stack.settings.secrets["demo_password"])
            assert (await first.post("/api/wallboard/spy", {"agent_id": agent1, "mode": "listen"}))[0] == 403
            status, body = await lead.post("/api/wallboard/spy", {"agent_id": agent1, "mode": "record"})
            assert status == 400 and body["field"] == "mode"
            status, body = await lead.post("/api/wallboard/spy", {"agent_id": agent1, "mode": "listen"})
            assert status == 409 and body["error"] == "该坐席当前没有通话"

            _call, citizen = await _citizen_talking_to_agent1(stack, ami, waiter)
            for mode, options in (("listen", "qE"), ("whisper", "qwE"), ("barge", "qBE")):
                spies.clear()
                status, body = await lead.post("/api/wallboard/spy", {"agent_id": agent1, "mode": mode})
                assert status == 200 and lead_extension in body["message"]
                spying = await waiter(lambda: _spy_channel(ami, lead_extension), timeout=20,
                                      what=f"the lead's phone in ChanSpy ({mode})")
                assert spying["ApplicationData"] == f"PJSIP/8001,{options}"
                started = await waiter(lambda: _async_value(spies), timeout=20, what="ChanSpyStart")
                assert started[0]["SpyerChannel"] == spying["Channel"]
                assert started[0]["SpyeeChannel"].startswith("PJSIP/8001-")  # attached to agent1's live leg
                await ami.action({"Action": "Hangup", "Channel": spying["Channel"]})
                await waiter(lambda: _gone(ami, lead_extension), timeout=20, what="the lead to hang up")
            assert await _bridged(ami, "8001")  # the agent's call went on undisturbed
            await ami.action({"Action": "Hangup", "Channel": citizen})
    finally:
        await lead.close()
        lead_phone.stop()


async def _spy_channel(ami, phone: str) -> dict | None:
    channel = await _channel_of(ami, phone)
    return channel if channel and channel.get("Application") == "ChanSpy" else None


async def _async_value(value):
    return value
