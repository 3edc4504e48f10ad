"""Cluster mode (issue 19 items 1, 4 and 5): Kamailio in front of two Asterisk nodes, on PostgreSQL.

One stack started as `./hotline up --nodes 2` starts it (HOTLINE_CLUSTER_NODES=2): Kamailio on the
platform's SIP address, node1 and node2 on 127.0.0.11 and 127.0.0.12, the carrier on 127.0.0.2. One
scenario, in order:

0. a phone registers with Kamailio's registrar with its password; one with a wrong password does not;
1. SIPp citizens from the carrier address through Kamailio reach both nodes (each node's own CDR says
   which calls it carried);
2. a call from an address that is neither the carrier nor a node is refused (403) and reaches no node;
3. on node1 an agent (phone registered on node1, logged in through the desk) answers a hotline call that
   ends (its recording is in node1's spool), then talks to a second citizen while a third waits in the
   queue; node1 is SIGKILLed while calls are coming in (and kept down): Kamailio's dispatcher marks it
   down, then every new call succeeds, all on node2 (zero SIPp failures). The CTI gives node1 up once
   its AMI has been away for cti.service.NODE_LOST_SECONDS: the talking and the waiting call are closed
   with the cause node_lost (not abandoned, not left open) within 30 s of the kill, both citizens are on
   the desk's callback list (节点故障), the agent is back (wrap-up, then ready) on the desk, and the ended
   call's recording is filed;
4. node1 comes back: the dispatcher marks it up and it carries calls again; the CTI follows it again (a
   new hotline call on node1 gets its record, its agent states are read again from its QueueStatus) and
   the calls closed as lost stay closed, their callbacks not made twice; an agent signed in on node2
   throughout stays ready (one node's resync used to sign out every other node's agents).

Second sources: Kamailio's own dispatcher state and registrar (kamcmd dispatcher.list, ul.lookup), its
log, and each node's Master.csv (the lost calls are not in node1's: Asterisk never ended them);
SIPp's own statistics for successes and failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select

from cli.democall import PlacedCall, originate_citizen
from cli.stack import check_health
from cli.supervisor import kill_and_keep_down, program_pid, supervisor_rpc
from core import kamailio
from core.ami import AmiNodes
from core.asterisk_runtime import node_runtimes
from core.db import Database
from core.models import User
from cti import control
from cti.books import CDR_COLUMNS
from cti.models import CallbackRequest, CallRecord
from recordings.models import Recording
from sipdrivers.carrier import SIPP_DIR, run_citizen_calls
from sipdrivers.phones import SippPhone
from tests.conftest import TEST_SETTINGS
from tests.desk.http_client import Desk

pytestmark = pytest.mark.stack

PROXIED = SIPP_DIR / "citizen_proxied.xml"
STRANGER = "127.0.0.5"  # not the carrier (127.0.0.2), not a node, not Kamailio
AGENT, AGENT_PHONE = "agent5", "8005"  # 12301-general among its skills; the phone registers on node1
OTHER, OTHER_PHONE = "agent2", "8002"  # 12365's queues only; the phone registers on node2


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, Any]]:
    from cli.postgres import throwaway_postgresql
    from cli.stack import throwaway_stack

    with throwaway_postgresql(prefix="hotline-cluster-pg-") as url:
        overrides = {**TEST_SETTINGS, "HOTLINE_CLUSTER_NODES": "2", "HOTLINE_DATABASE_URL": url,
                     "HOTLINE_ASTERISK_BENCH_ECHO": "true"}  # DID 10000: a bare answered call on each node
        with throwaway_stack(overrides, "hotline-cluster-", say=lambda line: print(line, flush=True)) as stack:
            yield stack


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five seconds of a tone as headerless u-law: the citizens' RTP (the echo line sends it back)."""
    path = tmp_path_factory.mktemp("cluster-speech") / "tone.ulaw"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-t", "raw", "-e", "u-law", str(path),
                    "synth", "5", "sine", "440"], check=True, capture_output=True)
    return path


def _callers(phase: int, count: int) -> list[str]:
    return [f"139{phase:02d}{index:06d}" for index in range(count)]


