"""Every branch of both menus on real calls through Asterisk (issue 3 §7).

Citizens are Local/ channels whose caller side keys DTMF with SendDTMF()
(dialplans/test-callers.conf; ``w`` = 0.5 s pause). The calls of the branch
table are placed together, then each test reads what the call left on its
call record (the channel variables IVR_PATH, BUSINESS, CATEGORY, LOOKUP_TICKET
as the CTI saw them at hangup). A call
routed to a queue waits there (the demo agents are queue members, none answers)
until QUEUE_MAX_WAIT, then the queue-timeout script runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from cli.democall import originate_citizen
from cti.models import CallRecord
from tests.channels import running

pytestmark = pytest.mark.stack

WAIT = "w" * 8  # 4 s: long enough for the next prompt to start playing


@dataclass(frozen=True)
class Branch:
    did: str
    keys: str
    hold: int
    path: str           # expected start of IVR_PATH
    business: str | None = None
    category: str | None = None


BRANCHES = {
    "12301-complaint-scenic-spot": Branch("12301", f"2{WAIT}3", 14, "main:2>complaint-object:3",
                                          "complaint", "scenic-spot"),
    "12365-complaint-special-equipment": Branch("12365", f"2{WAIT}2", 14,
                                                "main:2>complaint-object:2", "complaint",
                                                "special-equipment"),
    "12301-report": Branch("12301", "3", 10, "main:3", "report"),
    "12365-report": Branch("12365", "3", 10, "main:3", "report"),
    "12301-agent": Branch("12301", "0", 10, "main:0", "agent"),
    "12365-repeat-then-report": Branch("12365", f"9{WAIT}3", 14, "main:9>main:3", "report"),
    "12301-consult-answer-agent": Branch("12301", f"1{WAIT}2{WAIT}0", 20,
                                         "main:1>consult:2>answer:0", "consult"),
    "12365-consult-answer-agent": Branch("12365", f"1{WAIT}1{WAIT}0", 20,
                                         "main:1>consult:1>answer:0", "consult"),
    "12301-progress-malformed-then-agent": Branch("12301", f"4{WAIT}123#{WAIT}0", 20,
                                                  "main:4>ticket:ticket-malformed>ticket:0",
                                                  "progress"),
    "12365-progress-unknown-then-agent": Branch("12365", f"4{WAIT}2024100199999#{WAIT}0", 24,
                                                "main:4>ticket:ticket-unknown>ticket:0", "progress"),
    "12301-wrong-keys-three-times": Branch("12301", f"7{WAIT}8{WAIT}7", 30, "main:no-choice",
                                           "agent"),
}


async def finished_call(db, call_id: str, waiter, timeout: float = 120) -> CallRecord:
    async def ended():
        async with db.session() as session:
            record = await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))
            return record if record and record.ended_at else None

    return await waiter(ended, timeout=timeout, what=f"call {call_id} to end")


@pytest.fixture(scope="module")
async def branch_calls(stack, ami, db, waiter) -> dict[str, CallRecord]:
    placed = {}
    for index, (name, branch) in enumerate(BRANCHES.items()):
        placed[name] = await originate_citizen(ami, branch.did, keys=branch.keys, caller=f"1390000{index:04d}",
                                               hold_seconds=branch.hold, delay_seconds=2)
    records = await asyncio.gather(*(finished_call(db, call.call_id, waiter) for call in placed.values()))
    return dict(zip(placed, records, strict=True))


@pytest.mark.parametrize("name", list(BRANCHES))
async def test_branch_routes_and_leaves_the_callers_choices_on_the_call(branch_calls, name):
    branch, record = BRANCHES[name], branch_calls[name]
    assert record.hotline == branch.did
    assert record.ivr_path and record.ivr_path.startswith(branch.path), record.ivr_path
    assert record.business == branch.business
    assert record.category == branch.category


async def test_silence_ends_at_an_agent_after_three_tries(stack, ami, db, waiter):
    # Three silent tries of the full main menu take about a minute: the caller stays on well past that,
    # and hangs up once Asterisk has the call in the queue, or (nobody logged in: JOINEMPTY) recording
    # the voice message the queue hands it on to.
    call = await originate_citizen(ami, "12365", keys="", caller="13900009999", hold_seconds=180, delay_seconds=1)

    async def citizen_once_queued():
        reply = await ami.action({"Action": "CoreShowChannels"}, as_list=True, timeout=10)
        channels = {m.get("Uniqueid"): m for m in reply if m.get("Event") == "CoreShowChannel"}
        hotline_side, citizen = channels.get(call.call_id), channels.get(call.citizen_id)
        return citizen["Channel"] if hotline_side and citizen and hotline_side.get("Application") in ("Queue", "Record") \
            else None

    citizen_channel = await waiter(citizen_once_queued, timeout=150, what="Asterisk to queue the silent caller")
    await ami.action({"Action": "Hangup", "Channel": citizen_channel, "Cause": "16"})
    record = await finished_call(db, call.call_id, waiter)
    timeline = (record.ivr_path, record.started_at, record.queued_at, record.ended_at, record.hangup_cause)
    assert record.ivr_path.startswith("main:no-choice"), timeline
    assert record.business == "agent", timeline


async def test_progress_reads_back_a_real_ticket(stack, ami, db, waiter):
    from core.models import User
    from tickets.workflow import register_ticket

    async with db.transaction() as session:
        operator = await session.scalar(select(User).where(User.username == "agent1"))
        ticket = await register_ticket(session, {
            "kind": "complaint", "hotline": "12301", "complainant_name": "测试", "complainant_phone": "13700000001",
            "respondent_name": "某旅行社", "complaint_object": "旅行社及导游领队", "event_category": "不合理低价",
            "province": "广东省", "city": "广州市", "county": "天河区", "description": "测试工单。",
        }, operator)
        number = ticket.number
    # Another caller keys the number; the owner of the ticket is offered it first.
    keyed = await originate_citizen(ami, "12301", keys=f"4{WAIT}{number}#{WAIT}0", caller="13700000002",
                                    hold_seconds=40, delay_seconds=2)
    offered = await originate_citizen(ami, "12301", keys=f"4{WAIT}1{WAIT}{WAIT}{WAIT}0", caller="13700000001",
                                      hold_seconds=40, delay_seconds=2)
    for call in (keyed, offered):
        record = await finished_call(db, call.call_id, waiter)
        assert record.lookup_ticket == number, record.ivr_path
        assert f"ticket:{number}" in record.ivr_path
    prompts = stack.runtime.host_path(stack.runtime.inside("sounds"))
    assert list(prompts.glob("dyn-*.wav")), "the readback was synthesized for Asterisk"


async def test_calls_reach_the_general_queue_while_the_ivr_is_down(stack, ami, db, waiter):
    from cli.stack import supervisorctl

    supervisorctl(stack.settings, "stop", "ivr")
    try:
        call = await originate_citizen(ami, "12301", keys="2", caller="13900008888", hold_seconds=8,
                                       delay_seconds=2)
        record = await finished_call(db, call.call_id, waiter)
    finally:
        supervisorctl(stack.settings, "start", "ivr")
    assert record.ivr_path.startswith("ivr-unavailable"), record.ivr_path


async def test_callers_in_the_menu_reach_the_general_queue_when_the_ivr_crashes(stack, ami, db, waiter, no_agents):
    """The IVR process dies (SIGKILL) while callers sit in its menus: each is sent on to the general
    queue (with nobody logged in, on to a voice message), and the supervisor brings the IVR back."""
    import os
    import signal

    from cli.stack import supervisorctl

    calls = [await originate_citizen(ami, "12365", keys="", caller=f"1390000777{i}", hold_seconds=35,
                                     delay_seconds=1) for i in range(2)]
    for call in calls:  # past the notice, both callers are in the IVR's main menu (however loaded the host)
        await waiter(lambda call=call: running(ami, call.call_id, "AGI"), timeout=60,
                     what="the citizen to be in the IVR's menu")
    status = supervisorctl(stack.settings, "pid", "ivr").stdout.strip()
    os.kill(int(status), signal.SIGKILL)
    for call in calls:
        record = await finished_call(db, call.call_id, waiter)
        assert "ivr-unavailable" in record.ivr_path, record.ivr_path
        assert record.queued_at is not None or "voicemail" in record.ivr_path, record.ivr_path

    async def ivr_back():
        pid = supervisorctl(stack.settings, "pid", "ivr").stdout.strip()
        return pid.isdigit() and pid != status and int(pid) > 0

    await waiter(ivr_back, timeout=30, what="the supervisor to restart the IVR")
    after = await originate_citizen(ami, "12365", keys="3", caller="13900007779", hold_seconds=10, delay_seconds=7)
    record = await finished_call(db, after.call_id, waiter)
    assert record.business == "report", record.ivr_path


async def test_callers_are_routed_on_when_the_ivr_stalls(stack, ami, db, waiter, no_agents):
    """An IVR that took the calls but does not answer them (SIGSTOP: how an overloaded or hung IVR looks to
    Asterisk, which has no time limit on a FastAGI script) must not keep its callers in silence: the
    dialplan's deadman sends each to the general queue, and (nobody logged in) the queue's own IVR script,
    stalled too, on to a voice message. Asterisk's queue_log (the hang-up handler's HOTLINEEND) says so too;
    once the IVR runs again it serves the next caller as before."""
    import os
    import signal

    from cli.stack import supervisorctl

    pid = int(supervisorctl(stack.settings, "pid", "ivr").stdout.strip())
    os.kill(pid, signal.SIGSTOP)
    try:
        calls = [await originate_citizen(ami, "12301", keys="", caller=f"1390000666{i}", hold_seconds=35,
                                         delay_seconds=1) for i in range(3)]
        records = await asyncio.gather(*(finished_call(db, call.call_id, waiter) for call in calls))
    finally:
        os.kill(pid, signal.SIGCONT)
    queue_log = stack.runtime.host_path(stack.runtime.inside("log", "queue_log")).read_text(errors="replace")
    for call, record in zip(calls, records, strict=True):
        assert record.ivr_path.startswith("ivr-unavailable"), record.ivr_path
        assert record.ivr_path.endswith("voicemail"), record.ivr_path
        ended = [line for line in queue_log.splitlines() if f"|{call.call_id}|" in line and "|HOTLINEEND|" in line]
        assert ended and "path=ivr-unavailable" in ended[-1], ended

    after = await originate_citizen(ami, "12301", keys="3", caller="13900006669", hold_seconds=10, delay_seconds=7)
    record = await finished_call(db, after.call_id, waiter)
    assert record.business == "report", record.ivr_path
