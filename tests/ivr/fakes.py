"""A fake caller on a fake channel, for testing ivr/flow.py without Asterisk.

The caller follows a script of ``(prompt, keys)`` steps: when a prompt whose
name contains ``prompt`` is played with keys allowed, the caller presses
``keys`` (a digit, or a whole ticket number for GET DATA). Anything else
they hear, they let play to the end and press nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ivr.flow import TicketStatus


@dataclass
class FakeChannel:
    script: list[tuple[str, str]] = field(default_factory=list)
    caller: str = "13912345678"
    variables: dict[str, str] = field(default_factory=dict)
    heard: list[str] = field(default_factory=list)
    hang_up_after: int | None = None  # hang up once this many prompts were heard

    def _press(self, path: str, allowed: bool) -> str:
        from ivr.flow import CallerHungUp

        if self.hang_up_after is not None and len(self.heard) >= self.hang_up_after:
            raise CallerHungUp("fake caller hung up")
        self.heard.append(path.rsplit("/", 1)[-1])
        if allowed and self.script and self.script[0][0] in path:
            return self.script.pop(0)[1]
        return ""

    async def get_variable(self, name: str) -> str:
        return self.variables.get(name.lstrip("_"), "")

    async def set_variable(self, name: str, value: str) -> None:
        self.variables[name.lstrip("_")] = value

    async def stream_file(self, path: str, escape_digits: str) -> str:
        return self._press(path, bool(escape_digits))

    async def get_option(self, path: str, escape_digits: str, timeout_ms: int) -> str:
        return self._press(path, True)

    async def get_data(self, path: str, timeout_ms: int, max_digits: int) -> str:
        return self._press(path, True)

    @property
    def route(self) -> str:
        return self.variables.get("IVR_ROUTE", "")

    @property
    def queue(self) -> str:
        return self.variables.get("TARGET_QUEUE", "")

    @property
    def path(self) -> str:
        return self.variables.get("IVR_PATH", "")


class FakePrompts:
    def __init__(self) -> None:
        self.dynamic_texts: list[str] = []

    def path(self, name: str) -> str:
        return f"/prompts/{name}"

    async def dynamic(self, text: str) -> str:
        self.dynamic_texts.append(text)
        return f"/prompts/dyn-{len(self.dynamic_texts)}"


class FakeTickets:
    def __init__(self, known: dict[str, str] | None = None, by_phone: dict[str, list[str]] | None = None) -> None:
        self.known = known or {}
        self.by_phone = by_phone or {}

    async def open_for_phone(self, phone: str) -> list[TicketStatus]:
        return [TicketStatus(n, self.known[n]) for n in self.by_phone.get(phone, [])]

    async def find(self, number: str) -> TicketStatus | None:
        return TicketStatus(number, self.known[number]) if number in self.known else None
