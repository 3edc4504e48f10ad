"""Two Asterisk nodes in one platform (issue 14 item 6): each takes calls directly, each call's record,
screen pop and recording name its node, and the desk's call control acts on the node of the agent's call.

One stack with two configured nodes (two Asterisk instances from the same runtime, node2 on its own
loopback address and ports, no Kamailio), two SIPp agent phones (8001 on node1, 8002 on node2) and one
citizen call per node, both up at once. Second sources: each node's own CoreShowChannels and CDR.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cli.democall import originate_citizen
from core import events as ev
from core.ami import AmiNodes
from core.asterisk_runtime import node_runtimes
from core.db import Database
from core.models import User
from core.redis import connect as redis_connect
from core.settings import DEFAULT_CONFIG
from cti import control
from cti.models import CallRecord
from recordings.models import Recording
from sipdrivers.phones import SippPhone
from tests.conftest import TEST_SETTINGS
from tests.desk.http_client import Desk

pytestmark = pytest.mark.stack

NODE2_ADDRESS = "127.0.0.3"  # node1 is on 127.0.0.1 (config [sip] bind); 127.0.0.2 is the carrier's


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from cli.stack import free_port_block, throwaway_stack

    first = free_port_block()
    second = free_port_block()
    while second["HOTLINE_SIP_PORT"] == first["HOTLINE_SIP_PORT"]:
        second = free_port_block()
    config = tmp_path_factory.mktemp("two-nodes") / "hotline.toml"
    base = int(second["HOTLINE_SIP_PORT"])
    config.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8") + f"""
[nodes.node2]
address = "{NODE2_ADDRESS}"
sip_port = {base}
ami_port = {base + 1}
rtp_start = {base + 10}
rtp_end = {base + 99}
""", encoding="utf-8")
    overrides = {**TEST_SETTINGS, **first, "HOTLINE_CONFIG": str(config), "HOTLINE_ASTERISK_NODES": "node1,node2"}
    with throwaway_stack(overrides, "hotline-2nodes-", say=lambda line: print(line, flush=True)) as stack:
        yield stack


async def _channels(ami) -> list[dict]:
    return await control.live_channels(ami)


async def _bridged(ami, phone: str) -> dict | None:
    """The phone's channel on this node while it shares a bridge with another channel."""
    channels = await _channels(ami)
    mine = next((c for c in channels if c["Channel"].startswith(f"PJSIP/{phone}-") and c.get("BridgeId")), None)
    if mine and any(c.get("BridgeId") == mine["BridgeId"] and c is not mine for c in channels):
        return mine
    return None


async def _pops(redis) -> dict[str, dict]:
    pops = {}
    for _id, fields in await redis.xrange(ev.STREAM):
        if fields.get("name") == "screen_pop":
            data = json.loads(fields["data"])
            pops[data["call_id"]] = data
    return pops


def _cdr_ids(runtime) -> str:
    path = runtime.host_path(runtime.inside("log", "cdr-csv", "Master.csv"))
    return path.read_text(errors="replace") if path.exists() else ""


