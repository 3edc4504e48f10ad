"""SIPp agent phones for tests: register an extension (8001-8005, 8101) and auto-answer its calls.

    with SippPhone(stack.settings, "8001") as phone:
        await waiter(lambda: phone.registered(stack.runtime), what="8001 registered")
        ...

One SIPp process registers (sipdrivers/scenarios/agent_register.xml) and answers every
call to the phone (sipdrivers/scenarios/agent_answer.xml, SIPp's out-of-call scenario).
For hundreds of phones (bench/capacity.py) ``PhoneBank`` is one SIPp process for all of them.
"""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.models import User
from cti import control

SIPP_DIR = Path(__file__).parent / "scenarios"
PORT_OFFSETS = (0, 10, 11, 12, 13, 20)


def _udp_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def answer_then_hang_up(folder: Path, talk_ms: int) -> Path:
    """agent_answer_hangup.xml ending the call ``talk_ms`` after the answer, its BYE along the route set
    Kamailio recorded (as a phone behind a proxy sends it); written into ``folder``."""
    text = (SIPP_DIR / "agent_answer_hangup.xml").read_text()
    bye = "      From: [$callee];tag="
    assert 'timeout="12000"' in text and text.count(bye) == 1
    target = folder / f"agent_answer_hangup_{talk_ms}.xml"
    target.write_text(text.replace('timeout="12000"', f'timeout="{talk_ms}"').replace(bye, f"      [routes]\n{bye}"))
    return target


def free_udp_block(address: str = "127.0.0.1") -> int:
    """A base port whose SIPp ports (base + PORT_OFFSETS) are all free."""
    for base in random.sample(range(30000, 40000, 30), 200):
        if all(_udp_free(address, base + offset) for offset in PORT_OFFSETS):
            return base
    raise RuntimeError("no free block of UDP ports for a SIPp phone")


def _end(process: subprocess.Popen | None) -> None:
    """Stop a SIPp process (terminate, then kill if it lingers)."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class SippPhone:
    def __init__(self, settings: Any, extension: str, local_port: int | None = None,
                 address: str = "127.0.0.1", node: Any = None, answer: str = "agent_answer.xml",
                 password: str | None = None) -> None:
        self.settings = settings
        # A configured phone's password is in var/secrets.toml; one made by an admin's form is shown once.
        self.password = password or settings.sip_password(extension)
        self.answer = answer  # the out-of-call scenario in scenarios/ (how the phone answers and ends calls)
        self.extension = extension
        self.node = node or settings.nodes[0]  # the Asterisk node it registers with
        self.address = address
        # SIP port; media (+10, +11, +12) and control (+20) ports follow it. Free ones by default,
        # so test sessions running side by side do not collide.
        self.local_port = local_port or free_udp_block(address)
        self._own_port = local_port is None
        self._rebinds = 0
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            "sipp", f"{self.node.address}:{self.node.sip_port}", "-sf", str(SIPP_DIR / "agent_register.xml"),
            "-oocsf", str(SIPP_DIR / self.answer), "-s", self.extension,
            "-au", self.extension, "-ap", self.password,
            "-i", self.address, "-p", str(self.local_port), "-mi", self.address, "-mp", str(self.local_port + 10),
            "-m", "1", "-ci", self.address, "-cp", str(self.local_port + 20), "-nostdin", "-nd",
            "-timeout", "3600s",
        ]

    def start(self) -> SippPhone:
        self.process = subprocess.Popen(self.command(), cwd=SIPP_DIR, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        return self

    def registered(self, runtime: Any) -> bool:
        """Asterisk holds a contact for the extension at this phone's address."""
        if self.process is not None and self.process.poll() is not None:
            error = self.process.stderr.read().decode()[-800:]
            if self._own_port and "errno = 98" in error and self._rebinds < 3:
                # The block was free when chosen, then taken (another session's phone, an ephemeral UDP port)
                # before SIPp bound it: choose another block and start again.
                self._rebinds += 1
                self.local_port = free_udp_block(self.address)
                self.start()
                return False
            raise RuntimeError(f"SIPp for {self.extension} exited: {error}")
        return f"{self.address}:{self.local_port}" in runtime.rx(f"pjsip show aor {self.extension}")

    async def wait_registered(self, runtime: Any, timeout: float = 20) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await asyncio.to_thread(self.registered, runtime):
            if loop.time() > deadline:
                raise AssertionError(f"phone {self.extension} did not register within {timeout}s")
            await asyncio.sleep(0.3)

    def stop(self) -> None:
        _end(self.process)
        self.process = None

    def __enter__(self) -> SippPhone:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def streaming_answer(folder: Path, speech_ulaw: Path, name: str = "agent_answer_speech.xml") -> Path:
    """agent_answer.xml that also streams ``speech_ulaw`` (headerless 8 kHz u-law, looped) once the call is
    up, as a real agent speaks (or a browser's microphone sends): SIPp reads exec attributes when it loads
    the scenario, so the file's path is filled into a copy in ``folder``."""
    text = (SIPP_DIR / "agent_answer.xml").read_text()
    marker = '<recv request="ACK"/>'
    text = text.replace(marker, f'{marker}\n  <nop><action><exec rtp_stream="{speech_ulaw},-1,0"/></action></nop>', 1)
    target = folder / name
    target.write_text(text)
    return target


