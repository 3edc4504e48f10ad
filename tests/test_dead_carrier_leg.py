"""Issue 13, item 4: a carrier leg that goes dead without a BYE must not stay bridged to an agent.

A SIPp citizen reaches a SIPp agent through the IVR and queue, talks, then stops sending RTP and never
hangs up. Asterisk must end the call after the carrier's RTP timeout (set short here through its
HOTLINE_ override), release the agent's leg, and the call record, queue_log and CDR must agree on it.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from cli.democall import citizen_speech
from cli.stack import seed_and_load_telephony
from core.asterisk_config import render_asterisk_config
from core.filemodes import private_umask, tighten
from core.settings import load_settings
from cti.books import read_cdr_calls, read_queue_log
from cti.models import CallRecord
from sipdrivers.carrier import SIPP_DIR, run_citizen_calls, ulaw_from_wav
from sipdrivers.phones import agents_on_phones

pytestmark = pytest.mark.stack

RTP_TIMEOUT = 4  # seconds; the configured default is 30
CALLER = "13766660001"


def _reload_pjsip(stack) -> str:
    settings = load_settings()
    telephony = asyncio.run(seed_and_load_telephony(settings))  # the database's phones, as the CTI renders them
    with private_umask():  # as `up` renders it: nothing for other users (#12.9)
        tighten(render_asterisk_config(settings, stack.runtime, telephony=telephony))
    stack.runtime.rx("module reload res_pjsip.so")
    return stack.runtime.rx("pjsip show endpoint carrier")


def _option(endpoint: str, name: str) -> str | None:
    match = re.search(rf"^\s*{name}\s*:\s*(\S+)", endpoint, re.MULTILINE)
    return match.group(1) if match else None


@pytest.fixture
def short_rtp_timeout(stack, monkeypatch):
    monkeypatch.setenv("HOTLINE_SIP_CARRIER_RTP_TIMEOUT_SECONDS", str(RTP_TIMEOUT))
    endpoint = _reload_pjsip(stack)
    assert _option(endpoint, "rtp_timeout") == str(RTP_TIMEOUT), endpoint
    yield endpoint
    monkeypatch.undo()
    _reload_pjsip(stack)


async def _agent_channels(ami, phone: str) -> list[dict]:
    reply = await ami.action({"Action": "CoreShowChannels"}, as_list=True, timeout=10)
    return [c for c in reply if c.get("Event") == "CoreShowChannel"
            and str(c.get("Channel", "")).startswith(f"PJSIP/{phone}-")]


async def test_a_carrier_leg_that_goes_silent_without_bye_is_hung_up_and_the_agent_released(
        stack, ami, db, redis, waiter, tmp_path, short_rtp_timeout, no_agents):
    # The defaults rendered for every instance: RTP timeouts and session timers on the carrier.
    defaults = load_settings().sip
    assert _option(short_rtp_timeout, "rtp_timeout_hold") == str(defaults.carrier_rtp_timeout_hold_seconds)
    assert _option(short_rtp_timeout, "timers") == "always"
    assert _option(short_rtp_timeout, "timers_sess_expires") == str(defaults.session_expires_seconds)

    speech = ulaw_from_wav(_wav(stack), tmp_path / "citizen.ulaw")
    began = datetime.now(UTC).replace(microsecond=0)
    async with agents_on_phones(stack.settings, stack.runtime, ami, redis, db, {"agent1": "8001"}):
        # 2 1 = complaint about a travel agency: agent1's queue. 14 s of speech after the keys (answered
        # by then), then the line goes dead.
        result = await asyncio.to_thread(
            run_citizen_calls, stack.settings, "12301", "21", [CALLER], speech, hold_ms=14000, delay_ms=4000,
            timeout=120, local_port=5066, scenario=SIPP_DIR / "citizen_silent.xml")
        # SIPp's call succeeded only if Asterisk sent the BYE (the citizen never did) and the 200 OK
        # carried Session-Expires although the citizen offered no session timers.
        assert result.returncode == 0 and result.successful == 1 and result.failed == 0, result.output

        await waiter(lambda: _released(ami), timeout=20, what="the agent's leg to be released")
    # Asterisk says why: its RTP timeout on the carrier leg, not anyone hanging up.
    messages = stack.runtime.host_path(stack.runtime.inside("log", "messages")).read_text(errors="replace")
    assert re.search(rf"Disconnecting channel 'PJSIP/carrier-\S+' for lack of \w+ RTP activity in {RTP_TIMEOUT} "
                     "seconds", messages), messages[-2000:]

    async def closed():
        async with db.session() as session:
            record = await session.scalar(select(CallRecord).where(CallRecord.caller_number == CALLER,
                                                                   CallRecord.started_at >= began - timedelta(
                                                                       seconds=1)))
            return record if record and record.ended_at else None

    record = await waiter(closed, timeout=30, what="the call record to be closed")
    assert record.answered_at is not None and record.agent_extension == "8001"
    assert not record.abandoned and record.talk_seconds > 0
    assert record.hangup_cause, "closed with a cause"

    # Asterisk's own books agree: the queue part completed after the agent's answer, the CDR is an
    # answered call to 8001 ending when the record says.
    queue_log = stack.runtime.host_path(stack.runtime.inside("log", "queue_log"))
    books = await waiter(lambda: _queue_call(queue_log, began, record.call_id), timeout=20,
                         what="queue_log to show the call completed")
    assert books.username == "agent1" and books.connected is not None
    cdr_csv = stack.runtime.host_path(stack.runtime.inside("log", "cdr-csv", "Master.csv"))
    cdr = await waiter(lambda: _cdr_call(cdr_csv, began, record.call_id), timeout=20, what="the CDR of the call")
    assert cdr.answered and cdr.agent_phone == "8001"
    assert abs((cdr.end - record.ended_at).total_seconds()) <= 2
    assert abs((books.ended - record.ended_at).total_seconds()) <= 2


def _wav(stack):
    wav = stack.runtime.host_path(stack.runtime.inside("sounds", "demo-complaint.wav"))
    if not wav.exists():
        citizen_speech(stack.settings, "demo-complaint")
    return wav


async def _released(ami) -> bool:
    return not await _agent_channels(ami, "8001")


async def _queue_call(path, since, call_id):
    call = read_queue_log(path, since, {call_id}).get(call_id)
    return call if call and call.ended else None


async def _cdr_call(path, since, call_id):
    return read_cdr_calls(path, since).get(call_id)
