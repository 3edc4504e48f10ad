"""What the nodes' own AMI events say about the one ACD across them (cluster mode, issue 19 items 3 and 5):
double rings, order inversions, agents moved between nodes, announcements, counted from every node's
queue events as received on the test's or the bench's own AMI connections, not from the CTI's records.
Shared by tests/cti/test_cluster_acd.py and bench/cluster.py.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from core.ami import AmiNodes
from cti.books import phone_of


class NodeEvents:
    """Every queue event of the nodes, from the caller's own AMI connections (not the CTI's records)."""

    NAMES = {"QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled", "AgentConnect",
             "AgentComplete", "AgentRingNoAnswer", "QueueMemberAdded", "QueueMemberRemoved"}
    # What a waiting caller was told (dialplans/queues.conf [hotline-announce]) and the whisper into their
    # channel that carries it.
    TOLD = {"UserEvent", "ChanSpyStart"}

    def __init__(self, nodes: AmiNodes, wrapup_seconds: float) -> None:
        self.wrapup = wrapup_seconds
        self.events: list[dict[str, Any]] = []
        for client in nodes:
            client.on_event("*", lambda _m, event, node=client.node.name: self._keep(node, event))

    def _keep(self, node: str, event: Any) -> None:
        if event.get("Event") in self.NAMES or (event.get("Event") in self.TOLD and event.get("UserEvent") in (
                None, "HotlineQueueAnnounce")):
            self.events.append({**dict(event), "node": node, "at": float(event.get("Timestamp"))})

    def announcements(self) -> list[dict[str, Any]]:
        """HotlineQueueAnnounce events, each with the caller's QueueCallerJoin (same node, channel ``Waiting``) and
        whether the node then whispered into that caller's channel (ChanSpyStart)."""
        joins = {(e["node"], e["Channel"]): e for e in self.of("QueueCallerJoin")}
        spied = {(e["node"], e.get("SpyeeChannel")) for e in self.of("ChanSpyStart")}
        return [{**e, "join": joins.get((e["node"], e["Waiting"])), "whispered": (e["node"], e["Waiting"]) in spied}
                for e in self.of("UserEvent") if e.get("UserEvent") == "HotlineQueueAnnounce"]

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
                busy[phone].append((e["node"], talking.pop((phone, e["node"])), e["at"] + self.wrapup))
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
