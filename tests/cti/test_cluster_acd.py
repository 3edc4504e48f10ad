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
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
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
from cti.books import phone_of
from sipdrivers.carrier import SIPP_DIR, run_citizen_calls
from sipdrivers.phones import SippPhone
from tests.conftest import TEST_SETTINGS
from tests.cti.test_kamailio_cluster import _closed, _contacts, speech  # noqa: F401 - speech: the fixture
from tests.cti.test_two_nodes import _pops
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
        overrides = {**TEST_SETTINGS, "HOTLINE_CLUSTER_NODES": "2", "HOTLINE_DATABASE_URL": url,
                     "HOTLINE_QUEUES_MAX_WAIT_SECONDS": "90"}
        with throwaway_stack(overrides, "hotline-acd-", say=lambda line: print(line, flush=True)) as stack:
            yield stack


def _answer_then_hang_up(folder: Path, talk_ms: int) -> Path:
    """agent_answer_hangup.xml ending the call ``talk_ms`` after the answer, its BYE along the route set
    Kamailio recorded (as a phone behind a proxy sends it)."""
    text = (SIPP_DIR / "agent_answer_hangup.xml").read_text()
    bye = "      From: [$callee];tag="
    assert 'timeout="12000"' in text and text.count(bye) == 1
    target = folder / f"agent_answer_hangup_{talk_ms}.xml"
    target.write_text(text.replace('timeout="12000"', f'timeout="{talk_ms}"').replace(bye, f"      [routes]\n{bye}"))
    return target


