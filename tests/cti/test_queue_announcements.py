"""Callers waiting in a queue hear their position in Mandarin (app_queue with language zh).

Asterisk reports no AMI event for queue announcements, so the test opens a temporary
logger channel at verbose level 3, where the file layer logs every sound it plays and
in which language, and checks the announcement files played are our Mandarin ones.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from cli.democall import originate_citizen
from cti import control
from cti.models import CallRecord, CallState
from sipdrivers.phones import agents_on_phones

pytestmark = pytest.mark.stack

LOG_NAME = "queue-announcements.log"
CALLER = "13766667777"
PLAYED = re.compile(r"Playing '(?P<file>[^']+)' \(language '(?P<language>[^']+)'\)")


async def test_a_waiting_caller_hears_position_announcements_in_mandarin(stack, ami, redis, db, waiter):
    log_path = stack.runtime.host_path(stack.runtime.inside("log", LOG_NAME))
    await ami.action({"Action": "Command", "Command": f"logger add channel {LOG_NAME} verbose(3)"})
    try:
        async with agents_on_phones(stack.settings, stack.runtime, ami, redis, db, {"agent1": "8001"}) as [agent]:
            await control.agent_pause(ami, redis, agent, "meeting")  # a member, but nobody free: the caller waits
            await originate_citizen(ami, "12301", keys="0", caller=CALLER, hold_seconds=40)

            async def announcements() -> list[tuple[str, str]] | None:
                text = log_path.read_text(errors="replace") if log_path.exists() else ""
                played = [(m["file"], m["language"]) for m in PLAYED.finditer(text) if "queue-" in m["file"]]
                return played or None

            played = await waiter(announcements, timeout=45, what="a queue position announcement")

            # Past the queue's max wait (20 s in test stacks) the caller is offered a message or a
            # callback: out of the queue while still on the line, so no longer counted as waiting.
            async def left_the_queue():
                async with db.session() as session:
                    record = await session.scalar(select(CallRecord).where(CallRecord.caller_number == CALLER)
                                                  .order_by(CallRecord.started_at.desc()))
                return record if record and record.queued_at and record.ended_at is None \
                    and record.state == CallState.IVR else None

            await waiter(left_the_queue, timeout=45, what="the caller past the max wait to be out of the queue")
            queue_log = stack.runtime.host_path(stack.runtime.inside("log", "queue_log")).read_text()
            assert "EXITWITHTIMEOUT" in queue_log  # Asterisk's own books: the caller left by the max wait
    finally:
        await ami.action({"Action": "Command", "Command": f"logger remove channel {LOG_NAME}"})
        await _hang_up_caller(ami, CALLER)  # not left waiting for the next test's agents
    files = {name.rsplit("/", 1)[-1].split(".")[0] for name, _language in played}
    assert files & {"queue-youarenext", "queue-thereare"}, played  # the position, first of all
    assert {language for _name, language in played} == {"zh"}
    zh_sounds = stack.runtime.host_path("/usr/share/asterisk/sounds/zh")
    for name in files:
        assert (zh_sounds / f"{name}.wav").exists(), f"{name} has no Mandarin recording; Asterisk would fall back"


async def _hang_up_caller(ami, number: str) -> None:
    reply = await ami.action({"Action": "CoreShowChannels"}, as_list=True)
    for channel in (m for m in reply if m.get("Event") == "CoreShowChannel"):
        if number in (channel.get("CallerIDNum"), channel.get("ConnectedLineNum")):
            await ami.action({"Action": "Hangup", "Channel": channel["Channel"]})
