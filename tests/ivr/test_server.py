"""The FastAGI server over a real socket, with a scripted stand-in for Asterisk's side of AGI."""

from __future__ import annotations

import asyncio
import re

import pytest

from core.settings import load_settings
from ivr.menu import load_all_menus
from ivr.server import FastAgiApplication, IvrService
from tests.ivr.fakes import FakePrompts, FakeTickets


class BrokenTickets(FakeTickets):
    async def open_for_phone(self, phone: str):
        raise RuntimeError("database is down")


async def asterisk_call(port: int, script: str, variables: dict[str, str], keys: dict[str, str]) -> list[str]:
    """Play Asterisk: send the AGI environment, answer each command, return the commands received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    env = {"agi_network": "yes", "agi_network_script": script, "agi_extension": variables.get("HOTLINE", ""),
           "agi_callerid": "13912345678", "agi_channel": "Local/test"}
    writer.write("".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n")
    received = []
    while line := (await reader.readline()).decode().strip():
        received.append(line)
        if match := re.match(r"GET VARIABLE (\S+)", line):
            value = variables.get(match[1])
            reply = f"200 result=1 ({value})" if value else "200 result=0"
        elif match := re.match(r"(STREAM FILE|GET OPTION) \S+/(\S+)", line):
            reply = f"200 result={ord(keys[match[2]]) if match[2] in keys else 0} endpos=100"
        else:
            reply = "200 result=1"
        writer.write(f"{reply}\n".encode())
    writer.close()
    return received


@pytest.fixture
async def server(tmp_path):
    settings = load_settings(var_dir=tmp_path, env={"HOTLINE_HOURS_MODE": "always"})
    service = IvrService(settings, load_all_menus(), FakePrompts(), BrokenTickets())
    app = FastAgiApplication()
    app.add_route("ivr", service.ivr)
    app.add_route("queue-timeout", service.queue_timeout)
    srv = await asyncio.start_server(app.handler, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()


def final_variables(commands: list[str]) -> dict[str, str]:
    return dict(re.findall(r'SET VARIABLE _*(\S+) "(.*)"', "\n".join(commands)))


async def test_a_call_is_routed_through_the_socket(server):
    commands = await asterisk_call(server, "ivr", {"HOTLINE": "12365", "IVR_AHEAD": "3"}, {})
    assert final_variables(commands) == {"IVR_PATH": "main:3", "BUSINESS": "report",
                                             "TARGET_QUEUE": "12365-report", "IVR_ROUTE": "queue"}


async def test_a_crash_in_the_handler_still_routes_the_caller_to_the_general_queue(server):
    # key 4 = case progress, whose ticket look-up raises
    commands = await asterisk_call(server, "ivr", {"HOTLINE": "12301", "IVR_AHEAD": "4"}, {})
    values = final_variables(commands)
    assert values["TARGET_QUEUE"] == "12301-general" and values["IVR_ROUTE"] == "queue"


async def test_a_port_probe_does_not_stall_the_server(server):
    for _ in range(3):  # ./hotline status connects and closes without an AGI environment
        _reader, writer = await asyncio.open_connection("127.0.0.1", server)
        writer.close()
    commands = await asyncio.wait_for(
        asterisk_call(server, "queue-timeout", {"IVR_PATH": "main:0"}, {"queue-timeout": "2"}), 5)
    assert final_variables(commands) == {"IVR_PATH": "main:0>queue-timeout:2", "CALLBACK_NUMBER": "13912345678",
                                         "IVR_ROUTE": "callback"}


async def test_the_caller_hanging_up_ends_the_handler_quietly(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"agi_network_script: ivr\nagi_extension: 12301\n\n")
    assert (await reader.readline()).startswith(b"GET VARIABLE HOTLINE")
    writer.write(b"HANGUP\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # server closed the connection


async def test_a_hang_up_during_a_menu_is_not_taken_for_silence(server):
    """Asterisk answers a GET OPTION interrupted by a hang-up with result=-1, and afterwards still runs
    SET/GET VARIABLE on the dead channel (they are allowed there) but refuses CHANNEL STATUS with 511.
    The flow must stop, not take the hang-up in its last try for silence and record a choice of an agent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"agi_network: yes\nagi_network_script: ivr\nagi_extension: 12365\nagi_callerid: 13912345678\n\n")
    received, dead, tries = [], False, 0
    while line := (await reader.readline()).decode().strip():
        received.append(line)
        tries += line.startswith("GET OPTION")
        if tries == 3 and not dead:  # the main menu's last try (retries: 3)
            dead, reply = True, "200 result=-1 endpos=0"
        elif line.startswith("GET VARIABLE"):
            reply = "200 result=1 (12365)" if "HOTLINE" in line else "200 result=0"
        elif line.startswith("SET VARIABLE"):
            reply = "200 result=1"
        elif not dead:
            reply = "200 result=0 endpos=100"  # a prompt played to its end, no key
        else:
            reply = "511 Command Not Permitted on a dead channel or intercepted"
        writer.write(f"{reply}\n".encode())
    writer.close()
    assert dead, received
    values = final_variables(received)
    assert "no-choice" not in values.get("IVR_PATH", ""), received
    assert "TARGET_QUEUE" not in values and "BUSINESS" not in values, received