class NodeEvents:
    """Every queue event of both nodes, from the test's own AMI connections (not the CTI's records)."""

    NAMES = {"QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled", "AgentConnect",
             "AgentComplete", "AgentRingNoAnswer", "QueueMemberAdded", "QueueMemberRemoved"}

    def __init__(self, nodes: AmiNodes) -> None:
        self.events: list[dict[str, Any]] = []
        for client in nodes:
            client.on_event("*", lambda _m, event, node=client.node.name: self._keep(node, event))

    def _keep(self, node: str, event: Any) -> None:
        if event.get("Event") in self.NAMES:
            self.events.append({**dict(event), "node": node, "at": float(event.get("Timestamp"))})

    def of(self, *names: str) -> list[dict[str, Any]]:
        return sorted((e for e in self.events if e["Event"] in names), key=lambda e: e["at"])

    def connected(self, callers: set[str]) -> dict[str, dict[str, Any]]:
        """The callers (by caller id) an agent answered, with their AgentConnect."""
        return {e["CallerIDNum"]: e for e in self.of("AgentConnect") if e.get("CallerIDNum") in callers}

    def moves(self) -> list[tuple[str, str, str]]:
        """(phone, from node, to node): a phone leaving a queue on one node and joining it on the other."""
        found, left = [], {}
        for e in self.of("QueueMemberRemoved", "QueueMemberAdded"):
            key = (phone_of(e.get("Interface") or e.get("StateInterface")), e.get("Queue"))
            if e["Event"] == "QueueMemberRemoved":
                left[key] = e["node"]
            elif key in left and left[key] != e["node"]:
                found.append((key[0], left.pop(key), e["node"]))
        return found

    def double_rings(self) -> list[tuple[str, str, float]]:
        """(phone, node, when) of every AgentCalled while the phone rang, talked or was in wrap-up through the
        other node."""
        busy: dict[str, list[tuple[str, float, float]]] = defaultdict(list)  # phone -> (node, from, to)
        open_at: dict[tuple[str, str, str], float] = {}  # (phone, node, caller uniqueid) -> ringing since
        talking: dict[tuple[str, str], float] = {}
        end = max((e["at"] for e in self.events), default=0) + 3600
        for e in self.of(*self.NAMES):
            phone = phone_of(e.get("Interface") or e.get("DestChannel"))
            key = (phone, e["node"], e.get("Uniqueid"))
            if e["Event"] == "AgentCalled":
                open_at[key] = e["at"]
            elif e["Event"] in ("AgentRingNoAnswer", "AgentConnect") and key in open_at:
                busy[phone].append((e["node"], open_at.pop(key), e["at"]))
                if e["Event"] == "AgentConnect":
                    talking[(phone, e["node"])] = e["at"]
            elif e["Event"] == "AgentComplete" and (phone, e["node"]) in talking:
                busy[phone].append((e["node"], talking.pop((phone, e["node"])), e["at"] + WRAPUP))
            elif e["Event"] == "QueueCallerAbandon":  # the caller hung up while a phone rang for them
                for ring in [k for k in open_at if k[1:] == (e["node"], e.get("Uniqueid"))]:
                    busy[ring[0]].append((e["node"], open_at.pop(ring), e["at"]))
        for (phone, node, _caller), since in open_at.items():
            busy[phone].append((node, since, end))
        for (phone, node), since in talking.items():
            busy[phone].append((node, since, end))
        return [(phone_of(e["Interface"]), e["node"], e["at"]) for e in self.of("AgentCalled")
                if any(node != e["node"] and start <= e["at"] <= stop
                       for node, start, stop in busy[phone_of(e["Interface"])])]

    def order_inversions(self) -> list[tuple[str, str]]:
        """(earlier caller, later caller) of one queue where the later one was offered to an agent while the
        earlier one was still waiting, not yet offered to anyone (callers of both nodes in one order)."""
        joined = {(e["node"], e["Uniqueid"]): e for e in self.of("QueueCallerJoin")}
        first_offer: dict[tuple[str, str], float] = {}
        for e in self.of("AgentCalled"):
            first_offer.setdefault((e["node"], e["Uniqueid"]), e["at"])
        left = {(e["node"], e["Uniqueid"]): e["at"] for e in self.of("QueueCallerLeave", "QueueCallerAbandon")}
        inversions = []
        for later, offered_at in first_offer.items():
            for earlier, join in joined.items():
                if (earlier != later and join["Queue"] == joined[later]["Queue"]
                        and join["at"] < joined[later]["at"]
                        and first_offer.get(earlier, float("inf")) > offered_at
                        and left.get(earlier, float("inf")) > offered_at):
                    inversions.append((join["CallerIDNum"], joined[later]["CallerIDNum"]))
        return inversions


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
    phones = {user: SippPhone(settings, phone, node=front, answer=str(_answer_then_hang_up(tmp_path, talk)))
              for user, (phone, talk) in AGENTS.items()}
    desks = {user: Desk(settings.web_url) for user in AGENTS}
    try:
        await tools.connect()
        seen = NodeEvents(tools)
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
        for user, desk in desks.items():
            await desk.login(user, password)
            assert (await desk.post("/api/desk/state", {"action": "login", "phone": AGENTS[user][0]}))[0] == 200
            assert (await desk.post("/api/desk/state", {"action": "ready"}))[0] == 200

        # Six citizens, two a second, each on the line until the survey after their call ends (or 45 s).
        result = await asyncio.to_thread(run_citizen_calls, settings, QUEUE, "", CALLERS, speech, hold_ms=45000,
                                         rate=2, timeout=120, scenario=SIPP_DIR / "citizen_proxied.xml")
        print(f"citizens: {result.successful} ended as scripted, {result.failed} otherwise (the survey may "
              "end a call before the citizen does)")
        answered = await waiter(lambda: _all_answered(seen, set(CALLERS)), timeout=60,
                                what="every caller answered by an agent")

        joins = seen.of("QueueCallerJoin")
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
        for desk in desks.values():
            await desk.post("/api/desk/state", {"action": "logout"})
            await desk.close()
        for phone in phones.values():
            phone.stop()
        await tools.close()
        await redis.aclose()
        await db.close()


async def _node_up(settings, name: str) -> bool:
    return (await asyncio.to_thread(kamailio.dispatcher_state, settings))[name].up


async def _all_answered(seen: NodeEvents, callers: set[str]) -> dict[str, dict[str, Any]] | None:
    connected = seen.connected(callers)
    return connected if set(connected) == callers else None


async def _pops_with(redis, call_id: str) -> dict[str, dict] | None:
    pops = await _pops(redis)
    return pops if call_id in pops else None
