"""AMI client on top of panoramisk, closing its known gaps.

* A half-open connection (Asterisk gone without a close) is noticed within
  seconds: a watchdog pings and aborts the transport when no reply comes.
* Actions whose reply was lost are never re-sent after a reconnect (an
  Originate must not dial a citizen twice): the caller gets a timeout instead.
* ``on_reconnect`` callbacks let a service re-read state after an outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from panoramisk import Manager

from core.metrics import AMI_CONNECTED, AMI_HALF_OPEN, AMI_RECONNECTS
from core.settings import AMI_ACCOUNTS, AsteriskNode, Settings

log = logging.getLogger("ami")


def ami_username(settings: Settings, account: str) -> str:
    """Each process has its own AMI user (asterisk-conf/manager.conf), holding only the classes it uses."""
    if account not in AMI_ACCOUNTS:
        raise ValueError(f"unknown AMI account {account!r}; one of {', '.join(AMI_ACCOUNTS)}")
    return f"{settings.ami.username}-{account}"


class _NeverResend:
    """panoramisk re-sends unanswered actions unless their name is 'forgettable'."""

    def __contains__(self, _name: object) -> bool:
        return True


def first_response(reply: Any) -> Any:
    """panoramisk answers some actions (e.g. an async Originate) with a list: the reply comes first."""
    return reply[0] if isinstance(reply, list) and reply else reply


def succeeded(reply: Any) -> bool:
    return first_response(reply).get("Response") == "Success"


class AmiError(RuntimeError):
    """An AMI action failed or its reply did not come; the message is for people."""


class AmiClient:
    def __init__(
        self,
        settings: Settings,
        account: str,
        events: str = "on",
        watchdog_interval: float = 2.0,
        watchdog_timeout: float = 3.0,
        node: AsteriskNode | None = None,
    ) -> None:
        self.node = node or settings.nodes[0]
        self.manager = Manager(
            host=self.node.ami_host, port=self.node.ami_port, username=ami_username(settings, account),
            secret=settings.secrets[f"ami_{account}"], events=events,
            ping_delay=3600, ping_interval=3600,  # panoramisk's own ping ignores replies; ours checks them
            reconnect_timeout=1, forgetable_actions=_NeverResend(),
        )
        self.manager.on_login = self._on_login
        self.manager.on_disconnect = self._on_disconnect
        self.watchdog_interval = watchdog_interval
        self.watchdog_timeout = watchdog_timeout
        self.logged_in = asyncio.Event()
        self._reconnect_callbacks: list[Callable[[], Awaitable[None]]] = []
        self._watchdog: asyncio.Task | None = None
        self.connections = 0
        # Since when (epoch) this node's AMI has been away: from the start until the first login, and from
        # each lost connection until the next; None while logged in. A node away for long is lost (cti.service).
        self.down_since: float | None = time.time()
        for metric in (AMI_RECONNECTS, AMI_HALF_OPEN, AMI_CONNECTED):
            metric.labels(self.node.name)  # shown at 0 from the start, so a rate is defined

    def on_event(self, pattern: str, callback: Callable[[Manager, Any], Any]) -> None:
        self.manager.register_event(pattern, callback)

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Called after every successful login, the first included."""
        self._reconnect_callbacks.append(callback)

    async def connect(self, timeout: float | None = 10) -> None:
        self.manager.loop = asyncio.get_running_loop()
        self.manager.connect()
        self._watchdog = asyncio.create_task(self._watch())
        if timeout is not None:
            try:
                await asyncio.wait_for(self.logged_in.wait(), timeout)
            except TimeoutError as exc:
                raise AmiError("无法连接到 Asterisk 管理接口 (AMI)") from exc

    def _on_login(self, _manager: Manager) -> None:
        self.connections += 1
        self.logged_in.set()
        self.down_since = None
        AMI_CONNECTED.labels(self.node.name).set(1)
        if self.connections > 1:
            AMI_RECONNECTS.labels(self.node.name).inc()
        log.info("AMI of %s logged in (connection %d)", self.node.name, self.connections)
        for callback in self._reconnect_callbacks:
            asyncio.ensure_future(callback())

    def _on_disconnect(self, _manager: Manager, exc: Exception | None) -> None:
        self.logged_in.clear()
        if self.down_since is None:
            self.down_since = time.time()
        AMI_CONNECTED.labels(self.node.name).set(0)
        log.warning("AMI connection to %s lost: %s", self.node.name, exc)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watchdog_interval)
            if not self.logged_in.is_set():
                continue
            protocol = self.manager.protocol
            try:
                reply = self.manager.send_action({"Action": "Ping"})
                await asyncio.wait_for(reply, self.watchdog_timeout)
            except (TimeoutError, Exception) as exc:  # noqa: B014 - any failure means the link is dead
                if protocol is self.manager.protocol and protocol is not None:
                    log.warning("AMI did not answer a ping (%r): dropping the connection", exc)
                    AMI_HALF_OPEN.labels(self.node.name).inc()
                    self.logged_in.clear()
                    protocol.transport.abort()  # fires connection_lost -> panoramisk reconnects

    async def action(self, action: dict[str, Any], timeout: float = 5.0, as_list: bool = False) -> Any:
        """Send one action and wait for its reply (or, with ``as_list``, its event list); never re-sent."""
        if not self.logged_in.is_set():
            try:
                await asyncio.wait_for(self.logged_in.wait(), timeout)
            except TimeoutError as exc:
                raise AmiError("与 Asterisk 的连接已中断，操作未执行，请稍后重试") from exc
        # Single reply unless a list is asked for: panoramisk otherwise guesses from the reply text and
        # waits forever for lists that never come (QueueAdd's "Added ... to queue", an async Originate).
        future = self.manager.send_action(dict(action), as_list=bool(as_list))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise AmiError(f"Asterisk 未确认操作 {action.get('Action')}，请核实后再试") from exc

    async def close(self) -> None:
        if self._watchdog:
            self._watchdog.cancel()
        self.manager.close()


def ami_clients(settings: Settings, account: str, events: str = "on") -> dict[str, AmiClient]:
    """One AMI connection per Asterisk node, by node name (the first node first)."""
    return {node.name: AmiClient(settings, account, events=events, node=node) for node in settings.nodes}


class AmiNodes:
    """One AMI connection per node, for a process that acts on calls and phones wherever they are."""

    def __init__(self, clients: dict[str, AmiClient]) -> None:
        self.clients = clients
        self.first = next(iter(clients.values()))
        self.acd: Any = None  # cluster mode: the CTI's one ACD across these nodes (cti.routing.ClusterRouter)

    @classmethod
    def for_settings(cls, settings: Settings, account: str, events: str = "on") -> AmiNodes:
        return cls(ami_clients(settings, account, events))

    def __getitem__(self, node: str | None) -> AmiClient:
        """The node's connection; the first node's for None (a session or record from before nodes)."""
        return self.clients.get(node or "", self.first)

    def __iter__(self):
        return iter(self.clients.values())

    def __len__(self) -> int:
        return len(self.clients)

    @property
    def logged_in(self) -> asyncio.Event:
        """The first node's: the desk's "AMI reachable" check (a node that is away answers with AmiError)."""
        return self.first.logged_in

    async def connect(self, timeout: float | None = 10) -> None:
        await asyncio.gather(*(client.connect(timeout) for client in self))

    async def close(self) -> None:
        for client in self:
            await client.close()


def on_node(ami: AmiClient | AmiNodes, node: str | None) -> AmiClient:
    """The connection to ``node``: from a pool, or the one connection a single-node caller holds."""
    return ami[node] if isinstance(ami, AmiNodes) else ami
