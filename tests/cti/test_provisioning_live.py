"""Issue 17 item 2 on the real stack: phones and queues changed in the database take effect on the running
Asterisk without a restart and without dropping a call (core/provisioning.py, cti/provisioning.py).

One scenario, through the CTI's command (as the admin pages send it), asserting on Asterisk's own view:
a new phone registers with SIPp using the password the service generated; a new queue gets callers
who wait while that phone rings unanswered; the queue's ring time and strategy change while they wait,
and queue_log's RINGNOANSWER lengths follow the new ring time while QueueStatus still shows every caller
and the dynamic member; a re-generated password replaces the old one; a disabled phone can no longer
register. Asterisk's start time (CoreStatus) and pid never change.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from core import provisioning
from core.ami import first_response
from cti import protocol
from sipdrivers.phones import SippPhone

pytestmark = pytest.mark.stack

QUEUE = "12301-livetest"
EXTENSION = "8077"
MEMBER = "livetest-8077"


async def _apply(redis) -> None:
    """What the admin pages do after a change: the CTI renders every node's files and reloads them."""
    await protocol.send(redis, "telephony_apply", {}, execution=60)


async def _core_status(ami) -> tuple[str, str]:
    """When Asterisk started and when it last reloaded (its own clock, to the second)."""
    reply = await ami.action({"Action": "CoreStatus"})
    return reply["CoreStartupDate"] + reply["CoreStartupTime"], reply["CoreReloadDate"] + reply["CoreReloadTime"]


def _asterisk_pid(stack) -> str:
    return stack.runtime.host_path(stack.runtime.inside("run", "asterisk.pid")).read_text().strip()


async def _wait_in_queue(ami, caller: str) -> str:
    """A caller put straight into the queue (the desk's transfer route, Local/<queue>@desk-transfer) who
    holds on for minutes; returns the uniqueid of its channel in Queue()."""
    call_id = f"lt-{uuid.uuid4().hex[:12]}"
    reply = await ami.action({
        "Action": "Originate", "Channel": f"Local/{QUEUE}@desk-transfer/n", "Context": "test-citizen",
        "Exten": "s", "Priority": 1, "CallerID": f'"{caller}" <{caller}>', "OtherChannelId": call_id,
        "ChannelId": f"cz-{call_id}", "Async": "true", "Variable": "HOLD_SECONDS=300,DELAY=0"})
    assert first_response(reply).get("Response") == "Success", reply
    return call_id


async def _queue_status(ami) -> tuple[dict, list[dict], list[dict]]:
    events = await ami.action({"Action": "QueueStatus", "Queue": QUEUE}, as_list=True, timeout=10)
    params = next(e for e in events if e.get("Event") == "QueueParams")
    return params, [e for e in events if e.get("Event") == "QueueMember"], \
        [e for e in events if e.get("Event") == "QueueEntry"]


def _now(check):
    """The waiter polls coroutines: a plain check as one."""
    async def poll():
        return check()
    return poll


def _rings(queue_log: Path, since: float) -> list[int]:
    """Lengths (ms) of the unanswered rings of our phone in our queue, from Asterisk's queue_log."""
    rings = []
    for line in queue_log.read_text(errors="replace").splitlines():
        fields = line.split("|")
        if len(fields) >= 6 and fields[2] == QUEUE and fields[3] == MEMBER and fields[4] == "RINGNOANSWER" \
                and float(fields[0]) >= since:
            rings.append(int(fields[5]))
    return rings


async def _refused(phone: SippPhone, stack, ami, waiter, event: str) -> None:
    """Asterisk refuses SIPp's REGISTER: its own security event names the account (ChallengeResponseFailed:
    wrong password; InvalidAccountID: no such endpoint), and it holds no contact at the phone's address."""
    seen: list[dict] = []
    ami.on_event(event, lambda _m, e: seen.append(dict(e)) if e.get("AccountID") == phone.extension else None)
    with phone:
        await waiter(_now(lambda: seen), timeout=30, what=f"{event} for {phone.extension}")
        assert f"{phone.address}:{phone.local_port}" not in stack.runtime.rx(f"pjsip show aor {phone.extension}")


