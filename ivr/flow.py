"""The call flow of both hotlines, as pure logic over a small channel interface.

One implementation serves every adapter: FastAGI (ivr/server.py, panoramisk),
classic AGI (ivr/classic_agi.py, pyst2) and the unit tests' fake channel.

Rules the flow keeps (issue 3):
- ``0`` at any prompt goes to an agent at once;
- no input or a wrong key gets a short re-prompt, at most ``retries`` tries,
  then straight to an agent: a caller never ends in silence;
- every prompt listens for keys while it plays (key-ahead);
- what the caller chose is on the channel as soon as it is chosen
  (BUSINESS, CATEGORY, LOOKUP_TICKET, IVR_PATH), inherited by the agent's leg.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from core.satisfaction import UNRATED
from core.telephony import ChanVar, inherited
from ivr.menu import HotlineMenu, Menu, Survey

ESCAPE_DIGITS = "0123456789*#"
TICKET_NUMBER = re.compile(r"^\d{8}\d{5,6}$")  # YYYYMMDD + daily sequence from 10001
MAX_OFFERED_TICKETS = 3
TICKET_DIGIT_TIMEOUT_MS = 6000


class CallerHungUp(Exception):  # noqa: N818 - an event, not an error
    """The caller left; stop talking to the channel."""


class Channel(Protocol):
    """The few AGI operations the flow needs; digits are returned as strings ('' = none)."""

    caller: str

    async def get_variable(self, name: str) -> str: ...

    async def set_variable(self, name: str, value: str) -> None: ...

    async def stream_file(self, path: str, escape_digits: str) -> str: ...

    async def get_option(self, path: str, escape_digits: str, timeout_ms: int) -> str: ...

    async def get_data(self, path: str, timeout_ms: int, max_digits: int) -> str: ...


@dataclass(frozen=True)
class TicketStatus:
    number: str
    readback: str  # the Mandarin sentence read to the caller


class TicketLookup(Protocol):
    async def open_for_phone(self, phone: str) -> list[TicketStatus]: ...

    async def find(self, number: str) -> TicketStatus | None: ...


class Prompts(Protocol):
    def path(self, name: str) -> str:
        """Asterisk path (no extension) of a generated prompt."""

    async def dynamic(self, text: str) -> str:
        """Asterisk path of ``text`` synthesized on demand (cached)."""


@dataclass(frozen=True)
class Route:
    """Where the dialplan sends the call next (IVR_ROUTE) and, for ``queue``, which queue."""

    route: str
    queue: str | None = None


class _ToAgent(Exception):  # noqa: N818 - control flow
    def __init__(self, reason: str, skill: str = "general") -> None:
        super().__init__(reason)
        self.reason, self.skill = reason, skill


@dataclass
class CallFlow:
    """The ``ivr`` script: greeting, hours, menus, self-service, routing."""

    channel: Channel
    menu: HotlineMenu
    prompts: Prompts
    tickets: TicketLookup
    staffed: bool = True
    path: list[str] = field(default_factory=list)

    @property
    def hotline(self) -> str:
        return self.menu.hotline

    async def run(self) -> Route:
        greeting = self.prompts.path(self.menu.greeting.name)
        if not self.staffed:
            await self.channel.stream_file(greeting, "")
            await self.channel.stream_file(self.prompts.path("after-hours"), "")
            await self._step("after-hours")
            return await self._finish(Route("voicemail"))
        try:
            # A key pressed during the dialplan's recording notice (IVR_AHEAD) already
            # answers the main menu: the caller knows the line, skip the greeting.
            ahead = (await self.channel.get_variable(ChanVar.IVR_AHEAD))[:1]
            if not ahead:
                ahead = await self.channel.stream_file(greeting, ESCAPE_DIGITS)
            return await self._menu(self.menu.main, ahead)
        except _ToAgent as to_agent:
            if to_agent.reason:
                await self._step(to_agent.reason)
            if not await self.channel.get_variable(ChanVar.BUSINESS):
                await self.channel.set_variable(inherited(ChanVar.BUSINESS), "agent")
            await self.channel.stream_file(self.prompts.path("to-agent"), "")
            return await self._finish(Route("queue", f"{self.hotline}-{to_agent.skill}"))

    # --- building blocks --------------------------------------------------
    async def _step(self, step: str) -> None:
        self.path.append(step)
        await self.channel.set_variable(inherited(ChanVar.IVR_PATH), ">".join(self.path))

    async def _finish(self, route: Route) -> Route:
        if route.queue:
            await self.channel.set_variable(inherited(ChanVar.TARGET_QUEUE), route.queue)
        await self.channel.set_variable(ChanVar.IVR_ROUTE, route.route)
        return route

    async def _choose(self, node: str, prompt: str, keys: str, timeout_s: float, retries: int,
                      ahead: str = "") -> str:
        """Play ``prompt`` until the caller presses one of ``keys``; 0 or exhausted tries -> agent."""
        digit = ahead
        for attempt in range(retries):
            if not digit:
                digit = await self.channel.get_option(prompt, ESCAPE_DIGITS, int(timeout_s * 1000))
            if digit in keys and digit:
                return digit
            if digit == "0":
                raise _ToAgent(f"{node}:0")
            if attempt + 1 < retries:
                error = "invalid-key" if digit else "no-input"
                digit = await self.channel.stream_file(self.prompts.path(error), ESCAPE_DIGITS)
            else:
                digit = ""
        raise _ToAgent(f"{node}:no-choice")

    async def _menu(self, menu: Menu, ahead: str = "") -> Route:
        prompt = self.prompts.path(menu.prompt.name)
        while True:
            key = await self._choose(menu.name, prompt, "".join(menu.choices), menu.timeout_seconds,
                                     menu.retries, ahead)
            ahead = ""
            choice = menu.choices[key]
            await self._step(f"{menu.name}:{key}")
            if choice.business:
                await self.channel.set_variable(inherited(ChanVar.BUSINESS), choice.business)
            if choice.category:
                await self.channel.set_variable(inherited(ChanVar.CATEGORY), choice.category)
            kind, argument = choice.kind, choice.argument
            if kind == "repeat":
                continue
            if kind == "agent":
                raise _ToAgent("")
            if kind == "menu":
                return await self._menu(self.menu.menus[argument])
            if kind == "queue":
                await self.channel.stream_file(self.prompts.path("to-queue"), "")
                return await self._finish(Route("queue", f"{self.hotline}-{argument}"))
            if kind == "progress":
                return await self._progress(menu)
            if kind == "answer":
                await self._answer(argument, menu)
                continue
            raise ValueError(f"unhandled menu target {choice.target!r}")  # the validator forbids this

    async def _answer(self, answer_id: str, menu: Menu) -> None:
        """Read a knowledge-base answer, then offer an agent (0) or the question list again (9)."""
        answer = self.menu.answers[answer_id]
        ahead = await self.channel.stream_file(self.prompts.path(answer.prompt.name), ESCAPE_DIGITS)
        key = await self._choose("answer", self.prompts.path("after-answer"), "09", menu.timeout_seconds,
                                 menu.retries, ahead)
        if key == "0":
            await self._step("answer:0")
            raise _ToAgent("", "consult")

    # --- case progress ----------------------------------------------------
    async def _progress(self, menu: Menu) -> Route:
        offered = await self.tickets.open_for_phone(self.channel.caller) if self.channel.caller else []
        offered = offered[:MAX_OFFERED_TICKETS]
        if offered:
            listing = "".join(f"查询尾号{t.number[-4:]}的工单请按{i}，" for i, t in enumerate(offered, 1))
            text = f"您有{len(offered)}件正在办理的工单。{listing}查询其他工单请按9。"
            keys = "".join(str(i) for i in range(1, len(offered) + 1)) + "9"
            key = await self._choose("open-tickets", await self.prompts.dynamic(text), keys,
                                     menu.timeout_seconds, menu.retries)
            await self._step(f"open-tickets:{key}")
            if key != "9":
                return await self._readback(offered[int(key) - 1], menu)
        return await self._enter_ticket(menu)

    async def _enter_ticket(self, menu: Menu) -> Route:
        entry = self.prompts.path("ticket-entry")
        for _attempt in range(menu.retries):
            digits = (await self.channel.get_data(entry, TICKET_DIGIT_TIMEOUT_MS, 20)).strip("#")
            if digits.startswith("0"):  # no ticket number starts with 0: the caller wants an agent
                raise _ToAgent("ticket:0")
            if not digits:
                error = "no-input"
            elif not TICKET_NUMBER.match(digits):
                error = "ticket-malformed"
            else:
                status = await self.tickets.find(digits)
                if status is not None:
                    return await self._readback(status, menu)
                error = "ticket-unknown"
            await self._step(f"ticket:{error}")
            ahead = await self.channel.stream_file(self.prompts.path(error), ESCAPE_DIGITS)
            if ahead == "0":
                raise _ToAgent("ticket:0")
        raise _ToAgent("ticket:no-choice")

    async def _readback(self, status: TicketStatus, menu: Menu) -> Route:
        await self.channel.set_variable(inherited(ChanVar.LOOKUP_TICKET), status.number)
        await self._step(f"ticket:{status.number}")
        readback = await self.prompts.dynamic(status.readback)
        ahead = await self.channel.stream_file(readback, ESCAPE_DIGITS)
        while True:
            key = await self._choose("readback", self.prompts.path("after-readback"), "12",
                                     menu.timeout_seconds, menu.retries, ahead)
            ahead = ""
            if key == "2":
                return await self._enter_ticket(menu)
            ahead = await self.channel.stream_file(readback, ESCAPE_DIGITS)


@dataclass
class QueueTimeoutFlow:
    """The ``queue-timeout`` script: the caller waited too long or nobody is logged in."""

    channel: Channel
    prompts: Prompts
    timeout_seconds: float = 5

    async def run(self) -> Route:
        key = await self.channel.get_option(self.prompts.path("queue-timeout"), "12",
                                            int(self.timeout_seconds * 1000))
        path = await self.channel.get_variable(ChanVar.IVR_PATH)
        step = f"queue-timeout:{key or 'timeout'}"
        await self.channel.set_variable(inherited(ChanVar.IVR_PATH), f"{path}>{step}" if path else step)
        if key == "2":
            if callback_number(self.channel.caller):
                await self.channel.set_variable(inherited(ChanVar.CALLBACK_NUMBER), self.channel.caller)
                await self.channel.set_variable(ChanVar.IVR_ROUTE, "callback")
                return Route("callback")
            await self.channel.stream_file(self.prompts.path("no-callback-number"), "")
        await self.channel.set_variable(ChanVar.IVR_ROUTE, "voicemail")
        return Route("voicemail")


@dataclass
class SurveyFlow:
    """The ``survey`` script (一次一评): the agent hung up first and the citizen is still on the line.

    The prompt listens for keys while it plays; no key or a key that is no grade gets the prompt again,
    up to ``retries`` times. SURVEY_RESULT is a grade, or ``unrated`` (未评价) when nothing usable was keyed;
    the dialplan reports it to the CTI."""

    channel: Channel
    survey: Survey
    prompts: Prompts

    async def run(self) -> str:
        prompt = self.prompts.path(self.survey.prompt.name)
        grade = UNRATED
        for _attempt in range(self.survey.retries):
            key = await self.channel.get_option(prompt, ESCAPE_DIGITS, int(self.survey.timeout_seconds * 1000))
            if key in self.survey.keys:
                grade = self.survey.keys[key]
                break
        await self.channel.set_variable("SURVEY_RESULT", grade)
        if grade != UNRATED:
            await self.channel.stream_file(self.prompts.path(self.survey.thanks.name), "")
        return grade


def callback_number(caller: str) -> bool:
    """Can we call this caller id back? (digits only, long enough to be a real number)"""
    return caller.isdigit() and len(caller) >= 5
