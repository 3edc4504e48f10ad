"""One ACD across the Asterisk nodes (cluster mode, issue 19 item 3): agents follow the oldest caller.

Every node keeps its own app_queue (music, announcements, recordings, wrap-up, the AgentCalled /
AgentConnect / AgentComplete events the rest of the CTI follows); what the CTI adds is *where* each agent
is a member. A signed-in agent is a member of their skill queues on exactly one node at a time (the
session's ``node``), and unpaused there only when this router put them there:

- each node's QueueCallerJoin / QueueCallerLeave / QueueCallerAbandon (with Asterisk's timestamp) keep
  one list of the callers waiting across the nodes; AgentCalled / AgentRingNoAnswer say which of them an
  agent is being offered to;
- whenever that list or an agent changes, the free agents (READY, no call anywhere) are matched to the
  waiting callers in order of arrival across the nodes, each caller not yet offered to anyone taking the
  agent of its queue already on its node if there is one, else the longest idle one; an agent matched
  to a caller on another node is moved there (pause on the old node, check that no call reached the phone
  meanwhile, leave the old node's queues, join the new node's unpaused), and app_queue on that node rings
  them for its longest-waiting caller. Agents nobody waits for stay where they are (their home node,
  round robin at log-in), unpaused, so a new caller there is answered at once;
- at the end of every queue call (AgentComplete) the agent is paused on that node at once (reason
  ``acd``), so app_queue does not offer them the next caller of that node when its wrap-up ends: the
  router decides where they go next, which may be another node whose caller has waited longer.

The moves run under the agent's command lock (cti.control.agent_commands), like the desk's commands for
that agent, so a move and a 示忙 or 签出 never interleave; the CTI is the one process that changes queue
membership, so in-process locks are enough (one CTI for the platform, as today).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from core.ami import AmiError, AmiNodes, first_response, succeeded
from core.db import Database
from core.models import User
from core.vocabulary import AgentState
from cti.agents import ACD_HOLD
from cti.announce import QueueAnnouncer
from cti.books import phone_of
from cti.control import (
    AGENT_BY_PHONE,
    AGENT_SESSIONS,
    agent_channel,
    agent_commands,
    agent_session,
    interface,
    join_queue,
    set_agent_state,
)
from cti.tracker import event_node

# ACD_HOLD (cti.agents): the pause reason of an agent the router holds between calls (and during a move),
# not the agent's choice; the desk shows them in wrap-up or ready, and a resync takes it for READY.
ROUTE_EVERY = 1.0  # seconds: a pass even without an event (e.g. an agent's wrap-up ended in the tracker)


@dataclass
class Waiting:
    queue: str
    node: str
    joined: float        # Asterisk's time of QueueCallerJoin (epoch)
    offered: bool = False  # an agent's phone rings for this caller now (AgentCalled)
    channel: str = ""    # the caller's channel on its node (announcements are played into it)
    seen: float = 0.0    # when the router learned of the caller (local clock)


@dataclass
class FreeAgent:
    agent_id: int
    phone: str
    node: str
    queues: list[str]
    since: float


def home_node(names: list[str], agent_id: int) -> str:
    """Where an agent without a caller waiting for them sits after log-in: the nodes in turn by agent id."""
    return names[agent_id % len(names)]


def assign(callers: list[tuple[str, Waiting]], free: list[FreeAgent]) -> dict[int, str]:
    """Which node each free agent should be on (pure): callers in order of arrival across the nodes, each
    not yet offered to anyone takes a free agent of its queue (one already on its node first, else the
    longest idle); agents matched to nobody are not in the result (they stay where they are)."""
    pool = sorted(free, key=lambda a: a.since)
    placed: dict[int, str] = {}
    for _key, caller in sorted(callers, key=lambda item: item[1].joined):
        if caller.offered:
            continue
        candidates = [a for a in pool if caller.queue in a.queues]
        if not candidates:
            continue
        pick = next((a for a in candidates if a.node == caller.node), candidates[0])
        placed[pick.agent_id] = caller.node
        pool.remove(pick)
    return placed


class ClusterRouter:
    EVENTS = ("QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled", "AgentRingNoAnswer",
              "AgentConnect", "AgentComplete")

    def __init__(self, nodes: AmiNodes, redis, db: Database, log) -> None:
        self.nodes = nodes
        self.names = [client.node.name for client in nodes]
        self.redis = redis
        self.db = db
        self.log = log
        self.waiting: dict[str, Waiting] = {}  # "<node>/<caller uniqueid>" -> the caller
        # agent id -> (node, since): the router unpaused them there in that state (a pause, a call or a
        # wrap-up since then changes the state's since, and the next pass unpauses or moves them again)
        self.placed: dict[int, tuple[str, float]] = {}
        self.moves = 0
        # Position and expected-wait announcements over every node's callers (app_queue's are off).
        self.announcer = QueueAnnouncer(nodes, db, log)
        self._kick = asyncio.Event()
        self.task: asyncio.Task | None = None

    def home(self, agent_id: int) -> str:
        return home_node(self.names, agent_id)

    def kick(self) -> None:
        self._kick.set()

    # -- what the nodes say -----------------------------------------------------------------------------
    async def handle(self, event: Any) -> bool:
        name = event.get("Event")
        if name not in self.EVENTS:
            return True
        node = event_node(event)
        key = f"{node}/{event.get('Uniqueid')}"
        if name == "QueueCallerJoin":
            self.waiting[key] = Waiting(event.get("Queue") or "", node, float(event.get("Timestamp") or time.time()),
                                        channel=event.get("Channel") or "", seen=time.time())
        elif name in ("QueueCallerLeave", "QueueCallerAbandon", "AgentConnect"):
            self.waiting.pop(key, None)
            await self.announcer.offered(key)
            self.announcer.forget(key)
            if name == "AgentConnect":
                self.announcer.answered(event.get("Queue") or "", float(event.get("HoldTime") or 0))
        elif name == "AgentCalled" and key in self.waiting:
            self.waiting[key].offered = True
            await self.announcer.offered(key)
        elif name == "AgentRingNoAnswer" and key in self.waiting:
            self.waiting[key].offered = False
        elif name == "AgentComplete":
            # Held at once on this node: app_queue would offer the agent this node's next caller when its
            # wrap-up ends, though a caller on another node may have waited longer.
            phone = phone_of(event.get("Interface") or event.get("DestChannel"))
            if phone:
                await self._hold(node, phone)
                agent_id = await self.redis.hget(AGENT_BY_PHONE, phone)
                if agent_id:
                    self.placed.pop(int(agent_id), None)
        self.kick()
        return True

    async def _hold(self, node: str, phone: str) -> None:
        try:
            reply = await self.nodes[node].action({"Action": "QueuePause", "Interface": interface(phone),
                                                   "Paused": "true", "Reason": ACD_HOLD})
        except AmiError as exc:  # the node is away: its members went with it
            self.log.warning("acd_hold_failed", node=node, phone=phone, reason=str(exc))
            return
        if not succeeded(reply):
            self.log.warning("acd_hold_failed", node=node, phone=phone, reason=first_response(reply).get("Message"))

    async def resync(self, ami) -> None:
        """After a (re)connect, before the agent states are read from the node: the callers waiting there
        now (QueueStatus: Asterisk is the truth), and the members it brought back (persistent members) of
        agents who moved to another node meanwhile leave it, so no agent is a member on two nodes."""
        node = ami.node.name
        reply = await ami.action({"Action": "QueueStatus"}, as_list=True, timeout=10)
        now = time.time()
        for key in [k for k, w in self.waiting.items() if w.node == node]:
            del self.waiting[key]
        for message in reply if isinstance(reply, list) else []:
            if message.get("Event") == "QueueEntry":
                self.waiting[f"{node}/{message.get('Uniqueid')}"] = Waiting(
                    message.get("Queue") or "", node, now - float(message.get("Wait") or 0),
                    channel=message.get("Channel") or "", seen=now)
            elif message.get("Event") == "QueueMember":
                await self._drop_stale_member(ami, message)
        # Unknown after a restart: every ready agent is unpaused (or moved) again by the next pass.
        self.placed = {a: p for a, p in self.placed.items() if p[0] != node}
        self.kick()

    async def _drop_stale_member(self, ami, member: Any) -> None:
        phone = phone_of(member.get("StateInterface") or member.get("Location"))
        agent_id = await self.redis.hget(AGENT_BY_PHONE, phone) if phone else None
        session = await agent_session(self.redis, int(agent_id)) if agent_id else None
        elsewhere = (session or {}).get("node")
        if (session and session.get("state") != AgentState.OFFLINE and elsewhere not in (None, ami.node.name)
                and elsewhere in self.names and self.nodes[elsewhere].logged_in.is_set()):
            await ami.action({"Action": "QueueRemove", "Queue": member.get("Queue"), "Interface": interface(phone)})
            self.log.info("acd_stale_member_removed", node=ami.node.name, phone=phone, queue=member.get("Queue"),
                          agent_node=elsewhere)

    # -- deciding ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), ROUTE_EVERY)
            except TimeoutError:
                pass
            self._kick.clear()
            try:
                await self.route_once()
            except Exception:  # noqa: BLE001 - next pass retries (a node or Redis away)
                self.log.exception("acd_route_failed")
            try:
                up = [name for name in self.names if self.nodes[name].logged_in.is_set()]
                await self.announcer.run_once(self.waiting, up)
            except Exception:  # noqa: BLE001 - next pass retries
                self.log.exception("acd_announce_failed")

    def start(self) -> asyncio.Task:
        self.task = asyncio.create_task(self.run())
        return self.task

    async def free_agents(self) -> list[FreeAgent]:
        free = []
        for agent_id, raw in (await self.redis.hgetall(AGENT_SESSIONS)).items():
            data = json.loads(raw)
            phone = data.get("phone") or ""
            # Browser phones register on the first node only (README "Cluster mode"): they are not moved.
            if data.get("state") == AgentState.READY and phone.isdigit() and data.get("node") in self.names:
                free.append(FreeAgent(int(agent_id), phone, data["node"], list(data.get("queues") or []),
                                      float(data.get("since") or 0)))
        return free

    async def route_once(self) -> None:
        up = [name for name in self.names if self.nodes[name].logged_in.is_set()]
        if not up:
            return
        free = await self.free_agents()
        # A node that is away has no callers to offer (its calls are closed as lost, cti.service); its
        # agents are placed on a node that is up (every node reaches their phones through Kamailio).
        targets = assign([item for item in self.waiting.items() if item[1].node in up], free)
        # Placed in the order of the callers they go to (assign's order, oldest first), the agents staying
        # where they are after them: an agent unpaused on a node for a younger caller before the agent moving
        # to an older caller elsewhere is in would be rung for the younger one first.
        order = {agent_id: index for index, agent_id in enumerate(targets)}
        for agent in sorted(free, key=lambda a: order.get(a.agent_id, len(order))):
            stay = agent.node if agent.node in up else (self.home(agent.agent_id) if self.home(agent.agent_id) in up
                                                        else up[0])
            try:
                await self.place(agent, targets.get(agent.agent_id, stay))
            except AmiError as exc:  # that node went away meanwhile: the next pass places the agent elsewhere
                self.log.warning("acd_place_failed", agent_id=agent.agent_id, node=agent.node, error=str(exc))

    async def place(self, agent: FreeAgent, target: str) -> None:
        """Unpause the free agent on ``target``, moving their membership there first if it is elsewhere."""
        if target == agent.node and self.placed.get(agent.agent_id) == (target, agent.since):
            return
        async with agent_commands(agent.agent_id):
            session = await agent_session(self.redis, agent.agent_id)
            if not session or session.get("state") != AgentState.READY or session.get("node") != agent.node:
                return  # changed meanwhile (rung, paused, signed out): the next pass sees it
            old = self.nodes[agent.node]
            if target == agent.node:
                await old.action({"Action": "QueuePause", "Interface": interface(agent.phone), "Paused": "false"})
                self.placed[agent.agent_id] = (target, float(session.get("since") or 0))
                return
            self.placed.pop(agent.agent_id, None)
            if old.logged_in.is_set():  # (a node that is away lost its members and calls with it)
                await self._hold(agent.node, agent.phone)
                # A call that reached the phone on the old node before the pause took effect keeps it there.
                session = await agent_session(self.redis, agent.agent_id)
                if (session or {}).get("state") != AgentState.READY or await agent_channel(old, agent.phone):
                    self.log.info("acd_move_skipped", agent_id=agent.agent_id, node=agent.node, target=target)
                    return
            async with self.db.session() as db:
                user = await db.scalar(select(User).where(User.id == agent.agent_id))
            if user is None:
                return
            for queue in agent.queues if old.logged_in.is_set() else []:
                try:
                    await old.action({"Action": "QueueRemove", "Queue": queue, "Interface": interface(agent.phone)})
                except AmiError:
                    pass  # not there: nothing to leave
            new = self.nodes[target]
            for queue in agent.queues:
                await join_queue(new, user, agent.phone, queue, paused=False)
            moved = await set_agent_state(self.redis, agent.agent_id, AgentState.READY, None, node=target)
            self.placed[agent.agent_id] = (target, float(moved.get("since") or 0))
            self.moves += 1
            self.log.info("acd_moved", agent_id=agent.agent_id, node=agent.node, target=target)
