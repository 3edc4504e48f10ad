"""Issue 12 items 1 and 3 through the real stack: a real call through Asterisk, answered by an agent on a
SIPp phone, recorded and filed by the recordings worker; another province's unit then tries to link and
play it through the desk, while the agent and the rightful unit succeed, and every Range form that
plays the real file leaves its playback_log row."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from cli.democall import citizen_speech, originate_citizen
from core import events as ev
from core.models import User
from cti.models import CallRecord
from recordings.models import PlaybackLog, Recording
from sipdrivers.phones import SippPhone
from tests.desk.test_call_control import Desk
from tickets.models import Ticket, TicketCall
from tickets.workflow import CALL_REFUSED

pytestmark = pytest.mark.stack

CALLER = "13755550123"
COMPLAINT = {"kind": "complaint", "hotline": "12301", "description": "导游强迫购物", "complainant_name": "李女士",
             "respondent_name": "某旅行社", "complaint_object": "旅行社及导游领队",
             "event_category": "强迫或变相强迫购物"}


async def _get(desk: Desk, path: str, range_header: str | None = None) -> tuple[int, bytes]:
    headers = {"Range": range_header} if range_header is not None else {}
    async with desk.http.get(f"{desk.base}{path}", headers=headers) as resp:
        return resp.status, await resp.read()


async def _pop_of(redis, call_id: str) -> dict | None:
    for _entry, fields in await redis.xrevrange(ev.STREAM, count=2000):
        data = json.loads(fields.get("data") or "{}")
        if fields.get("name") == ev.ScreenPop.name and data.get("call_id") == call_id:
            return data
    return None


async def test_a_real_recording_is_linked_and_played_only_by_those_who_may_see_the_call(
        stack, ami, db, redis, waiter, no_agents):
    password = stack.settings.secrets["demo_password"]
    phone = SippPhone(stack.settings, "8001").start()
    agent, thief, unit = (Desk(stack.settings.web_url) for _ in range(3))
    try:
        await phone.wait_registered(stack.runtime)
        await agent.login("agent1", password)
        assert (await agent.post("/api/desk/state", {"action": "login", "phone": "8001"}))[0] == 200
        assert (await agent.post("/api/desk/state", {"action": "ready"}))[0] == 200
        call = await originate_citizen(ami, "12301", keys="0", caller=CALLER, hold_seconds=12,
                                       speech_path=citizen_speech(stack.settings, "demo-complaint"),
                                       delay_seconds=5)

        async def ended():
            async with db.session() as session:
                row = await session.scalar(select(CallRecord).where(CallRecord.call_id == call.call_id))
            return row if row and row.ended_at and row.agent_id else None

        record = await waiter(ended, timeout=90, what="the call answered by agent1 and ended")
        pop = await _pop_of(redis, call.call_id)
        assert pop is not None and pop["call_ref"] == record.ref and "call_id" not in pop["draft"]
        assert record.ref != call.call_id and len(record.ref) == 16

        async def filed():
            async with db.session() as session:
                return await session.scalar(select(Recording).where(Recording.call_id == call.call_id,
                                                                    Recording.kind == "call"))

        recording = await waiter(filed, timeout=120, what="the call's recording to be filed")
        audio = (stack.settings.recordings_dir / recording.path).read_bytes()
        assert len(audio) > 1000

        # agent1 registers the complaint from the pop (its reference) and another province's case.
        status, ours = await agent.post("/api/tickets", {**COMPLAINT, "complainant_phone": CALLER,
                                                          "province": "广东省", "city": "广州市", "county": "天河区",
                                                          "call_ids": [record.ref]})
        assert status == 201, ours
        status, theirs = await agent.post("/api/tickets", {**COMPLAINT, "complainant_phone": "13900000009",
                                                            "province": "四川省", "city": "成都市",
                                                            "county": "武侯区"})
        assert status == 201, theirs
        status, body = await agent.post("/api/tickets", {**COMPLAINT, "complainant_phone": CALLER,
                                                          "province": "广东省", "call_ids": [call.call_id]})
        assert (status, body["error"]) == (400, CALL_REFUSED)  # the uniqueid is no longer a user-facing id

        # 四川's unit tries the call by its uniqueid, its neighbour, a guess and the real reference.
        await thief.login("sc_handler", password)
        url = f"/api/tickets/{theirs['number']}/actions"
        answers = [await thief.post(url, {"action": "关联来电", "inputs": {"call_id": guess}})
                   for guess in (call.call_id, call.call_id[:-1] + "x", "1764590000.12", record.ref)]
        assert {(s, b["error"], b.get("field")) for s, b in answers} == {(400, CALL_REFUSED, "call_id")}
        async with db.session() as session:
            assert (await session.scalars(select(TicketCall).join(Ticket).where(
                Ticket.number == theirs["number"]))).all() == []
        assert (await _get(thief, f"/recordings/{recording.id}", "bytes=-1000"))[0] == 403
        assert (await _get(thief, f"/tickets/{ours['number']}"))[0] == 404

        # The unit the complaint is dispatched to sees the reference (never the uniqueid) and plays it.
        await unit.login("th_handler", password)
        status, page = await _get(unit, f"/tickets/{ours['number']}")
        assert status == 200 and record.ref.encode() in page and call.call_id.encode() not in page
        assert await _get(unit, f"/recordings/{recording.id}", "bytes=-1000") == (206, audio[-1000:])
        assert await _get(unit, f"/recordings/{recording.id}", "bytes=00-") == (206, audio)  # same listening
        # agent1 hears their own call; a multi-range request sends nothing and is not a listening.
        assert (await _get(agent, f"/recordings/{recording.id}", "bytes=0-1,5-9"))[0] == 416
        assert await _get(agent, f"/recordings/{recording.id}") == (200, audio)

        async with db.session() as session:
            names = dict((await session.execute(select(User.id, User.username))).all())
            plays = (await session.scalars(select(PlaybackLog).where(PlaybackLog.recording_id == recording.id)
                                           .order_by(PlaybackLog.id))).all()
        assert [(names[p.user_id], p.range_header, p.client_address) for p in plays] == [
            ("th_handler", "bytes=-1000", "127.0.0.1"), ("agent1", "", "127.0.0.1")]
    finally:
        await agent.post("/api/desk/state", {"action": "logout"})
        for desk in (agent, thief, unit):
            await desk.close()
        phone.stop()