def _answered_by_node(runtimes: dict[str, Any], callers: list[str]) -> dict[str, set[str]]:
    """Which of ``callers`` each node's own CDR has as answered calls."""
    wanted, found = set(callers), {}
    for name, runtime in runtimes.items():
        path = runtime.host_path(runtime.inside("log", "cdr-csv", "Master.csv"))
        rows = csv.reader(path.read_text(errors="replace").splitlines()) if path.exists() else []
        found[name] = {row[CDR_COLUMNS.index("src")] for row in rows if len(row) >= len(CDR_COLUMNS)
                       and row[CDR_COLUMNS.index("src")] in wanted
                       and row[CDR_COLUMNS.index("disposition")] == "ANSWERED"}
    return found


def _calls(settings, speech: Path, callers: list[str], rate: float = 5, hold_ms: int = 1000):
    return run_citizen_calls(settings, "10000", "", callers, speech, hold_ms=hold_ms, rate=rate, timeout=120,
                             scenario=PROXIED)


async def test_kamailio_spreads_carrier_calls_refuses_strangers_and_survives_a_node_killed(cluster, speech, waiter):
    settings, runtime = cluster
    runtimes = node_runtimes(settings, runtime)
    assert settings.clustered and [n.address for n in settings.nodes] == ["127.0.0.11", "127.0.0.12"]

    async def node_up(name: str, up: bool) -> bool:
        return kamailio.dispatcher_state(settings)[name].up is up

    for name in runtimes:
        await waiter(lambda name=name: node_up(name, True), timeout=30, what=f"dispatcher marking {name} up")
    # Kamailio does not run as root: the kamailio user of Debian's package (its control socket still answers
    # root's kamcmd, as `./hotline status` uses it).
    assert _uid(program_pid(settings, "kamailio")) == kamailio.account()[0] != 0

    # 0. Phones register with Kamailio: digest auth against the phones table's own credentials (the
    #    PostgreSQL view kamailio_subscriber); a wrong password is refused.
    front = SimpleNamespace(address=settings.sip.bind, sip_port=settings.sip.port)
    good = SippPhone(settings, "8001", node=front).start()
    try:
        contacts = await waiter(lambda: _contacts(settings, "8001"), timeout=30, what="8001 registered with Kamailio")
        assert contacts == [f"sip:8001@{good.address}:{good.local_port}"], contacts
    finally:
        good.stop()
    # The register scenario alone (no answering part): with a wrong password its REGISTER is challenged
    # again instead of accepted; SIPp takes that challenge for a repeat of the first, so it gives up after
    # one retransmission rather than five.
    bad = SippPhone(settings, "8002", node=front, password="wrong-password").command()
    del bad[bad.index("-oocsf"):bad.index("-oocsf") + 2]
    bad += ["-max_non_invite_retrans", "1"]
    refused = await asyncio.to_thread(subprocess.run, bad, cwd=SIPP_DIR, capture_output=True, timeout=60)
    assert refused.returncode != 0 and not kamailio.registered_contacts(settings, "8002")
    assert "REGISTER of 8002 from 127.0.0.1" in (settings.log_dir / "kamailio.log").read_text(errors="replace")

    # 1. Carrier calls through Kamailio reach both nodes (each node's own CDR).
    first = _callers(1, 10)
    result = await asyncio.to_thread(_calls, settings, speech, first)
    assert (result.successful, result.failed) == (10, 0), result.output
    spread = await waiter(lambda: _all_answered(runtimes, first), timeout=30, what="the CDR rows of both nodes")
    assert spread["node1"] and spread["node2"], spread

    # 2. A call from neither the carrier nor a node: 403 from Kamailio, no node sees it.
    stranger = _callers(2, 1)
    refused = await asyncio.to_thread(run_citizen_calls, settings, "10000", "", stranger, speech,
                                      scenario=SIPP_DIR / "citizen_refused.xml", source=STRANGER, timeout=30)
    assert (refused.successful, refused.failed) == (1, 0), refused.output
    assert not any(_answered_by_node(runtimes, stranger).values())

    async with contextlib.AsyncExitStack() as cleanup:
        await _lose_node1_and_take_it_back(settings, runtime, speech, waiter, node_up, cleanup)