class PhoneBank:
    """Many agent phones in one SIPp process: each extension registers with its own credentials
    (sipdrivers/scenarios/agents_register.xml, an injection file of extension;password) and all share this
    process's address, where the out-of-call scenario ``answer`` answers whatever Asterisk sends to any of
    them. Cheap where one SIPp per phone is not: one socket, one process, for hundreds of phones.
    Asterisk dials each phone by its own AOR (max_contacts = 1) and app_queue's ringinuse = no keeps a
    talking phone from being rung again, so one shared contact address behaves as separate phones."""

    def __init__(self, settings: Any, phones: dict[str, str], answer: Path, address: str = "127.0.0.1",
                 cpus: str | None = None) -> None:
        self.settings, self.phones, self.answer, self.address, self.cpus = settings, phones, answer, address, cpus
        self.node = settings.nodes[0]
        self.local_port = free_udp_block(address)
        self.process: subprocess.Popen | None = None
        self._folder = tempfile.TemporaryDirectory(prefix="hotline-phones-")

    def start(self) -> PhoneBank:
        injection = Path(self._folder.name) / "phones.csv"
        injection.write_text("SEQUENTIAL\n" + "".join(f"{ext};[authentication username={ext} password={password}];\n"
                                                      for ext, password in self.phones.items()))
        count = len(self.phones)
        self.process = subprocess.Popen([
            *(["taskset", "-c", self.cpus] if self.cpus else []),
            "sipp", f"{self.node.address}:{self.node.sip_port}", "-sf", str(SIPP_DIR / "agents_register.xml"),
            "-inf", str(injection), "-oocsf", str(self.answer), "-s", "phones",
            "-i", self.address, "-p", str(self.local_port), "-mi", self.address, "-mp", str(self.local_port + 10),
            # Registrations at 50 a second; open calls: every registration stays up, plus the answered calls.
            "-m", str(count), "-r", "50", "-l", str(3 * count + 50),
            "-ci", self.address, "-cp", str(self.local_port + 20), "-nostdin", "-nd", "-timeout", "7200s",
        ], cwd=self.answer.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def registered(self, runtime: Any) -> int:
        """How many of the phones Asterisk holds a contact for at this process's address."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"SIPp phone bank exited: {self.process.stderr.read().decode()[-800:]}")
        contacts = runtime.rx("pjsip show contacts")
        return sum(f"{ext}@{self.address}:{self.local_port}" in contacts for ext in self.phones)

    async def wait_registered(self, runtime: Any, timeout: float = 120) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (done := await asyncio.to_thread(self.registered, runtime)) < len(self.phones):
            if loop.time() > deadline:
                raise AssertionError(f"{done} of {len(self.phones)} phones registered within {timeout}s")
            await asyncio.sleep(1)

    def stop(self) -> None:
        _end(self.process)
        self.process = None
        self._folder.cleanup()


@asynccontextmanager
async def agents_on_phones(settings: Any, runtime: Any, ami: Any, redis: Any, db: Any,
                           agents: dict[str, str], answer: str = "agent_answer.xml") -> AsyncIterator[list[Any]]:
    """Each agent (username -> extension) on a registered, auto-answering SIPp phone (``answer``: its
    scenario), logged in and ready; logged out and the phones stopped afterwards. Shared by the tests and
    bench/."""
    phones = [SippPhone(settings, extension, answer=answer).start() for extension in agents.values()]
    users: list[Any] = []
    try:
        for phone in phones:
            await phone.wait_registered(runtime)
        async with db.session() as session:
            found = {u.username: u for u in (await session.scalars(
                select(User).where(User.username.in_(list(agents))))).all()}
        users = [found[name] for name in agents]
        for user in users:
            await control.agent_login(ami, redis, user, agents[user.username])
            await control.agent_ready(ami, redis, user)
        yield users
    finally:
        for user in users:
            await control.agent_logout(ami, redis, user)
        for phone in phones:
            phone.stop()
