"""一次一评 over real SIP (issue 16 item 3): four citizens reach four SIPp agents at once; three agents hang
up first (their SIPp sends BYE) and the citizen's SIPp then keys 1, 2 or 3 in the survey; in the fourth call
the citizen hangs up first, which is 未评价. The grade lands on the call record and on the ticket (one ticket
linked while its call is still up, one linked after the survey); Asterisk's queue_log says who hung up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from core.models import User
from cti.models import CallRecord
from sipdrivers.carrier import run_citizen_calls
from sipdrivers.phones import SIPP_DIR, agents_on_phones, free_udp_block
from tests.cti.test_queue_calls_sip import _speech
from tests.tickets.ticket_helpers import complaint
from tickets.models import Ticket
from tickets.workflow import register_ticket

pytestmark = pytest.mark.stack

RATERS = {"13755500001": ("1", "satisfied"), "13755500002": ("2", "basic"), "13755500003": ("3", "dissatisfied")}
HANGS_UP = "13755500004"


def _citizen(stack, caller: str, speech: Path, digit: str | None):
    carrier = stack.settings.sip.carrier_address
    port = free_udp_block(carrier)
    extra = ["-mp", str(port + 10)]
    # Key 0: straight to an agent (12301-general, which all four agents serve).
    if digit is None:  # talks a few seconds, then hangs up before the agent's 12 s are over
        return run_citizen_calls(stack.settings, "12301", "0", [caller], speech, hold_ms=9000, delay_ms=4000,
                                 local_port=port, extra=extra, timeout=90)
    return run_citizen_calls(stack.settings, "12301", "0", [caller], speech, hold_ms=3000, delay_ms=4000,
                             local_port=port, extra=extra, timeout=90, scenario=SIPP_DIR / "citizen_survey.xml",
                             fill={"survey": digit})


async def _record(db, caller: str) -> CallRecord | None:
    async with db.session() as session:
        return await session.scalar(select(CallRecord).where(CallRecord.caller_number == caller)
                                    .order_by(CallRecord.started_at.desc()).limit(1))


async def _register_for(db, record: CallRecord) -> str:
    """The agent who took the call registers a complaint linked to it."""
    async with db.transaction() as session:
        agent = await session.get(User, record.agent_id)
        ticket = await register_ticket(session, complaint(complainant_phone=record.caller_number,
                                                          call_ids=[record.ref]), agent)
        return ticket.number


def _queue_log_ends(stack, call_ids: set[str]) -> dict[str, str]:
    """call id -> COMPLETEAGENT / COMPLETECALLER, from Asterisk's own queue_log."""
    path = stack.runtime.host_path(stack.runtime.inside("log", "queue_log"))
    ends = {}
    for line in path.read_text(errors="replace").splitlines():
        fields = line.split("|")
        if len(fields) > 4 and fields[1] in call_ids and fields[4].startswith("COMPLETE"):
            ends[fields[1]] = fields[4]
    return ends


async def test_citizens_rate_the_call_after_the_agent_hangs_up_and_a_citizen_who_hangs_up_is_unrated(
        stack, ami, db, redis, waiter, tmp_path, no_agents):
    speech = _speech(tmp_path, stack)
    agents = {"agent1": "8001", "agent3": "8003", "agent4": "8004", "agent5": "8005"}
    async with agents_on_phones(stack.settings, stack.runtime, ami, redis, db, agents,
                                answer="agent_answer_hangup.xml"):
        calls = [asyncio.to_thread(_citizen, stack, caller, speech, digit) for caller, (digit, _g) in RATERS.items()]
        calls.append(asyncio.to_thread(_citizen, stack, HANGS_UP, speech, None))
        running = asyncio.gather(*calls)
        first = next(iter(RATERS))

        async def answered():
            record = await _record(db, first)
            return record if record and record.answered_at and record.agent_id else None

        # A ticket linked while its call is still up: the grade reaches it after the survey.
        early_ticket = await _register_for(db, await waiter(answered, timeout=60, what="the first call answered"))
        results = await running
    for result in results:
        assert result.returncode == 0 and result.successful == 1 and result.failed == 0, result.output

    async def all_ended():
        rows = [await _record(db, caller) for caller in [*RATERS, HANGS_UP]]
        return rows if all(r and r.ended_at for r in rows) else None

    records = dict(zip([*RATERS, HANGS_UP], await waiter(all_ended, timeout=30, what="four ended call records"),
                       strict=True))
    ends = _queue_log_ends(stack, {r.call_id for r in records.values()})
    for caller, (_digit, grade) in RATERS.items():
        record = records[caller]
        assert ends[record.call_id] == "COMPLETEAGENT", ends  # Asterisk: the agent hung up first
        assert record.satisfaction == grade, (caller, record.satisfaction, record.ivr_path)
        assert record.answered_at < record.survey_started_at < record.satisfaction_at <= record.ended_at
        # Talk time ends when the agent left, not when the citizen finished rating.
        assert record.talk_seconds <= (record.survey_started_at - record.answered_at).total_seconds() + 0.01
    unrated = records[HANGS_UP]
    assert ends[unrated.call_id] == "COMPLETECALLER", ends
    assert unrated.answered_at is not None and unrated.survey_started_at is None
    assert unrated.satisfaction == "unrated" and unrated.satisfaction_at is None

    # A ticket linked after the survey takes the grade at linking.
    late_ticket = await _register_for(db, records["13755500002"])
    unrated_ticket = await _register_for(db, unrated)
    async with db.session() as session:
        grades = {t.number: t.call_satisfaction for t in (await session.scalars(select(Ticket).where(
            Ticket.number.in_([early_ticket, late_ticket, unrated_ticket])))).all()}
    assert grades == {early_ticket: "satisfied", late_ticket: "basic", unrated_ticket: None}
