"""Position and expected-wait announcements counted across the nodes (cluster mode, issue 19 item 3).

app_queue announces a caller's place among its own node's callers only, so in cluster mode its own
announcements are off (asterisk-conf/queues.conf) and the CTI's router, which holds the one list of the
callers waiting on every node (cti.routing), announces instead:

- the position is 1 + the callers of the same queue, on any node, who joined earlier and still wait
  (rung or not: app_queue counts them too);
- the expected wait is app_queue's: the queue's average hold time minus what this caller has waited,
  the average taken over the callers answered on every node (AgentConnect's HoldTime, weighted as
  app_queue weights it: 3/4 the old average, 1/4 the new call);
- a caller hears it about a second after joining (once the other node's callers who joined just before are
  in the list, and not at all if an agent is rung for them at once), then every ``announce_every_seconds``
  of the queue (admin page 队列; 0: never), never while an agent's phone rings for them.

The announcement is played on the caller's node into the waiting channel with the hold music still under
it: AMI Originate of a Local channel (dialplans/queues.conf [hotline-announce]) whose one half whispers
(ChanSpy w) into the caller's channel what the other half plays, after a UserEvent HotlineQueueAnnounce
saying what the caller is told. An announcement still playing when an agent's phone rings for the
caller is cut off, so it never runs into the conversation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from core.ami import AmiError, AmiNodes, first_response, succeeded
from core.db import Database
from core.provisioning import list_queues

SETTLE_SECONDS = 1.0   # from the join to the first announcement (see the module's docstring)
QUEUES_EVERY = 30.0    # how often the queues' announcement intervals are read again (an admin's change)
CONTEXT = "hotline-announce"
ROUND_SECONDS = 10     # the wait's seconds are said in tens (app_queue's announce-round-seconds here)


@dataclass
class Announced:
    """The last announcement made to one waiting caller."""

    at: float = 0.0
    playing: str = ""  # the Local channel's extension while its announcement may still play


def position(waiting: Iterable[tuple[str, Any]], key: str) -> int:
    """The caller's place among the callers of its queue on every node (pure): 1 + those joined before."""
    items = dict(waiting)
    me = items[key]
    return 1 + sum(1 for other_key, other in items.items()
                   if other_key != key and other.queue == me.queue and other.joined < me.joined)


def next_holdtime(average: float | None, holdtime: float) -> float:
    """The queue's average hold time after one more answered caller (app_queue's weights; the first answered
    caller sets it)."""
    return float(holdtime) if average is None else (3 * average + float(holdtime)) / 4


def expected_wait(average: float | None, waited: float) -> int:
    """What is left of the average hold time for a caller who has waited ``waited`` seconds (0: unknown or
    already past it: nothing is said)."""
    return max(0, round((average or 0) - waited))


def spoken_wait(seconds: int) -> tuple[int, int]:
    """(minutes, seconds) as said: seconds in tens; under ten seconds left is said as 不到1分钟 (1, 0 with
    the less-than sound, see the dialplan), so (0, 0) means nothing is said."""
    minutes, rest = divmod(seconds, 60)
    tens = rest // ROUND_SECONDS * ROUND_SECONDS
    return minutes, tens


def announce_exten(node: str, uniqueid: str) -> str:
    """The Local channel's extension for one caller: its uniqueid, so the announcement can be cut off."""
    return "say-" + re.sub(r"[^0-9A-Za-z]", "-", f"{node}-{uniqueid}")


class QueueAnnouncer:
    """Announces to the callers of the router's list (``waiting``: key -> cti.routing.Waiting)."""

    def __init__(self, nodes: AmiNodes, db: Database, log) -> None:
        self.nodes = nodes
        self.db = db
        self.log = log
        self.every: dict[str, float] = {}   # queue -> seconds between announcements (0: none)
        self.every_read = 0.0
        self.holdtimes: dict[str, float] = {}  # queue -> average hold time across the nodes
        self.announced: dict[str, Announced] = {}
        self.made = 0

    def answered(self, queue: str, holdtime: float) -> None:
        self.holdtimes[queue] = next_holdtime(self.holdtimes.get(queue), holdtime)

    async def offered(self, key: str) -> None:
        """An agent's phone rings for this caller (or they left the queue): no announcement runs on."""
        last = self.announced.get(key)
        if last and last.playing:
            node = key.split("/", 1)[0]
            pattern = re.escape(f"Local/{last.playing}@{CONTEXT}-")
            last.playing = ""
            try:
                await self.nodes[node].action({"Action": "Hangup", "Channel": f"/^{pattern}/"})
            except AmiError:
                pass  # the node is away: so is the announcement

    def forget(self, key: str) -> None:
        self.announced.pop(key, None)

    async def _intervals(self, now: float) -> dict[str, float]:
        if now - self.every_read >= QUEUES_EVERY or not self.every:
            try:
                self.every = {q.name: float(q.announce_every_seconds) for q in await list_queues(self.db)}
                self.every_read = now
            except Exception as exc:  # noqa: BLE001 - the database away: keep the intervals read before
                self.log.warning("announce_intervals_unread", error=str(exc))
        return self.every

    async def run_once(self, waiting: dict[str, Any], up: list[str], now: float | None = None) -> int:
        """Announce to every caller whose announcement is due; returns how many were started."""
        now = time.time() if now is None else now
        every = await self._intervals(now)
        for key in [k for k in self.announced if k not in waiting]:
            del self.announced[key]
        started = 0
        for key, caller in sorted(waiting.items(), key=lambda item: item[1].joined):
            interval = every.get(caller.queue, 0)
            if caller.offered or caller.node not in up or not caller.channel or interval <= 0:
                continue
            last = self.announced.setdefault(key, Announced())
            due = (now - caller.seen >= SETTLE_SECONDS) if not last.at else (now - last.at >= interval)
            if not due:
                continue
            last.at = now
            try:
                await self.announce(key, caller, position(waiting.items(), key), now)
            except AmiError as exc:
                self.log.warning("announce_failed", node=caller.node, channel=caller.channel, error=str(exc))
                continue
            started += 1
        return started

    async def announce(self, key: str, caller: Any, place: int, now: float) -> None:
        average = self.holdtimes.get(caller.queue)
        waited = round(max(0.0, now - caller.joined), 1)
        wait = expected_wait(average, waited)
        minutes, seconds = spoken_wait(wait)
        exten = announce_exten(caller.node, key.split("/", 1)[1])
        variables = {"ANNOUNCE_CHANNEL": caller.channel, "__ANNOUNCE_CHANNEL": caller.channel,
                     "__ANNOUNCE_QUEUE": caller.queue, "__ANNOUNCE_POSITION": place,
                     "__ANNOUNCE_WAIT": wait, "__ANNOUNCE_WAITED": waited, "__ANNOUNCE_MINUTES": minutes, "__ANNOUNCE_SECONDS": seconds,
                     "__ANNOUNCE_HOLDTIME": "" if average is None else round(average, 3)}
        reply = await self.nodes[caller.node].action({
            "Action": "Originate", "Channel": f"Local/{exten}@{CONTEXT}/n", "Context": CONTEXT,
            "Exten": "spy", "Priority": 1, "Async": "true", "Timeout": 5000,
            "Variable": ",".join(f"{k}={v}" for k, v in variables.items()),
        })
        if not succeeded(reply):
            raise AmiError(str(first_response(reply).get("Message")))
        self.announced[key].playing = exten
        self.made += 1
