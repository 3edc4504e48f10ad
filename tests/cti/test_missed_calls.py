"""漏接电话回拨 end to end (issue 16 item 5): SIPp citizens abandon in the queue (twice, the same number) and in
the IVR, one hangs up at once (a misdial under the threshold); the CTI makes one callback task per number and
day, an agent works one from the desk with the once-only outbound call (a SIPp citizen answers on the carrier),
and the wallboard's abandoned list shows each task's outcome.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from core.models import User
from cti import control
from cti.models import CallbackRequest, CallbackStatus, CallRecord
from sipdrivers.carrier import carrier_answering, run_citizen_calls
from sipdrivers.phones import SippPhone, free_udp_block
from tests.cti.test_queue_calls_sip import _speech
from tests.desk.http_client import Desk

pytestmark = pytest.mark.stack

IN_QUEUE, IN_IVR, MISDIAL = "13766600001", "13766600002", "13766600003"


def _calls(stack, callers: list[str], speech, keys: str, hold_ms: int, delay_ms: int):
    carrier = stack.settings.sip.carrier_address
    port = free_udp_block(carrier)
    return run_citizen_calls(stack.settings, "12301", keys, callers, speech, hold_ms=hold_ms, delay_ms=delay_ms,
                             local_port=port, extra=["-mp", str(port + 10)], timeout=90)


async def _records(db, caller: str) -> list[CallRecord]:
    async with db.session() as session:
        return list((await session.scalars(select(CallRecord).where(CallRecord.caller_number == caller)
                                           .order_by(CallRecord.started_at))).all())


async def _tasks(db, number: str) -> list[CallbackRequest]:
    async with db.session() as session:
        return list((await session.scalars(select(CallbackRequest).where(CallbackRequest.number == number))).all())


async def test_missed_calls_become_one_callback_task_per_number_worked_from_the_desk_and_shown_on_the_wallboard(
        stack, ami, db, redis, waiter, tmp_path, no_agents):
    speech = _speech(tmp_path, stack)
    async with db.session() as session:
        agent = await session.scalar(select(User).where(User.username == "agent1"))
    with SippPhone(stack.settings, "8001") as phone:
        await phone.wait_registered(stack.runtime)
        # Logged in but paused: queued callers wait (and give up) instead of going to voicemail.
        await control.agent_login(ami, redis, agent, "8001")
        try:
            results = await asyncio.gather(
                # Key 0, then hangs up after some seconds in the queue; the same number twice.
                asyncio.to_thread(_calls, stack, [IN_QUEUE, IN_QUEUE], speech, "0", 8000, 3000),
                asyncio.to_thread(_calls, stack, [IN_IVR], speech, "", 7000, 0),  # leaves in the main menu
                asyncio.to_thread(_calls, stack, [MISDIAL], speech, "", 0, 0),    # hangs up at once
            )
            for result in results:
                assert result.returncode == 0 and result.failed == 0, result.output

            async def ended():
                rows = {c: await _records(db, c) for c in (IN_QUEUE, IN_IVR, MISDIAL)}
                counts = {IN_QUEUE: 2, IN_IVR: 1, MISDIAL: 1}
                done = all(len(rows[c]) == n and all(r.ended_at for r in rows[c]) for c, n in counts.items())
                return rows if done else None

            records = await waiter(ended, timeout=40, what="the call records closed")
            assert all(r.abandoned and r.queued_at for r in records[IN_QUEUE])  # the queue's own verdict
            assert records[IN_IVR][0].queued_at is None and not records[IN_IVR][0].answered_at

            queue_tasks, ivr_tasks = await _tasks(db, IN_QUEUE), await _tasks(db, IN_IVR)
            assert len(queue_tasks) == 1 and len(ivr_tasks) == 1, (queue_tasks, ivr_tasks)
            assert await _tasks(db, MISDIAL) == []  # under the 5 s threshold: a misdial, not a missed call
            task = queue_tasks[0]
            assert task.source == "missed" and task.status == CallbackStatus.PENDING and task.hotline == "12301"
            assert task.call_id == records[IN_QUEUE][0].call_id and "再次漏接" in task.note
            assert "排队中放弃" in task.note and "语音导航中挂机" in ivr_tasks[0].note

            desk = Desk(stack.settings.web_url)
            lead = Desk(stack.settings.web_url)
            carrier = carrier_answering(stack.settings)
            try:
                await desk.login("agent1", stack.settings.secrets["demo_password"])
                body = {"number": IN_QUEUE, "callback_id": task.id, "hotline": "12301"}
                status, reply = await desk.post("/api/desk/call/callback", body)
                assert status == 200, reply

                async def talking():
                    row = (await _tasks(db, IN_QUEUE))[0]
                    calls = await _records(db, IN_QUEUE)
                    out = [c for c in calls if c.call_id == row.outbound_call_id and c.answered_at]
                    return out[0] if out else None

                outbound = await waiter(talking, timeout=60, what="agent and citizen connected")
                status, reply = await desk.post("/api/desk/call/callback", body)  # once only
                assert status == 409, reply
                status, reply = await desk.post("/api/desk/call/hangup", {})
                assert status == 200, reply

                async def finished():
                    row = (await _tasks(db, IN_QUEUE))[0]
                    return row if row.status == CallbackStatus.DONE else None

                done = await waiter(finished, timeout=40, what="the callback task done")
                assert carrier.wait(timeout=30) == 0, carrier.stderr.read().decode()[-500:]  # dialled once
                assert done.attempts == 1 and done.agent_id == agent.id
                assert outbound.direction == "outbound" and outbound.recording_file

                await lead.login("lead1", stack.settings.secrets["demo_password"], next_url="/wallboard")
                status, board = await lead.get_json("/api/wallboard")
                assert status == 200
                rows = {}
                for row in board["abandoned"]:
                    rows.setdefault(row["caller"], []).append(row["callback"])
                assert rows[IN_QUEUE] == ["已回拨", "已回拨"]  # both calls of the number: its one task
                assert rows[IN_IVR] == ["待回拨"] and MISDIAL not in rows
            finally:
                if carrier.poll() is None:
                    carrier.kill()
                await desk.close()
                await lead.close()
        finally:
            await control.agent_logout(ami, redis, agent)
