"""Issue 4 over real SIP: citizens from the carrier through the IVR into a queue, answered by SIPp agents.

Asserts queue delivery, the call records (waits and talk times inside the calls' real durations) and
the screen pops each agent received, then that the books stay right when the CTI dies mid-call.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from core.events import STREAM
from core.models import User
from cti import control
from cti.models import CallRecord
from sipdrivers.carrier import run_citizen_calls, ulaw_from_wav
from sipdrivers.phones import agents_on_phones

pytestmark = pytest.mark.stack


async def _user(db, username: str) -> User:
    async with db.session() as session:
        return await session.scalar(select(User).where(User.username == username))


async def _records(db, callers: list[str]) -> list[CallRecord]:
    async with db.session() as session:
        return list((await session.scalars(select(CallRecord).where(CallRecord.caller_number.in_(callers))
                                           .order_by(CallRecord.started_at))).all())


@pytest.fixture
async def two_agents(stack, ami, db, redis):
    """agent1 on 8001 and agent3 on 8003, both serving 12301 complaints, registered and ready."""
    async with agents_on_phones(stack.settings, stack.runtime, ami, redis, db,
                                {"agent1": "8001", "agent3": "8003"}) as agents:
        yield agents


def _speech(tmp: Path, stack) -> Path:
    wav = stack.runtime.host_path(stack.runtime.inside("sounds", "demo-complaint.wav"))
    if not wav.exists():
        from cli.democall import citizen_speech

        citizen_speech(stack.settings, "demo-complaint")
    return ulaw_from_wav(wav, tmp / "citizen.ulaw")


def _supervisorctl(stack, *args: str) -> None:
    conf = str(stack.settings.run_dir / "supervisord.conf")
    subprocess.run([".venv/bin/python", "-m", "supervisor.supervisorctl", "-c", conf, *args],
                   check=True, capture_output=True)


async def _pops_since(redis, since_id: str) -> list[dict]:
    entries = await redis.xrange(STREAM, min=since_id)
    return [{"id": eid, **json.loads(f["data"]), "agent": f.get("agent_id")}
            for eid, f in entries if f["name"] == "screen_pop"]


async def test_sip_citizens_reach_registered_agents_with_pops_and_correct_call_records(
        stack, db, redis, two_agents, waiter, tmp_path):
    last = (await redis.xrevrange(STREAM, count=1) or [("0-0", {})])[0][0]
    callers = ["13765400001", "13765400002", "13765400003"]  # numbers no other test calls from
    began = time.time()
    # 2 = complaint, 1 = travel agencies and guides: the 12301-complaint queue. Three calls, one every 2 s,
    # each caller talking 8 s after the keys: with two agents one caller has to wait.
    result = await asyncio.to_thread(run_citizen_calls, stack.settings, "12301", "21", callers,
                                     _speech(tmp_path, stack), hold_ms=14000, delay_ms=4000, rate=0.5)
    elapsed = time.time() - began
    assert result.returncode == 0 and result.failed == 0 and result.successful == 3, result.output

    async def all_closed():
        rows = await _records(db, callers)
        return rows if len(rows) == 3 and all(r.ended_at for r in rows) else None

    records = await waiter(all_closed, timeout=30, what="three closed call records")
    agent_ids = {a.id for a in two_agents}
    pops = await _pops_since(redis, last)
    for record in records:
        assert record.hotline == "12301" and record.queue == "12301-complaint"
        assert record.business == "complaint" and record.category
        assert "main:2" in record.ivr_path
        assert record.answered_at is not None and record.agent_id in agent_ids, record.ivr_path
        assert record.agent_extension in ("8001", "8003")
        duration = (record.ended_at - record.started_at).total_seconds()
        assert duration <= elapsed
        assert 0 <= record.wait_seconds <= (record.answered_at - record.queued_at).total_seconds() + 1
        assert 0 < record.talk_seconds <= (record.ended_at - record.answered_at).total_seconds() + 0.01
        assert not record.abandoned
        mine = [p for p in pops if p["call_id"] == record.call_id]
        assert mine, f"no screen pop for {record.call_id}"
        answered_pop = [p for p in mine if p["agent_id"] == record.agent_id]
        assert answered_pop, "the agent who answered got the pop"
        pop = answered_pop[0]
        assert pop["caller_number"] == record.caller_number and pop["hotline"] == "12301"
        assert pop["draft"]["kind"] == "complaint" and pop["draft"]["call_ref"] == pop["call_ref"] == record.ref
        assert pop["queue"] == "12301-complaint" and pop["waited_seconds"] >= 0
    # Never another agent's pop on someone's desk: each pop names exactly one agent, one of ours.
    assert all(int(p["agent"]) == p["agent_id"] and p["agent_id"] in agent_ids for p in pops)


async def test_call_records_survive_a_cti_crash_in_the_middle_of_calls(stack, db, two_agents, waiter, tmp_path):
    callers = ["13765400011", "13765400012"]
    speech = _speech(tmp_path, stack)
    calls = asyncio.create_task(asyncio.to_thread(
        run_citizen_calls, stack.settings, "12301", "21", callers, speech, hold_ms=12000, delay_ms=4000,
        rate=2, local_port=5064))
    await asyncio.sleep(9)  # both calls are in the IVR or talking to an agent
    _supervisorctl(stack, "stop", "cti")
    try:
        result = await calls  # the calls end while nobody follows them
    finally:
        _supervisorctl(stack, "start", "cti")
    assert result.failed == 0 and result.successful == 2, result.output

    async def reconciled():
        rows = await _records(db, callers)
        return rows if len(rows) == 2 and all(r.ended_at for r in rows) else None

    records = await waiter(reconciled, timeout=40, what="the CTI to reconcile the calls it missed")
    for record in records:
        assert record.source == "reconciled"
        assert record.hotline == "12301"
        assert (record.ended_at - record.started_at).total_seconds() > 10


async def test_agent_states_are_rebuilt_from_asterisk_after_a_cti_restart(stack, ami, redis, two_agents, waiter):
    agent1, agent3 = two_agents
    await control.agent_pause(ami, redis, agent1, "training")
    paused_at = (await control.agent_session(redis, agent1.id))["since"]
    _supervisorctl(stack, "stop", "cti")
    try:
        # While nobody follows: agent3 is paused in Asterisk directly, and Redis loses every agent session.
        await ami.action({"Action": "QueuePause", "Interface": "PJSIP/8003", "Paused": "true", "Reason": "meal"})
        await redis.delete(control.AGENT_SESSIONS, control.AGENT_BY_PHONE)
    finally:
        _supervisorctl(stack, "start", "cti")

    async def rebuilt():
        sessions = [await control.agent_session(redis, a.id) for a in (agent1, agent3)]
        return sessions if all(sessions) else None

    first, third = await waiter(rebuilt, timeout=40, what="the CTI to rebuild the agent sessions from QueueStatus")
    assert (first["state"], first["reason"], first["phone"]) == ("paused", "training", "8001")
    assert sorted(first["queues"]) == sorted(agent1.skill_list)
    assert abs(first["since"] - paused_at) <= 1.5  # time in state survives: Asterisk's LastPause, whole seconds
    assert (third["state"], third["reason"], third["phone"]) == ("paused", "meal", "8003")
    assert await redis.hget(control.AGENT_BY_PHONE, "8001") == str(agent1.id)