async def _lose_node1_and_take_it_back(settings, runtime, speech: Path, waiter, node_up, cleanup) -> None:
    runtimes = node_runtimes(settings, runtime)
    tools = AmiNodes.for_settings(settings, "tools")
    cleanup.push_async_callback(tools.close)
    db = Database(settings.database_url)
    cleanup.push_async_callback(db.close)
    phone = SippPhone(settings, AGENT_PHONE, node=settings.node("node1")).start()
    cleanup.callback(phone.stop)
    desk = Desk(settings.web_url)
    cleanup.push_async_callback(desk.close)
    other_phone = SippPhone(settings, OTHER_PHONE, node=settings.node("node2")).start()
    cleanup.callback(other_phone.stop)
    other = Desk(settings.web_url)
    cleanup.push_async_callback(other.close)
    await tools.connect()
    node1 = tools["node1"]

    # 3. Before the kill, on node1: the agent answers call A, which ends; then talks to B while C waits.
    # An agent on node2 too: node1's loss and return must leave them as they are.
    for agent_desk, username, extension, agent_phone, node in ((desk, AGENT, AGENT_PHONE, phone, "node1"),
                                                               (other, OTHER, OTHER_PHONE, other_phone, "node2")):
        await agent_phone.wait_registered(runtimes[node])
        await agent_desk.login(username, settings.secrets["demo_password"])
        assert (await agent_desk.post("/api/desk/state", {"action": "login", "phone": extension}))[0] == 200
        assert (await agent_desk.post("/api/desk/state", {"action": "ready"}))[0] == 200
    async with db.session() as session:
        agent_id = await session.scalar(select(User.id).where(User.username == AGENT))
    ended = await originate_citizen(node1, "12301", keys="0", caller="13906000001", hold_seconds=12)
    await waiter(lambda: _bridged(node1, AGENT_PHONE), timeout=60, what="the agent answering call A on node1")
    record_a = await waiter(lambda: _closed(db, ended.call_id), timeout=60, what="call A's record closed")
    assert record_a.answered_at is not None and record_a.recording_file and record_a.node == "node1"
    await waiter(lambda: _desk_state(desk, "ready"), timeout=30, what="the agent ready again after call A")
    talking = await originate_citizen(node1, "12301", keys="0", caller="13906000002", hold_seconds=300)
    await waiter(lambda: _bridged(node1, AGENT_PHONE), timeout=60, what="the agent talking to B on node1")
    waiting = await originate_citizen(node1, "12301", keys="0", caller="13906000003", hold_seconds=300)
    await waiter(lambda: _queued(db, waiting.call_id), timeout=60, what="C waiting in the queue on node1")
    assert (await _desk_state(desk, "on_call")), "the agent is not talking on the desk before the kill"
    lost = (talking, waiting)

    # node1 killed while calls come in: the dispatcher marks it down, then new calls all succeed on node2.
    during = _callers(3, 30)
    load = asyncio.create_task(asyncio.to_thread(_calls, settings, speech, during, 5, 3000))
    await waiter(lambda: _answered_on(runtimes, during, "node1", 2), timeout=60, what="load calls on node1")
    killed_at = time.monotonic()
    await asyncio.to_thread(kill_and_keep_down, settings, settings.node("node1").program)

    async def marked_down() -> float:
        await waiter(lambda: node_up("node1", False), timeout=30, interval=0.1, what="dispatcher marking node1 down")
        return time.monotonic() - killed_at

    async def closed_as_lost() -> dict[str, CallRecord]:
        # Generous: the CTI gives a node up NODE_LOST_SECONDS (10 s) after its AMI went away, then applies
        # node1's last events (at most 5 s) and waits for handlers in flight (under a loaded CI, longer).
        try:
            found = await waiter(lambda: _lost_records(db, lost), timeout=60, what="node1's calls closed as node_lost")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the CTI's last log lines on node1: {_cti_lines(settings, 'node1')}") from None
        print(f"node1's open calls closed as node_lost {time.monotonic() - killed_at:.1f} s after SIGKILL")
        return found

    down_after, records = await asyncio.gather(marked_down(), closed_as_lost())
    print(f"node1 marked down {down_after:.1f} s after SIGKILL")
    # Their own cause, not abandoned; B was answered (its talk time counted up to the loss), C was waiting.
    b, c = records[talking.call_id], records[waiting.call_id]
    assert (b.abandoned, c.abandoned) == (False, False)
    assert b.answered_at is not None and b.agent_id == agent_id and b.talk_seconds > 0
    assert c.queued_at is not None and c.answered_at is None and c.wait_seconds > 0
    # Both citizens on the callback list: one task each (the day's task of the number), shown as 节点故障.
    tasks = await _callback_tasks(db, lost)
    assert {n: (t.source, t.status.value) for n, t in tasks.items()} == \
        {call.caller: ("node_lost", "pending") for call in lost}, tasks
    page = await _desk_page(desk)
    assert all(f"<b>{call.caller}</b>" in page for call in lost) and "节点故障" in page
    # The agent who was talking on node1 is back on the desk: wrap-up (12301-general's), then ready.
    state = (await desk.get_json("/api/desk/state"))[1]
    assert state["state"] in ("wrapup", "ready"), state
    await waiter(lambda: _desk_state(desk, "ready"), timeout=30, what="the agent ready after node1's loss")
    # The call that ended before the kill keeps its recording (filed from node1's spool).
    recording = await waiter(lambda: _filed(db, ended.call_id), timeout=60, what="call A's recording filed")
    assert recording.node == "node1" and recording.format not in ("missing", "none")
    assert (settings.recordings_dir / recording.path).stat().st_size > 0
    # node1's own CDR: A ended there; B and C never did (Asterisk died with them).
    cdr1 = _cdr_text(runtimes["node1"])
    assert ended.call_id in cdr1 and not any(call.call_id in cdr1 for call in lost)
    # `./hotline status` says so: node1 not running, the CTI's AMI to it away and the node given up.
    status = await waiter(lambda: _status_of_loss(settings, runtime), timeout=20, what="./hotline status on node1")
    print(f"./hotline status: {status}")
    load_result = await load
    print(f"calls during the kill: {load_result.successful} succeeded, {load_result.failed} failed "
          "(those on node1 when it died)")
    after = _callers(4, 10)
    result = await asyncio.to_thread(_calls, settings, speech, after)
    assert (result.successful, result.failed) == (10, 0), result.output
    carried = await waiter(lambda: _all_answered(runtimes, after), timeout=30, what="the calls after the kill")
    assert carried["node2"] == set(after), carried
    # Kamailio's own log: none of them was even tried on node1 (no failover needed: it was known down).
    assert _sent_to(settings, after) == {kamailio.node_uri(settings.node("node2"))}, _sent_to(settings, after)

    assert await _desk_state(other, "ready"), "node1's loss moved the agent on node2"

    # 4. node1 back: the dispatcher sends it calls again.
    resyncs = _agent_resyncs(settings, "node1")
    supervisor_rpc(settings).startProcess(settings.node("node1").program, True)
    await waiter(lambda: node_up("node1", True), timeout=90, what="dispatcher marking node1 up again")
    back = _callers(5, 6)
    result = await asyncio.to_thread(_calls, settings, speech, back)
    assert (result.successful, result.failed) == (6, 0), result.output
    carried = await waiter(lambda: _all_answered(runtimes, back), timeout=30, what="the calls after the return")
    assert carried["node1"] and carried["node2"], carried
    # The CTI follows node1 again (its AMI reconnected, node1's books reconciled): a new hotline call there
    # gets its record; the calls closed as lost stay as they were, their callbacks not made twice.
    await waiter(lambda: _logged_in(node1), timeout=60, what="AMI of node1 back")
    again = await originate_citizen(node1, "12301", caller="13906000004", hold_seconds=1)
    record_d = await waiter(lambda: _closed(db, again.call_id), timeout=60, what="a new call on node1 recorded")
    assert record_d.node == "node1" and record_d.hangup_cause != "node_lost"
    still = await _lost_records(db, lost)
    assert still and {k: (r.ended_at, r.hangup_cause, r.source) for k, r in still.items()} == \
        {k: (r.ended_at, r.hangup_cause, r.source) for k, r in records.items()}
    assert await _callback_count(db, [call.caller for call in lost]) == 2
    # node1's agent states were read again from its QueueStatus (the CTI's log), and that left the agent on
    # node2 signed in and ready: one node's resync is not the other nodes' say.
    await waiter(lambda: _more_resyncs(settings, "node1", resyncs), timeout=60, what="node1's agents resynced")
    assert await _desk_state(other, "ready"), (await other.get_json("/api/desk/state"))[1]


