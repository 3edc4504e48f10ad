"""FastAGI server (panoramisk): ``agi://host:port/ivr`` and ``agi://host:port/queue-timeout``.

The adapter below turns panoramisk's raw AGI replies into the small
:class:`ivr.flow.Channel` interface; the flow itself lives in ivr/flow.py.
A handler that fails for any reason still leaves the caller routed: general
queue for ``ivr``, voicemail for ``queue-timeout`` (the dialplan has its own
fallback too, for when this server is down or dies mid-call).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from panoramisk.fast_agi import Application, Request

from core import content
from core.asterisk_runtime import resolve_runtime
from core.db import Database
from core.hours import staffed_now
from core.metrics import LatencySamples
from core.redis import connect as redis_connect
from core.service import heartbeat
from core.settings import Settings
from core.telephony import ChanVar, inherited
from ivr.flow import (
    CallerHungUp,
    CallFlow,
    Prompts,
    QueueTimeoutFlow,
    Route,
    SurveyFlow,
    TicketLookup,
    TicketStatus,
)
from ivr.menu import HotlineMenu, load_all_menus
from ivr.setup import asterisk_prompts, make_prompts, menu_prompts
from tickets.queries import find_by_number, open_tickets_for_phone, status_readback

HEADER_TIMEOUT = 10
# The deadman (dialplans/hotline.conf): Asterisk puts a caller the IVR does not keep up with into the general
# queue. Before each wait for the caller the IVR pushes it back past that wait's end (prompt + input time) plus
# this grace, in which the next command must come; a prompt whose length is unknown counts as the longest.
DEADMAN_GRACE_SECONDS = 15
UNKNOWN_PROMPT_SECONDS = 120
log = structlog.get_logger(service="ivr")


class AgiCommandError(RuntimeError):
    """Asterisk refused an AGI command (not a hangup)."""


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _digit(result: dict[str, Any]) -> str:
    code = int(result.get("result", ("0", ""))[0] or 0)
    return chr(code) if code > 0 else ""


class AgiCommands:
    """:class:`ivr.flow.Channel` on top of one primitive: send an AGI command line, get the parsed reply.

    Subclasses provide :meth:`command` for their transport (FastAGI socket, or
    classic AGI's stdin/stdout); replies are dicts like ``{"result": ("49", "")}``,
    with ``error = "AGIAppError"`` for a ``result=-1`` (failed playback).
    """

    caller: str = ""
    env: dict[str, str]
    # The ivr script's deadman: how long a prompt plays (None: unknown). Unset for scripts without one.
    deadman: Callable[[str], float | None] | None = None

    async def command(self, line: str) -> dict[str, Any]:
        raise NotImplementedError

    async def _push_deadman(self, path: str, waits_ms: int = 0) -> None:
        """Move the channel's absolute timeout (the dialplan's deadman) past the end of this wait for the caller."""
        if self.deadman is not None:
            plays = self.deadman(path)
            seconds = (UNKNOWN_PROMPT_SECONDS if plays is None else plays) + waits_ms / 1000 + DEADMAN_GRACE_SECONDS
            await self.command(f"SET AUTOHANGUP {math.ceil(seconds)}")

    async def get_variable(self, name: str) -> str:
        result = await self.command(f"GET VARIABLE {name}")
        value, data = result.get("result", ("0", ""))
        return data if value == "1" else ""

    async def set_variable(self, name: str, value: str) -> None:
        await self.command(f"SET VARIABLE {name} {_quote(value)}")

    async def _play(self, line: str) -> str:
        result = await self.command(line)
        if result.get("error") == "AGIAppError":
            # result=-1 is a missing file or a caller who hung up. Ask the channel: CHANNEL STATUS
            # is refused on a dead channel (511 -> CallerHungUp), where SET/GET VARIABLE are not,
            # so without it a hang-up mid-menu reads as silence and the flow goes on "to an agent".
            await self.command("CHANNEL STATUS")
            log.warning("agi_playback_failed", command=line)
            return ""
        return _digit(result)

    async def stream_file(self, path: str, escape_digits: str) -> str:
        await self._push_deadman(path)
        return await self._play(f"STREAM FILE {path} {_quote(escape_digits)}")

    async def get_option(self, path: str, escape_digits: str, timeout_ms: int) -> str:
        await self._push_deadman(path, timeout_ms)
        return await self._play(f"GET OPTION {path} {_quote(escape_digits)} {timeout_ms}")

    async def get_data(self, path: str, timeout_ms: int, max_digits: int) -> str:
        await self._push_deadman(path, timeout_ms * max(1, max_digits))  # the time limit counts per digit
        result = await self.command(f"GET DATA {path} {timeout_ms} {max_digits}")
        if result.get("error") == "AGIAppError":
            return ""
        return result.get("result", ("", ""))[0]


def caller_from_env(env: dict[str, str]) -> str:
    caller = env.get("agi_callerid", "")
    return "" if caller in ("unknown", "anonymous") else caller


# Commands Asterisk answers at once: their round trip is the FastAGI cost per command.
QUICK_VERBS = frozenset({"ANSWER", "GET", "SET", "VERBOSE", "CHANNEL", "DATABASE", "NOOP"})
AGI_TIMINGS = LatencySamples("ivr")


class AgiChannel(AgiCommands):
    """The channel of one panoramisk FastAGI request."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.env = request.headers
        self.caller = caller_from_env(request.headers)

    async def command(self, line: str) -> dict[str, Any]:
        began = time.perf_counter()
        try:
            result = await self.request.send_command(line)
        except (ConnectionError, ValueError, asyncio.IncompleteReadError) as exc:
            raise CallerHungUp(str(exc)) from exc
        if line.split(" ", 1)[0] in QUICK_VERBS:  # playback and key input take as long as the caller does
            AGI_TIMINGS.record("agi_rtt", (time.perf_counter() - began) * 1000)
        error = result.get("error")
        if error == "AGIResultHangup" or result.get("status_code") == 511:
            raise CallerHungUp(result.get("msg", ""))
        if error and error != "AGIAppError":
            raise AgiCommandError(f"{line!r}: {result}")
        return result


