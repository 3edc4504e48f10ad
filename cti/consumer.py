"""The CTI's event consumer: every handler guarded, its liveness and progress watched, and the watermark
of the last event actually handled kept on disk.

Nothing one handler raises stops consumption. What failed is remembered so it can be repaired once the
failing part is back: call-record work from Asterisk's books (the gap starts at the oldest failed event),
agent states from QueueStatus, live events re-sent. A consumer that died or is stuck in one event makes
the CTI unhealthy at once and, if it stays so, ends the process so the supervisor restarts it; the
restarted CTI reconciles from the watermark.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# One event taking longer than this means the consumer is stuck (a normal one takes milliseconds,
# bench/results.md): unhealthy from here on.
STALL_SECONDS = 5.0
# Stuck this long: the process ends and the supervisor starts a fresh one (which reconciles).
STALL_EXIT_SECONDS = 60.0
WATERMARK_EVERY = 1.0  # seconds between watermark writes while events flow


@dataclass
class Handler:
    name: str
    handle: Callable[[Any], Awaitable[bool | None]]
    # What to remember when it fails: "records" (repair from the books), "agents" (resync agent states)
    # or "none" (nothing lasting, e.g. a latency sample).
    repairs: str
    # "call": run in the event's call lane (each call's events in order, calls side by side);
    # "arrival": run as events arrive, in the connection's order (agent states span calls).
    order: str = "call"


class Breaker:
    """After a part failed, calls to it are skipped for a while instead of each waiting for its own
    timeout: a frozen Redis (5 s per call) must not hold up the call records. A success closes it."""

    def __init__(self, pause: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.pause = pause
        self.clock = clock
        self._until = 0.0

    @property
    def tripped(self) -> bool:
        return self.clock() < self._until

    def failed(self) -> None:
        self._until = self.clock() + self.pause

    def succeeded(self) -> None:
        self._until = 0.0


class Watermark:
    """Asterisk time (epoch) of the last event handled; reconciliation after any gap starts here."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> float | None:
        try:
            return float(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def store(self, stamp: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(f"{stamp:.6f}\n")
        os.replace(temporary, self.path)  # never a half-written watermark


class Consumer:
    """Events of one AMI connection, applied in one lane per call: each call's events (``key``) in order, in
    a task of its own while it has events waiting, so a slow write for one call never holds up the events
    of another (a fixed set of lanes shared by hash made calls wait for others in their lane)."""

    def __init__(self, queue: asyncio.Queue, handlers: list[Handler], watermark: Watermark, log,
                 clock: Callable[[], float] = time.monotonic,
                 key: Callable[[Any], str] | None = None) -> None:
        self.queue = queue
        self.handlers = handlers
        self.watermark = watermark
        self.log = log
        self.clock = clock
        self.key = key or (lambda _event: "")
        self.handled = 0
        self.busy: dict[str | None, float] = {}     # call (None: arrival handlers) -> when its event began
        self.last_handled: float | None = None     # Asterisk timestamp of the last event handled
        self.records_failed_from: float | None = None  # oldest event whose record work failed
        self.agents_failed = False
        self._written_at = 0.0
        self._arrived = 0
        self._lanes: dict[str, deque[tuple[int, Any, float | None]]] = {}  # call -> its events waiting, in order
        self._workers: dict[str, asyncio.Task] = {}  # call -> the task applying them, while any wait
        self._unhandled: dict[int, float | None] = {}  # arrival number -> stamp, of events not yet handled
        self._lane_error: BaseException | None = None
        self.task: asyncio.Task | None = None

    @property
    def busy_since(self) -> float | None:
        return min(self.busy.values(), default=None)

    def start(self) -> asyncio.Task:
        self.task = asyncio.create_task(self.run(), name="cti-consumer")
        return self.task

    async def run(self) -> None:
        try:
            while True:
                event = await self.queue.get()
                stamp = _stamp(event)
                self.busy[None] = self.clock()
                try:
                    await self._apply(event, stamp, "arrival")
                finally:
                    self.busy.pop(None, None)
                if self._lane_error is not None:  # a lane died: the consumer has stopped following calls
                    raise self._lane_error
                key = self.key(event)
                self._arrived += 1
                self._unhandled[self._arrived] = stamp
                self._lanes.setdefault(key, deque()).append((self._arrived, event, stamp))
                if key not in self._workers:
                    self._workers[key] = asyncio.create_task(self._lane(key), name=f"cti-call-{key}")
        finally:
            for worker in list(self._workers.values()):
                worker.cancel()

    async def _lane(self, key: str) -> None:
        """One call's events in order; the task ends when none is left (no await between that check and
        the clean-up, so an event arriving meanwhile starts a new task rather than waiting on a gone one)."""
        waiting = self._lanes[key]
        try:
            while waiting:
                number, event, stamp = waiting[0]
                self.busy[key] = self.clock()
                try:
                    await self._apply(event, stamp, "call")
                finally:
                    self.busy.pop(key, None)
                    waiting.popleft()
                    self._unhandled.pop(number, None)
                self._done(stamp)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._lane_error = exc
            raise
        finally:
            if not waiting:
                self._lanes.pop(key, None)
                self._workers.pop(key, None)

    async def handle(self, event: Any) -> None:
        """Apply one event with every handler, here and now (tests, and a single lane's work)."""
        stamp = _stamp(event)
        await self._apply(event, stamp, "arrival")
        await self._apply(event, stamp, "call")
        self._done(stamp)

    async def _apply(self, event: Any, stamp: float | None, order: str) -> None:
        for handler in self.handlers:
            if handler.order != order:
                continue
            try:
                ok = await handler.handle(event) is not False
            except Exception:  # noqa: BLE001 - logged; repaired once the failing part is back
                self.log.exception("handler_failed", handler=handler.name, ami_event=event.get("Event"))
                ok = False
            if not ok:
                self._failed(handler.repairs, stamp)

    def _done(self, stamp: float | None) -> None:
        self.handled += 1
        if stamp is not None:
            self.last_handled = max(stamp, self.last_handled or stamp)
        self.persist()

    def _failed(self, repairs: str, stamp: float | None) -> None:
        if repairs == "agents":
            self.agents_failed = True
        elif repairs == "records":
            when = stamp if stamp is not None else time.time()
            self.records_failed_from = min(when, self.records_failed_from or when)

    def mark(self) -> float | None:
        """What may be written as handled: never past an event whose record work still needs repair, nor
        past one still waiting for its call's lane (calls finish out of step)."""
        floors = [stamp for stamp in (self.records_failed_from, *self._unhandled.values()) if stamp is not None]
        if floors:
            return min(*floors, self.last_handled or min(floors))
        return self.last_handled

    def persist(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._written_at < WATERMARK_EVERY:
            return
        mark = self.mark()
        if mark is None:
            return
        try:
            self.watermark.store(mark)
            self._written_at = now
        except OSError as exc:
            self.log.warning("watermark_not_written", error=str(exc))

    @property
    def drained(self) -> bool:
        """Every event received so far has been applied (none queued, none in a call's lane)."""
        return self.queue.empty() and not self._unhandled and not self.busy

    def records_repaired(self) -> None:
        """Reconciliation covered every failed event. Called with the tracker's gate closed: record work
        only fails inside it, so none can have failed meanwhile."""
        self.records_failed_from = None
        self.persist(force=True)

    def problem(self) -> str | None:
        """Why the CTI is not following calls now, in words for `./hotline status`; None when it is."""
        if self.task is not None and self.task.done():
            error = None if self.task.cancelled() else self.task.exception()
            return f"CTI 事件处理已停止（{error!r}）"
        if self._lane_error is not None:
            return f"CTI 事件处理已停止（{self._lane_error!r}）"
        if self.busy_since is not None:
            stuck = self.clock() - self.busy_since
            if stuck > STALL_SECONDS:
                waiting = self.queue.qsize() + len(self._unhandled)
                return f"CTI 事件处理卡住 {stuck:.0f} 秒（待处理 {waiting} 个事件）"
        return None

    def must_exit(self) -> str | None:
        """Dead, or stuck long enough that only a restart helps."""
        if (self.task is not None and self.task.done()) or self._lane_error is not None:
            return self.problem()
        if self.busy_since is not None and self.clock() - self.busy_since > STALL_EXIT_SECONDS:
            return self.problem()
        return None


def _stamp(event: Any) -> float | None:
    try:
        value = event.get("Timestamp")
        return float(value) if value else None
    except (TypeError, ValueError):
        return None