async def _contacts(settings, extension: str) -> list[str]:
    return await asyncio.to_thread(kamailio.registered_contacts, settings, extension)


def _sent_to(settings, callers: list[str]) -> set[str]:
    """Where Kamailio sent these callers' INVITEs (its log: "carrier call <id> from <caller> to <node>")."""
    wanted = set(callers)
    text = (settings.log_dir / "kamailio.log").read_text(errors="replace")
    return {uri for caller, uri in re.findall(r"carrier call \S+ from (\d+) to (sip:\S+)", text) if caller in wanted}


async def _all_answered(runtimes, callers: list[str]) -> dict[str, set[str]] | None:
    found = _answered_by_node(runtimes, callers)
    return found if set().union(*found.values()) == set(callers) else None


async def _answered_on(runtimes, callers: list[str], node: str, at_least: int) -> bool:
    return len(_answered_by_node(runtimes, callers)[node]) >= at_least


async def _bridged(ami, phone: str) -> bool:
    """The phone's channel on this node shares a bridge with another channel (it is talking)."""
    channels = await control.live_channels(ami)
    mine = next((c for c in channels if c["Channel"].startswith(f"PJSIP/{phone}-") and c.get("BridgeId")), None)
    return bool(mine) and any(c.get("BridgeId") == mine["BridgeId"] and c is not mine for c in channels)


