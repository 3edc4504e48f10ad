"""A caller who waited too long asks for a callback; when an agent is free, the agent's phone rings and
the citizen is dialled over the carrier trunk, once; the agent ends the call and the request is done."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cli.democall import originate_citizen
from cti import control
from cti.models import CallbackRequest, CallbackStatus, CallRecord
from tests.sipp import agents_on_phones
from tests.sipp_carrier import carrier_answering

pytestmark = pytest.mark.stack


async def test_callback_rings_the_next_free_agent_then_dials_the_citizen_once(stack, ami, db, redis, waiter,
                                                                              no_agents):
    citizen = "13822223333"
    async with agents_on_phones(stack.settings, stack.runtime, ami, redis, db, {"agent1": "8001"}) as (agent,):
        await control.agent_pause(ami, redis, agent, "break")  # busy elsewhere: the caller waits
        # 0 = an agent; after the 20 s queue limit the caller is offered 1 message / 2 callback, and keys 2.
        await originate_citizen(ami, "12301", keys="0" + "w" * 56 + "2", caller=citizen, hold_seconds=4,
                                delay_seconds=2)

        async def requested():
            async with db.session() as session:
                return await session.scalar(select(CallbackRequest).where(CallbackRequest.number == citizen))

        request = await waiter(requested, timeout=90, what="the callback request")
        assert request.status == CallbackStatus.PENDING and request.source == "queue"
        assert request.queue == "12301-general"

        carrier = carrier_answering(stack.settings)
        try:
            await control.agent_ready(ami, redis, agent)  # the agent is free: the request's turn

            async def talking():
                async with db.session() as session:
                    row = await session.get(CallbackRequest, request.id)
                    call = await session.scalar(select(CallRecord).where(
                        CallRecord.call_id == row.outbound_call_id)) if row.outbound_call_id else None
                return call if call and call.answered_at else None

            await waiter(talking, timeout=60, what="agent and citizen connected")
            await control.hangup(ami, await control.agent_channel(ami, "8001"))  # the agent ends the call

            async def done():
                async with db.session() as session:
                    row = await session.get(CallbackRequest, request.id)
                return row if row.status != CallbackStatus.PENDING and row.status != CallbackStatus.DIALING \
                    else None

            finished = await waiter(done, timeout=90, what="the callback to be dialled and end")
            assert carrier.wait(timeout=30) == 0, carrier.stderr.read().decode()[-500:]
        finally:
            if carrier.poll() is None:
                carrier.kill()
    assert finished.status == CallbackStatus.DONE, finished.note
    assert finished.attempts == 1 and finished.agent_id == agent.id and finished.outbound_call_id
    async with db.session() as session:
        outbound = await session.scalar(select(CallRecord).where(CallRecord.call_id == finished.outbound_call_id))
    assert outbound.direction == "outbound" and outbound.caller_number == citizen
    assert outbound.answered_at is not None and outbound.recording_file