async def test_new_phone_and_queue_and_a_ring_time_changed_while_callers_wait_without_restart_or_drops(
        stack, ami, db, redis, waiter):
    started, reloaded = await _core_status(ami)
    pid = _asterisk_pid(stack)
    queue_log = stack.runtime.host_path(stack.runtime.inside("log", "queue_log"))

    # A phone and a queue made through the service, applied through the CTI: no restart.
    phone, password = await provisioning.create_phone(db, {"extension": EXTENSION, "label": "新坐席", "kind": "agent"})
    await provisioning.create_queue(db, {"name": QUEUE, "hotline": "12301", "business": "livetest",
                                         "strategy": "ringall", "ring_seconds": 5, "max_wait_seconds": 600,
                                         "announce_every_seconds": 0, "wrapup_seconds": 0})
    await _apply(redis)
    assert "Unable to find object" not in stack.runtime.rx(f"pjsip show endpoint {EXTENSION}")
    ringing = SippPhone(stack.settings, EXTENSION, answer="agent_noanswer.xml", password=password).start()
    callers = []
    try:
        await ringing.wait_registered(stack.runtime)
        # A dynamic member, as the CTI adds a logged-in agent (QueueAdd); it rings and nobody answers.
        reply = await ami.action({"Action": "QueueAdd", "Queue": QUEUE, "Interface": f"PJSIP/{EXTENSION}",
                                  "MemberName": MEMBER})
        assert reply.get("Response") == "Success", reply
        since = time.time() - 1
        for n in range(2):
            callers.append(await _wait_in_queue(ami, f"1370000770{n}"))
        await waiter(_now(lambda: len(_rings(queue_log, since)) >= 2), timeout=60, what="two rings of 5 s")
        params, members, entries = await _queue_status(ami)
        assert params["Strategy"] == "ringall" and len(entries) == 2, (params, entries)

        # Ring time and strategy change while both callers wait.
        await provisioning.update_queue(db, QUEUE, {"ring_seconds": 12, "strategy": "rrmemory"})
        changed = time.time()
        await _apply(redis)
        params, members, entries = await _queue_status(ami)
        assert params["Strategy"] == "rrmemory", params  # Asterisk's own view of the new setting
        assert [m["Name"] for m in members] == [MEMBER] and len(entries) == 2, (members, entries)
        await waiter(_now(lambda: _rings(queue_log, changed + 1)), timeout=60, what="a ring after the change")
        before, after = _rings(queue_log, since), _rings(queue_log, changed + 1)
        # Asterisk never gives up ringing before the timeout: the new rings last the new 12 s, the old ones
        # ended at 5 s.
        assert all(ms >= 11_500 for ms in after), after
        assert any(ms < 11_500 for ms in before), before
        _params, _members, entries = await _queue_status(ami)
        assert len(entries) == 2, entries  # nobody dropped out of the queue

        # A re-generated password replaces the old one at the reload.
        renewed = await provisioning.regenerate_password(db, EXTENSION)
        await _apply(redis)
        await _refused(SippPhone(stack.settings, EXTENSION, password=password), stack, ami, waiter,
                       "ChallengeResponseFailed")
        with SippPhone(stack.settings, EXTENSION, password=renewed) as again:
            await again.wait_registered(stack.runtime)

        # A disabled phone can no longer register, even with its current password.
        await provisioning.update_phone(db, EXTENSION, {"enabled": False})
        await _apply(redis)
        assert "Unable to find object" in stack.runtime.rx(f"pjsip show endpoint {EXTENSION}")
        await _refused(SippPhone(stack.settings, EXTENSION, password=renewed), stack, ami, waiter, "InvalidAccountID")

        channels = await ami.action({"Action": "CoreShowChannels"}, as_list=True, timeout=10)
        up = {e.get("Uniqueid") for e in channels if e.get("Event") == "CoreShowChannel"}
        assert set(callers) <= up, "a waiting caller was dropped by a reload"
    finally:
        await ami.action({"Action": "Hangup", "Channel": f"/^Local.{QUEUE}@desk-transfer-/"})
        await ami.action({"Action": "QueueRemove", "Queue": QUEUE, "Interface": f"PJSIP/{EXTENSION}"})
        ringing.stop()
        # Later tests of the session see the eight queues of the wallboard again (history keeps the row).
        await provisioning.update_queue(db, QUEUE, {"enabled": False})
        await provisioning.update_phone(db, EXTENSION, {"enabled": False})
        await _apply(redis)
    now_started, now_reloaded = await _core_status(ami)
    assert now_started == started and _asterisk_pid(stack) == pid, "Asterisk was restarted"
    assert now_reloaded != reloaded  # it was reloaded instead
    assert phone.enabled  # as created; the test disabled it later