async def _logged_in(ami) -> bool:
    return ami.logged_in.is_set()


async def _record(db, call_id: str) -> CallRecord | None:
    async with db.session() as session:
        return await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))


async def _closed(db, call_id: str) -> CallRecord | None:
    record = await _record(db, call_id)
    return record if record and record.ended_at else None


async def _queued(db, call_id: str) -> bool:
    record = await _record(db, call_id)
    return bool(record and record.queued_at and not record.ended_at)


async def _lost_records(db, calls: tuple[PlacedCall, ...]) -> dict[str, CallRecord] | None:
    records = {call.call_id: await _record(db, call.call_id) for call in calls}
    if all(r is not None and r.ended_at is not None and r.hangup_cause == "node_lost" for r in records.values()):
        return records
    return None


async def _callback_tasks(db, calls: tuple[PlacedCall, ...]) -> dict[str, CallbackRequest]:
    async with db.session() as session:
        rows = (await session.scalars(select(CallbackRequest).where(
            CallbackRequest.number.in_([call.caller for call in calls])))).all()
    return {row.number: row for row in rows}


async def _callback_count(db, numbers: list[str]) -> int:
    async with db.session() as session:
        return await session.scalar(select(func.count()).select_from(CallbackRequest).where(
            CallbackRequest.number.in_(numbers)))


async def _filed(db, call_id: str) -> Recording | None:
    async with db.session() as session:
        return await session.scalar(select(Recording).where(Recording.call_id == call_id, Recording.kind == "call"))


async def _desk_state(desk: Desk, state: str) -> bool:
    status, body = await desk.get_json("/api/desk/state")
    return status == 200 and body.get("state") == state


async def _desk_page(desk: Desk) -> str:
    async with desk.http.get(f"{desk.base}/desk") as resp:
        assert resp.status == 200
        return await resp.text()


def _cdr_text(runtime) -> str:
    path = runtime.host_path(runtime.inside("log", "cdr-csv", "Master.csv"))
    return path.read_text(errors="replace") if path.exists() else ""


async def _status_of_loss(settings, runtime) -> str | None:
    health = {h.name: h for h in await asyncio.to_thread(check_health, settings, runtime)}
    node1, cti = health[settings.node("node1").program], health["cti"]
    return cti.detail if not node1.ok and not cti.ok and "node1已失联" in cti.detail else None


def _cti_lines(settings, node: str, last: int = 15) -> list[str]:
    """The CTI's last log lines about ``node`` (a failure says what the CTI was doing)."""
    lines = (settings.log_dir / "cti.log").read_text(errors="replace").splitlines()
    return [line[:300] for line in lines if node in line][-last:]


def _agent_resyncs(settings, node: str) -> int:
    """How many times the CTI has rebuilt agent states from ``node``'s QueueStatus (its log)."""
    count = 0
    for line in (settings.log_dir / "cti.log").read_text(errors="replace").splitlines():
        if '"agents_resynced"' in line:
            with contextlib.suppress(ValueError):
                count += json.loads(line).get("node") == node
    return count


async def _more_resyncs(settings, node: str, before: int) -> bool:
    return _agent_resyncs(settings, node) > before


def _uid(pid: int) -> int:
    """The process's real user id (/proc/<pid>/status "Uid:" real, effective, saved, file system)."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
    return int(line.split()[1])