class DbTicketLookup:
    """:class:`ivr.flow.TicketLookup` over the tickets package's queries."""

    def __init__(self, db: Database, timezone: str) -> None:
        self.db, self.zone = db, ZoneInfo(timezone)

    def _today(self) -> dt.date:
        return dt.datetime.now(self.zone).date()

    async def open_for_phone(self, phone: str) -> list[TicketStatus]:
        async with self.db.session() as session:
            tickets = await open_tickets_for_phone(session, phone)
            return [TicketStatus(t.number, status_readback(t, self._today())) for t in tickets]

    async def find(self, number: str) -> TicketStatus | None:
        async with self.db.session() as session:
            ticket = await find_by_number(session, number)
            return TicketStatus(ticket.number, status_readback(ticket, self._today())) if ticket else None


# Linux sock_diag (netlink), as `ss` uses it: one exact look-up of a TCP socket by its addresses.
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, NLMSG_ERROR = 4, 20, 1, 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_NLMSG_HEADER = struct.Struct("=IHHII")
_INET_DIAG_MSG_UID = 4 + 48 + 12  # family..retrans, inet_diag_sockid, expires/rqueue/wqueue


def tcp_peer_uid(peer: tuple, local: tuple) -> int | None:
    """The uid owning the other end of a TCP connection made on this host (None if not found).

    Loopback TCP has no SO_PEERCRED, but the kernel knows each socket's owner: the client's socket
    is the one bound to our peer's address and connected to ours. (Reading /proc/net/tcp would tell
    the same but costs milliseconds per call: the kernel walks its whole table.)"""
    family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET

    def address(ip: str) -> bytes:
        return socket.inet_pton(family, ip).ljust(16, b"\0")

    sockid = (struct.pack("!HH", peer[1], local[1]) + address(peer[0]) + address(local[0])
              + struct.pack("=III", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    message = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as netlink:
            netlink.settimeout(1)
            netlink.sendto(message + request, (0, 0))
            reply = netlink.recv(8192)
    except OSError:
        return None
    offset = _NLMSG_HEADER.size + _INET_DIAG_MSG_UID
    if len(reply) < offset + 4 or struct.unpack_from("=H", reply, 4)[0] == NLMSG_ERROR:
        return None
    return struct.unpack_from("=I", reply, offset)[0]


class FastAgiApplication(Application):
    """panoramisk's Application with a header reader that survives port probes, and only Asterisk
    as its client.

    panoramisk 1.4 reads the AGI environment with ``while b'\\n\\n' not in buffer``
    and spins forever when a client connects and closes without sending it
    (``./hotline status`` probes the port exactly like that). Here the header
    block is read with a deadline and EOF ends the connection.

    FastAGI has no authentication: whoever connects is taken for Asterisk, sets the caller number and
    reads what the IVR answers (the full number of each open ticket of any phone, which ticket numbers
    exist). With ``allowed_uids`` (the runtime's asterisk user and root: ``serve``) a connection from
    any other local user is closed before a word is read.
    """

    def __init__(self, *args: Any, allowed_uids: frozenset[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allowed_uids = allowed_uids

    def _refused(self, writer: asyncio.StreamWriter) -> bool:
        if self.allowed_uids is None:
            return False
        peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        uid = tcp_peer_uid(peer, local) if peer and local else None
        if uid in self.allowed_uids:
            return False
        log.warning("agi_client_refused", peer=str(peer), uid=uid)
        return True

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refused(writer):
            writer.close()
            return
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\n\n"), HEADER_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        lines = raw.decode(self.default_encoding, errors="replace").splitlines()
        headers = OrderedDict(line.split(": ", 1) for line in lines if ": " in line)
        script = headers.get("agi_network_script")
        route = self._route.get(script)
        try:
            if route is None:
                log.error("agi_unknown_script", script=script)
                return
            await route(Request(app=self, headers=headers, reader=reader, writer=writer,
                                encoding=self.default_encoding))
        finally:
            writer.close()


class IvrService:
    """The two FastAGI scripts, sharing menus, prompts and the ticket look-up."""

    def __init__(self, settings: Settings, menus: dict[str, HotlineMenu], prompts: Prompts,
                 tickets: TicketLookup, redis=None) -> None:
        self.settings, self.menus, self.prompts, self.tickets = settings, menus, prompts, tickets
        self.redis = redis  # for the live open/closed switch (core.hours.staffed_now)
        self.content_version = content.version()

    async def follow_content(self) -> bool:
        """Take up what an admin saved (core.content): the menus and knowledge base are loaded (validated when
        saved, checked again here) and their prompts made before the new menus replace the old ones, so the
        next call hears the new menu whole; a call already in the menu goes on with the menu it started in.
        The calendar and hours count at once (their cache is dropped by ``content.refresh``)."""
        if not content.refresh():
            return False
        try:
            menus = load_all_menus()
            store = getattr(self.prompts, "store", None)
            if store is not None:  # the real prompt store (tests' fakes have none): synthesize off the loop
                await asyncio.get_running_loop().run_in_executor(None, make_prompts, store, menu_prompts(menus))
        except Exception:  # noqa: BLE001 - keep serving the menus in use; the admin page shows the version
            log.exception("content_reload_failed", version=content.version())
            return False
        self.menus = menus
        self.content_version = content.version()
        log.info("content_reloaded", version=self.content_version, hotlines=sorted(menus))
        return True

    async def watch_content(self, stop: asyncio.Event, every: float = 1.0) -> None:
        while not stop.is_set():
            await self.follow_content()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def ivr(self, request: Request) -> None:
        """FastAGI route ``ivr``."""
        await self.run_ivr(AgiChannel(request))

    async def queue_timeout(self, request: Request) -> None:
        """FastAGI route ``queue-timeout``."""
        await self.run_queue_timeout(AgiChannel(request))

    async def survey(self, request: Request) -> None:
        """FastAGI route ``survey``: the citizen rates the call the agent just left."""
        await self.run_survey(AgiChannel(request))

    async def run_survey(self, channel: AgiCommands) -> None:
        hotline = await channel.get_variable(ChanVar.HOTLINE) or ""
        menu = self.menus.get(hotline)
        if menu is None or menu.survey is None:
            return  # no survey for this hotline: the dialplan says goodbye
        call = structlog.contextvars.bind_contextvars(script="survey", caller=channel.caller,
                                                      channel=channel.env.get("agi_channel"))
        try:
            grade = await SurveyFlow(channel, menu.survey, self.prompts).run()
            log.info("survey_result", grade=grade)
        except CallerHungUp:
            log.info("caller_hung_up_in_survey")  # no SURVEY_RESULT: the CTI records 未评价
        except Exception:  # noqa: BLE001 - a broken survey must not keep the citizen on the line
            log.exception("survey_failed")
        finally:
            structlog.contextvars.reset_contextvars(**call)

    def prompt_seconds(self, path: str) -> float | None:
        """How long the prompt at Asterisk ``path`` plays, if it is one of the prompt store's files."""
        seconds = getattr(self.prompts, "seconds", None)
        return seconds(path) if seconds is not None else None

    async def run_ivr(self, channel: AgiCommands) -> None:
        """The main flow on any transport; the caller is routed whatever happens."""
        fallback = Route("queue", f"{channel.env.get('agi_extension', '')}-general")
        channel.deadman = self.prompt_seconds

        async def run() -> Route:
            nonlocal fallback
            hotline = await channel.get_variable(ChanVar.HOTLINE) or channel.env.get("agi_extension", "")
            fallback = Route("queue", f"{hotline}-general")
            menu = self.menus.get(hotline)
            if menu is None:
                raise LookupError(f"no menu for hotline {hotline!r}")
            staffed = await staffed_now(self.settings, self.redis, hotline)
            flow = CallFlow(channel, menu, self.prompts, self.tickets, staffed=staffed)
            return await flow.run()

        await self._guard("ivr", channel, run(), lambda: fallback)

    async def run_queue_timeout(self, channel: AgiCommands) -> None:
        channel.deadman = self.prompt_seconds
        flow = QueueTimeoutFlow(channel, self.prompts)
        await self._guard("queue-timeout", channel, flow.run(), lambda: Route("voicemail"))

    async def _guard(self, script: str, channel: AgiCommands, flow: Awaitable[Route],
                     fallback: Callable[[], Route]) -> None:
        call = structlog.contextvars.bind_contextvars(script=script, caller=channel.caller,
                                                      channel=channel.env.get("agi_channel"))
        try:
            route = await flow
            log.info("ivr_routed", route=route.route, queue=route.queue)
        except CallerHungUp:
            log.info("caller_hung_up")
        except Exception:  # noqa: BLE001 - whatever broke, the caller must still be routed
            # Route first, log after: a log call that fails (a closed stdout) must not keep the caller
            # from the queue.
            route, routed = fallback(), True
            try:
                if route.queue:
                    await channel.set_variable(inherited(ChanVar.TARGET_QUEUE), route.queue)
                await channel.set_variable(ChanVar.IVR_ROUTE, route.route)
            except Exception:  # noqa: BLE001 - the dialplan's own fallback takes over
                routed = False
            log.exception("ivr_failed", fallback=route.route, queue=route.queue, fallback_set=routed)
        finally:
            structlog.contextvars.reset_contextvars(**call)


def build_service(settings: Settings) -> tuple[IvrService, Database]:
    """The IVR with its real menus, prompts and ticket database (close the database when done)."""
    db = Database(settings.database_url)
    prompts = asterisk_prompts(resolve_runtime(settings))
    return IvrService(settings, load_all_menus(), prompts, DbTicketLookup(db, settings.timezone)), db


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run the FastAGI server until ``stop`` is set (the supervisor's ``python -m ivr``)."""
    service, db = build_service(settings)
    menus = service.menus
    # Asterisk, and root: ./hotline status's live round trip, the tests and benchmarks.
    asterisk_uid = resolve_runtime(settings).asterisk_uid
    app = FastAgiApplication(allowed_uids=frozenset({0} | ({asterisk_uid} if asterisk_uid is not None else set())))
    app.add_route("ivr", service.ivr)
    app.add_route("queue-timeout", service.queue_timeout)
    app.add_route("survey", service.survey)
    host, port = settings.agi.host, settings.agi.port
    server = await asyncio.start_server(app.handler, host, port)
    log.info("fastagi_listening", host=host, port=port, hotlines=sorted(menus))
    redis = redis_connect(settings, "ivr")
    service.redis = redis
    tasks = [asyncio.create_task(heartbeat(redis, "ivr")), asyncio.create_task(AGI_TIMINGS.run(redis, log)),
             asyncio.create_task(service.watch_content(stop))]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        server.close()
        await server.wait_closed()
        await redis.aclose()
        await db.close()
