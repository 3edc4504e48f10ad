"""Cluster mode, one ACD across the nodes (issue 19 items 1, 3 and 5): phones registered with Kamailio
only are reached by every node through it, and agents follow the oldest caller across the nodes.

One stack as `./hotline up --nodes 2` on PostgreSQL (Kamailio, node1 on 127.0.0.11, node2 on 127.0.0.12).
Two agent phones (8001 for agent1, 8003 for agent3, both with the 12301-general skill) register with
Kamailio only; agent1's phone ends its calls after 1.5 s, agent3's after 4 s, so the two agents come free at
different rates and the oldest caller is on either node in turn. Six SIPp citizens from the carrier
address call the queue's own number through Kamailio, which spreads them over both nodes: more callers
than agents, so callers wait on both nodes at once.

Second source: both nodes' own AMI events (QueueCallerJoin, AgentCalled, AgentConnect, AgentComplete,
AgentRingNoAnswer, QueueCallerAbandon with Asterisk's timestamps), counted here:
- double rings: an AgentCalled for a phone on one node while that phone rings, talks or is in wrap-up
  through the other node: must be 0;
- order inversions: a caller offered to an agent while an earlier caller of the same queue (on either
  node) was still waiting and not yet offered to anyone: must be 0;
and Kamailio's registrar and log (the nodes called the phones through it), a node2 caller's screen pop
and call record carrying node2 and the agent whose phone is on Kamailio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from core import kamailio
from core.ami import AmiNodes
from core.asterisk_runtime import node_runtimes
from core.db import Database
from core.models import User
from core.redis import connect as redis_connect
from cti.announce import expected_wait, next_holdtime
from cti.books import phone_of
from sipdrivers.acd_events import NodeEvents
from sipdrivers.carrier import SIPP_DIR, run_citizen_calls
from sipdrivers.phones import SippPhone, answer_then_hang_up
from tests.conftest import TEST_SETTINGS
from tests.cti.test_kamailio_cluster import _closed, _contacts, speech  # noqa: F401 - speech: the fixture
from tests.cti.test_two_nodes import _pops, sign_out_and_close
from tests.desk.http_client import Desk

pytestmark = pytest.mark.stack

QUEUE = "12301-general"
AGENTS = {"agent1": ("8001", 1500), "agent3": ("8003", 4000)}  # phone, how long it talks before hanging up
CALLERS = [f"1390000{index:04d}" for index in range(6)]
WRAPUP = float(TEST_SETTINGS["HOTLINE_QUEUES_WRAPUP_SECONDS"])


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, Any]]:
    from cli.postgres import throwaway_postgresql
    from cli.stack import throwaway_stack

    with throwaway_postgresql(prefix="hotline-acd-pg-") as url:
        # Callers may wait a while here (two agents for six callers): no voicemail offer meanwhile.
        # Announcements every 5 s, so callers still waiting once agents answer hear an expected wait.
        overrides = {**TEST_SETTINGS, "HOTLINE_CLUSTER_NODES": "2", "HOTLINE_DATABASE_URL": url,
                     "HOTLINE_QUEUES_MAX_WAIT_SECONDS": "90", "HOTLINE_QUEUES_ANNOUNCE_EVERY_SECONDS": "5"}
        with throwaway_stack(overrides, "hotline-acd-", say=lambda line: print(line, flush=True)) as stack:
            yield stack


async def test_agents_on_kamailio_follow_the_oldest_caller_across_both_nodes(cluster, speech, waiter, tmp_path):  # noqa: F811
    settings, runtime = cluster
    runtimes = node_runtimes(settings, runtime)
    assert [n.name for n in settings.nodes] == ["node1", "node2"]
    for name in runtimes:
        await waiter(lambda name=name: _node_up(settings, name), timeout=30, what=f"dispatcher marking {name} up")
    tools = AmiNodes.for_settings(settings, "tools")
    db, redis = Database(settings.database_url), redis_connect(settings, "tools")
    password = settings.secrets["demo_password"]
    front = SimpleNamespace(address=settings.sip.bind, sip_port=settings.sip.port)  # Kamailio
    phones = {user: SippPhone(settings, phone, node=front, answer=str(answer_then_hang_up(tmp_path, talk)))
              for user, (phone, talk) in AGENTS.items()}
    desks = {user: Desk(settings.web_url) for user in AGENTS}
    try:
        await tools.connect()
        seen = NodeEvents(tools, WRAPUP)
        for phone in phones.values():
            phone.start()
            await waiter(lambda phone=phone: _contacts(settings, phone.extension), timeout=30,
                         what=f"{phone.extension} registered with Kamailio")
        # Registered with Kamailio only: no node holds a registration of their own, each node's contact of
        # the phone is Kamailio's phone side.
        for name, node_runtime in runtimes.items():
            aor = await asyncio.to_thread(node_runtime.rx, "pjsip show aor 8001")
            assert f"sip:8001@{settings.cluster.phone_proxy_address}" in aor, (name, aor)
            assert f"{phones['agent1'].address}:{phones['agent1'].local_port}" not in aor, (name, aor)
        async with db.session() as session:
            ids = dict((await session.execute(select(User.username, User.id).where(
                User.username.in_(list(AGENTS))))).all())
        for user, desk in desks.items():  # signed in, not ready yet: the callers wait first
            await desk.login(user, password)
            assert (await desk.post("/api/desk/state", {"action": "login", "phone": AGENTS[user][0]}))[0] == 200

        # Six citizens, two a second, each on the line until the survey after their call ends (or 60 s).
        citizens = asyncio.create_task(asyncio.to_thread(
            run_citizen_calls, settings, QUEUE, "", CALLERS, speech, hold_ms=60000, rate=2, timeout=150,
            scenario=SIPP_DIR / "citizen_proxied.xml"))
        # Nobody ready: all six wait, over both nodes, and each is told its place among the callers of BOTH
        # nodes (app_queue would count its own node's only).
        first = await waiter(lambda: _first_announcements(seen, set(CALLERS)), timeout=60,
                             what="every caller told its place in the queue")
        joins = [e for e in seen.of("QueueCallerJoin") if e.get("CallerIDNum") in CALLERS]
        print("told at first:", {c: (e["node"], e["Position"], e["Wait"]) for c, e in sorted(first.items())})
        behind_the_other_node = 0
        for caller, told in first.items():
            join = told["join"]
            earlier = [e for e in joins if e["at"] < join["at"]]
            assert int(told["Position"]) == 1 + len(earlier), (caller, told["Position"], earlier)
            assert told["whispered"], f"nothing was whispered into {caller}'s channel"
            assert told["Wait"] == "0"  # nobody answered yet: no hold time to go by
            behind_the_other_node += int(told["Position"]) > 1 + sum(1 for e in earlier if e["node"] == join["node"])
        assert behind_the_other_node, "no caller was counted behind callers of the other node"
        for desk in desks.values():
            assert (await desk.post("/api/desk/state", {"action": "ready"}))[0] == 200
        result = await citizens
        print(f"citizens: {result.successful} ended as scripted, {result.failed} otherwise (the survey may "
              "end a call before the citizen does)")
        answered = await waiter(lambda: _all_answered(seen, set(CALLERS)), timeout=60,
                                what="every caller answered by an agent")

        joins = seen.of("QueueCallerJoin")
        # Callers still waiting once agents answered were told an expected wait: the average hold time of the
        # callers answered on both nodes (app_queue's weights), computed here from both nodes' AgentConnect.
        connects = [e for e in seen.of("AgentConnect") if e.get("Queue") == QUEUE]
        averages, average = [], None  # (at, the nodes answered so far, the average then)
        for index, connect in enumerate(connects):
            average = next_holdtime(average, float(connect["HoldTime"]))
            averages.append((connect["at"], {c["node"] for c in connects[:index + 1]}, round(average, 3)))
        later = [a for a in seen.announcements() if a.get("Holdtime")]
        assert later, "no caller was told an expected wait"
        counted_nodes = set()
        for told in later:
            # The router had counted the answers up to this one, or all but the last (events cross on the way).
            known = [a for a in averages if a[0] <= told["at"]][-2:]
            match = [a for a in known if a[2] == float(told["Holdtime"])]
            assert match, (told, averages)
            counted_nodes |= match[-1][1]
            waited = float(told["Waited"])
            assert int(told["Wait"]) == expected_wait(float(told["Holdtime"]), waited), told
            assert 0 <= told["at"] - told["join"]["at"] - waited + 0.05, told  # counted from its own join
        assert counted_nodes == {"node1", "node2"}, "no expected wait counted the answers of both nodes"
        nodes_of_callers = {e["node"] for e in joins if e.get("CallerIDNum") in CALLERS}
        assert nodes_of_callers == {"node1", "node2"}, nodes_of_callers
        waits = {e["CallerIDNum"]: (e["node"], answered[e["CallerIDNum"]]["at"] - e["at"]) for e in joins
                 if e.get("CallerIDNum") in CALLERS}
        print("caller waits:", {c: f"{n} {w:.1f}s" for c, (n, w) in sorted(waits.items())})
        # Fewer agents than callers: callers waited for an agent on both nodes.
        assert {n for n, w in waits.values() if w > 3} == {"node1", "node2"}, waits

        doubles, inversions = seen.double_rings(), seen.order_inversions()
        rung_on = {phone_of(e["Interface"]): sorted({x["node"] for x in seen.of("AgentCalled")
                                                    if x["Interface"] == e["Interface"]})
                   for e in seen.of("AgentCalled")}
        moves = seen.moves()
        print(f"double rings {len(doubles)}, order inversions {len(inversions)}, phones rung on {rung_on}, "
              f"moves {moves}")
        # Both agents start on one home node (cti.routing.home_node: node2 for agent ids 1 and 3), so the
        # first caller on node1 moves one of them there: the nodes' own events show a phone leaving one
        # node's queue for the other's.
        assert ids["agent1"] % 2 == ids["agent3"] % 2, ids
        assert moves, "no agent followed a caller to the other node"
        assert doubles == [], doubles
        assert inversions == [], inversions

        # A caller on node2, answered by an agent whose phone is on Kamailio: its pop and record say node2.
        on_node2 = next(e for e in answered.values() if e["node"] == "node2")
        call_id, phone = on_node2["Uniqueid"], phone_of(on_node2["Interface"])
        agent = next(user for user, (ext, _talk) in AGENTS.items() if ext == phone)
        assert await _contacts(settings, phone)
        log = (settings.log_dir / "kamailio.log").read_text(errors="replace")
        assert f"node {settings.node('node2').address} calls phone {phone}" in log
        record = await waiter(lambda: _closed(db, call_id), timeout=60, what="the node2 call record closed")
        assert (record.node, record.agent_id, record.queue) == ("node2", ids[agent], QUEUE)
        pops = await waiter(lambda: _pops_with(redis, call_id), timeout=20, what="the node2 call's screen pop")
        pop = pops[call_id]
        assert (pop["node"], pop["agent_id"]) == ("node2", ids[agent])
    finally:
        await sign_out_and_close(desks, phones, tools, redis, db)


async def _node_up(settings, name: str) -> bool:
    return (await asyncio.to_thread(kamailio.dispatcher_state, settings))[name].up


async def _all_answered(seen: NodeEvents, callers: set[str]) -> dict[str, dict[str, Any]] | None:
    connected = seen.connected(callers)
    return connected if set(connected) == callers else None


async def _first_announcements(seen: NodeEvents, callers: set[str]) -> dict[str, dict[str, Any]] | None:
    first: dict[str, dict[str, Any]] = {}
    for told in seen.announcements():
        caller = (told["join"] or {}).get("CallerIDNum")
        if caller in callers:
            first.setdefault(caller, told)
    return first if set(first) == callers and all(t["whispered"] for t in first.values()) else None


async def _pops_with(redis, call_id: str) -> dict[str, dict] | None:
    pops = await _pops(redis)
    return pops if call_id in pops else None