async def test_an_edited_menu_is_taken_up_between_calls_and_a_broken_one_never(tmp_path):
    from core import content

    settings = load_settings(var_dir=tmp_path, env={"HOTLINE_HOURS_MODE": "always"})
    content.use(tmp_path)
    try:
        service = IvrService(settings, load_all_menus(), FakePrompts(), BrokenTickets())
        app = FastAgiApplication()
        app.add_route("ivr", service.ivr)
        srv = await asyncio.start_server(app.handler, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        call = {"HOTLINE": "12301", "IVR_AHEAD": "3"}
        assert final_variables(await asterisk_call(port, "ivr", call, {}))["TARGET_QUEUE"] == "12301-report"

        text = content.text_of("menus/12301.yaml").replace('"3": {target: "queue:report"', '"3": {target: "queue:complaint"')
        content.save("menus/12301.yaml", text, "admin")
        assert await service.follow_content() is True
        assert final_variables(await asterisk_call(port, "ivr", call, {}))["TARGET_QUEUE"] == "12301-complaint"

        # A file broken behind the admin area's back (written by hand): the IVR keeps the menus it has.
        (tmp_path / "content" / "menus" / "12301.yaml").write_text("hotline: [", encoding="utf-8")
        (tmp_path / "content" / ".version").write_text("99\n")
        assert await service.follow_content() is False
        assert final_variables(await asterisk_call(port, "ivr", call, {}))["TARGET_QUEUE"] == "12301-complaint"
        srv.close()
        await srv.wait_closed()
    finally:
        content.use(None)


async def test_the_ivr_pushes_the_dialplans_deadman_back_before_each_wait_for_the_caller(server, tmp_path):
    """dialplans/hotline.conf arms a deadman (the channel's absolute timeout) that sends a caller the IVR
    does not keep up with to the general queue: before each prompt the IVR moves it past that prompt's end."""
    from ivr.prompts import AsteriskPrompts, PromptStore

    commands = await asterisk_call(server, "ivr", {"HOTLINE": "12365"}, {"main": "3"})
    waits = [i for i, line in enumerate(commands) if line.startswith(("STREAM FILE", "GET OPTION", "GET DATA"))]
    assert len(waits) >= 2, commands
    # FakePrompts knows no lengths: the longest prompt is assumed, plus the time for the key, plus the grace.
    assert all(commands[i - 1].startswith("SET AUTOHANGUP ") for i in waits), commands
    option = next(i for i in waits if commands[i].startswith("GET OPTION"))
    timeout_ms = int(commands[option].split()[-1])
    assert commands[option - 1] == f"SET AUTOHANGUP {120 + timeout_ms // 1000 + 15}", commands
    timeout = await asterisk_call(server, "queue-timeout", {"IVR_PATH": "main:0"}, {"queue-timeout": "1"})
    assert timeout[0].startswith("SET AUTOHANGUP "), timeout

    # The real prompt store's files: 8 kHz 16-bit mono, 16 000 bytes a second after the header.
    store = PromptStore(tmp_path, "/inside/sounds", private=False)
    (tmp_path / "greeting.wav").write_bytes(b"\0" * (44 + 16000 * 3))
    prompts = AsteriskPrompts(store)
    assert prompts.seconds(prompts.path("greeting")) == 3
    assert prompts.seconds(prompts.path("missing")) is None and prompts.seconds("/elsewhere/greeting") is None
