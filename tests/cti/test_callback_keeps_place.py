"""A caller who waited too long asks for a callback; when an agent is free, the agent's phone rings and
the citizen is dialled over the carrier trunk, once; the agent ends the call and the request is done.
The same agent then dials a citizen from the desk. On both calls the citizen hears the hotline's recording
notice before recording starts (12365 standard 5.4), as Asterisk's own AMI events show."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cli.democall import originate_citizen
from core.telephony import call_id_of
from cti import control
from cti.models import CallbackRequest, CallbackStatus, CallRecord
from sipdrivers.carrier import carrier_answering
from sipdrivers.phones import agents_on_phones

pytestmark = pytest.mark.stack


def _notice_then_recording(events: list[dict], call_id: str, hotline: str) -> bool:
    """The citizen's (carrier) channel played the hotline's notice, and only then MixMonitor started on it."""
    mine = [e for e in events if e["call_id"] == call_id and "carrier" in e.get("Channel", "")]
    played = [i for i, e in enumerate(mine) if e.get("Event") == "Newexten" and e.get("Application") == "Playback"
              and e.get("AppData", "").endswith(f"/recording-notice-{hotline}")]
    recording = [i for i, e in enumerate(mine) if e.get("Event") == "MixMonitorStart"]
    assert not recording or (played and played[0] < recording[0]), mine  # never recorded before the notice
    return bool(played and recording)


async def _told_then_recorded(stack, db, waiter, events: list[dict], call_id: str, hotline: str) -> None:
    """While the call is live: notice, then MixMonitor on the citizen's leg, writing the call's recording."""
    await waiter(lambda: _async(_notice_then_recording(events, call_id, hotline)), timeout=30,
                 what=f"notice then recording on {call_id}")
    async with db.session() as session:
        call = await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))
    assert call.recording_file and stack.recording_path(call.recording_file).exists()


async def _agent_gone(ami) -> bool:
    return await control.agent_channel(ami, "8001") is None


async def test_callback_rings_the_next_free_agent_then_dials_the_citizen_once(stack, ami, db, redis, waiter,
                                                                              no_agents):
    citizen, dialled = "13822223333", "13822224444"
    events: list[dict] = []
    for name in ("Newexten", "MixMonitorStart"):
        ami.on_event(name, lambda _manager, event: events.append({**dict(event), "call_id": call_id_of(event)}))
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

        carrier = carrier_answering(stack.settings, calls=2)  # the callback, then the desk's own call
        try:
            await control.agent_ready(ami, redis, agent)  # the agent is free: the request's turn

            async def talking():
                async with db.session() as session:
                    row = await session.get(CallbackRequest, request.id)
                    call = await session.scalar(select(CallRecord).where(
                        CallRecord.call_id == row.outbound_call_id)) if row.outbound_call_id else None
                return call if call and call.answered_at else None

            callback = await waiter(talking, timeout=60, what="agent and citizen connected")
            await _told_then_recorded(stack, db, waiter, events, callback.call_id, "12301")
            await control.hangup(ami, await control.agent_channel(ami, "8001"))  # the agent ends the call

            async def done():
                async with db.session() as session:
                    row = await session.get(CallbackRequest, request.id)
                return row if row.status != CallbackStatus.PENDING and row.status != CallbackStatus.DIALING \
                    else None

            finished = await waiter(done, timeout=90, what="the callback to be dialled and end")
            await waiter(lambda: _agent_gone(ami), timeout=30, what="the callback's agent leg to end")

            # A call the agent places from the desk (12365 this time): the same notice, that hotline's.
            placed = (await control.call_operation(ami, redis, agent.id, "dial",
                                                   {"number": dialled, "hotline": "12365"}))["call_id"]

            async def desk_call_talking():
                async with db.session() as session:
                    call = await session.scalar(select(CallRecord).where(CallRecord.call_id == placed))
                return call if call and call.answered_at else None

            await waiter(desk_call_talking, timeout=60, what="the desk's call answered")
            await _told_then_recorded(stack, db, waiter, events, placed, "12365")
            await control.hangup(ami, await control.agent_channel(ami, "8001"))
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


async def _async(value):
    return value