async def test_calls_on_each_node_get_their_node_on_records_pops_recordings_and_desk_control(two_nodes, waiter):
    settings, runtime = two_nodes
    assert [node.name for node in settings.nodes] == ["node1", "node2"]
    runtimes = node_runtimes(settings, runtime)
    tools = AmiNodes.for_settings(settings, "tools")
    db, redis = Database(settings.database_url), redis_connect(settings, "tools")
    password = settings.secrets["demo_password"]
    phones = {"8001": SippPhone(settings, "8001", node=settings.node("node1")).start(),
              "8002": SippPhone(settings, "8002", node=settings.node("node2")).start()}
    desks = {"agent1": Desk(settings.web_url), "agent2": Desk(settings.web_url)}
    try:
        await tools.connect()
        await phones["8001"].wait_registered(runtimes["node1"])
        await phones["8002"].wait_registered(runtimes["node2"])
        async with db.session() as session:
            ids = dict((await session.execute(select(User.username, User.id).where(
                User.username.in_(["agent1", "agent2"])))).all())
        for (username, desk), phone in zip(desks.items(), phones, strict=True):
            await desk.login(username, password)
            assert (await desk.post("/api/desk/state", {"action": "login", "phone": phone}))[0] == 200
            assert (await desk.post("/api/desk/state", {"action": "ready"}))[0] == 200
        # Each agent joined the queues on the node their phone is registered on, and only there.
        assert (await control.agent_session(redis, ids["agent1"]))["node"] == "node1"
        assert (await control.agent_session(redis, ids["agent2"]))["node"] == "node2"

        # One call per node, both up at once: 12301 (agent1's queues) on node1, 12365 (agent2's) on node2.
        calls = {
            "node1": await originate_citizen(tools["node1"], "12301", keys="0", caller="13700000001",
                                             hold_seconds=90, delay_seconds=3),
            "node2": await originate_citizen(tools["node2"], "12365", keys="0", caller="13700000002",
                                             hold_seconds=90, delay_seconds=3),
        }
        leg1 = await waiter(lambda: _bridged(tools["node1"], "8001"), timeout=60, what="agent1 talking on node1")
        leg2 = await waiter(lambda: _bridged(tools["node2"], "8002"), timeout=60, what="agent2 talking on node2")
        # Node-qualified uniqueids (asterisk.conf systemname): unique across the nodes.
        assert leg1["Uniqueid"].startswith("node1-") and leg2["Uniqueid"].startswith("node2-")
        assert not any(c["Channel"].startswith("PJSIP/8002-") for c in await _channels(tools["node1"]))

        pops = await waiter(lambda: _pops_for(redis, calls), timeout=20, what="both screen pops")
        assert (pops[calls["node1"].call_id]["agent_id"], pops[calls["node1"].call_id]["node"]) == \
            (ids["agent1"], "node1")
        assert (pops[calls["node2"].call_id]["agent_id"], pops[calls["node2"].call_id]["node"]) == \
            (ids["agent2"], "node2")

        # The desk's call control goes to the node of the agent's call: hold, resume, hang up, on node2 only.
        assert (await desks["agent2"].post("/api/desk/call/hold", {}))[0] == 200
        await waiter(lambda: _in_context(tools["node2"], "desk-hold", "citizen"), timeout=20,
                     what="the node2 citizen hearing music on hold")
        assert (await desks["agent2"].post("/api/desk/call/resume", {}))[0] == 200
        await waiter(lambda: _bridged(tools["node2"], "8002"), timeout=20, what="the node2 call resumed")
        # The desk's hang-up ends the agent's leg (the citizen may go on to the satisfaction survey).
        assert (await desks["agent2"].post("/api/desk/call/hangup", {}))[0] == 200
        await waiter(lambda: _phone_gone(tools["node2"], "8002"), timeout=20, what="agent2's leg on node2 to end")
        assert await _bridged(tools["node1"], "8001"), "hanging up on node2 touched the call on node1"
        assert (await desks["agent1"].post("/api/desk/call/hangup", {}))[0] == 200
        await waiter(lambda: _phone_gone(tools["node1"], "8001"), timeout=20, what="agent1's leg on node1 to end")
        for node, call in calls.items():  # the citizens hang up (in the survey, if it asks them)
            for channel in await _channels(tools[node]):
                if channel.get("Uniqueid") == call.call_id:
                    await control.hangup(tools[node], channel["Channel"])
            await waiter(lambda node=node, call=call: _gone(tools[node], call.call_id), timeout=20,
                         what=f"the {node} call to end")

        for node, call in calls.items():
            record = await waiter(lambda call=call: _closed(db, call.call_id), timeout=30,
                                  what=f"the {node} call record closed")
            agent = "agent1" if node == "node1" else "agent2"
            assert (record.node, record.agent_id, record.abandoned) == (node, ids[agent], False)
            assert record.answered_at is not None and record.recording_file
            recording = await waiter(lambda call=call: _filed(db, call.call_id), timeout=60,
                                     what=f"the {node} recording filed")
            assert recording.node == node and recording.format != "missing"
            assert Path(settings.recordings_dir / recording.path).stat().st_size > 0
        record2 = await _closed(db, calls["node2"].call_id)
        assert record2.hold_seconds > 0  # the hold from the desk happened on node2's citizen leg
        # Each node's own CDR has its own call and not the other's.
        cdr1, cdr2 = await waiter(lambda: _both_cdrs(runtimes, calls), timeout=20, what="both nodes' CDR rows")
        assert calls["node2"].call_id not in cdr1 and calls["node1"].call_id not in cdr2
    finally:
        await sign_out_and_close(desks, phones, tools, redis, db)


async def sign_out_and_close(desks: dict[str, Desk], phones: dict[str, SippPhone], tools: AmiNodes, redis,
                             db: Database) -> None:
    """The end of a multi-node scenario, whatever happened: agents signed out, phones, connections closed."""
    for desk in desks.values():
        await desk.post("/api/desk/state", {"action": "logout"})
        await desk.close()
    for phone in phones.values():
        phone.stop()
    await tools.close()
    await redis.aclose()
    await db.close()


async def _pops_for(redis, calls) -> dict | None:
    pops = await _pops(redis)
    return pops if all(call.call_id in pops for call in calls.values()) else None


async def _in_context(ami, context: str, exten: str) -> bool:
    return any((c.get("Context"), c.get("Exten"), c.get("Application")) == (context, exten, "MusicOnHold")
               for c in await _channels(ami))


async def _phone_gone(ami, phone: str) -> bool:
    return not any(c["Channel"].startswith(f"PJSIP/{phone}-") for c in await _channels(ami))


async def _gone(ami, call_id: str) -> bool:
    return not any(c.get("Uniqueid") == call_id for c in await _channels(ami))


async def _closed(db, call_id: str) -> CallRecord | None:
    async with db.session() as session:
        row = await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))
    return row if row and row.ended_at else None


async def _filed(db, call_id: str) -> Recording | None:
    async with db.session() as session:
        return await session.scalar(select(Recording).where(Recording.call_id == call_id, Recording.kind == "call"))


async def _both_cdrs(runtimes, calls) -> tuple[str, str] | None:
    cdr1, cdr2 = _cdr_ids(runtimes["node1"]), _cdr_ids(runtimes["node2"])
    return (cdr1, cdr2) if calls["node1"].call_id in cdr1 and calls["node2"].call_id in cdr2 else None
