"""Cluster mode (issue 19 items 1, 4 and 5): Kamailio in front of two Asterisk nodes, on PostgreSQL.

One stack started as `./hotline up --nodes 2` starts it (HOTLINE_CLUSTER_NODES=2): Kamailio on the
platform's SIP address, node1 and node2 on 127.0.0.11 and 127.0.0.12, the carrier on 127.0.0.2. One
scenario, in order:

0. a phone registers with Kamailio's registrar with its password; one with a wrong password does not;
1. SIPp citizens from the carrier address through Kamailio reach both nodes (each node's own CDR says
   which calls it carried);
2. a call from an address that is neither the carrier nor a node is refused (403) and reaches no node;
3. node1 is SIGKILLed while calls are coming in (and kept down): Kamailio's dispatcher marks it down,
   then every new call succeeds, all on node2 (zero SIPp failures);
4. node1 comes back: the dispatcher marks it up and it carries calls again.

Second sources: Kamailio's own dispatcher state and registrar (kamcmd dispatcher.list, ul.lookup), its
log, and each node's Master.csv;
SIPp's own statistics for successes and failures.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from xmlrpc.client import Fault

import pytest

from cli.supervisor import program_pid, supervisor_rpc
from core import kamailio
from core.asterisk_runtime import node_runtimes
from cti.books import CDR_COLUMNS
from sipdrivers.carrier import SIPP_DIR, run_citizen_calls
from sipdrivers.phones import SippPhone
from tests.conftest import TEST_SETTINGS

pytestmark = pytest.mark.stack

PROXIED = SIPP_DIR / "citizen_proxied.xml"
STRANGER = "127.0.0.5"  # not the carrier (127.0.0.2), not a node, not Kamailio


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, Any]]:
    from cli.postgres import throwaway_postgresql
    from cli.stack import throwaway_stack

    with throwaway_postgresql(prefix="hotline-cluster-pg-") as url:
        overrides = {**TEST_SETTINGS, "HOTLINE_CLUSTER_NODES": "2", "HOTLINE_DATABASE_URL": url,
                     "HOTLINE_ASTERISK_BENCH_ECHO": "true"}  # DID 10000: a bare answered call on each node
        with throwaway_stack(overrides, "hotline-cluster-", say=lambda line: print(line, flush=True)) as stack:
            yield stack


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five seconds of a tone as headerless u-law: the citizens' RTP (the echo line sends it back)."""
    path = tmp_path_factory.mktemp("cluster-speech") / "tone.ulaw"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-t", "raw", "-e", "u-law", str(path),
                    "synth", "5", "sine", "440"], check=True, capture_output=True)
    return path


def _callers(phase: int, count: int) -> list[str]:
    return [f"139{phase:02d}{index:06d}" for index in range(count)]


def _answered_by_node(runtimes: dict[str, Any], callers: list[str]) -> dict[str, set[str]]:
    """Which of ``callers`` each node's own CDR has as answered calls."""
    wanted, found = set(callers), {}
    for name, runtime in runtimes.items():
        path = runtime.host_path(runtime.inside("log", "cdr-csv", "Master.csv"))
        rows = csv.reader(path.read_text(errors="replace").splitlines()) if path.exists() else []
        found[name] = {row[CDR_COLUMNS.index("src")] for row in rows if len(row) >= len(CDR_COLUMNS)
                       and row[CDR_COLUMNS.index("src")] in wanted
                       and row[CDR_COLUMNS.index("disposition")] == "ANSWERED"}
    return found


def _calls(settings, speech: Path, callers: list[str], rate: float = 5, hold_ms: int = 1000):
    return run_citizen_calls(settings, "10000", "", callers, speech, hold_ms=hold_ms, rate=rate, timeout=120,
                             scenario=PROXIED)


def _kill_and_keep_down(settings, program: str) -> None:
    """SIGKILL the node's Asterisk, then keep the supervisor from bringing it back (it restarts at once)."""
    os.kill(program_pid(settings, program), signal.SIGKILL)
    rpc = supervisor_rpc(settings)
    deadline = time.monotonic() + 60
    # EXITED is not down: the supervisor starts it again on its next turn.
    while rpc.getProcessInfo(program)["statename"] != "STOPPED":
        assert time.monotonic() < deadline, f"{program} would not stay down"
        try:
            rpc.stopProcess(program, True)
        except Fault:  # not running at this instant (between the crash and the restart)
            time.sleep(0.05)


async def test_kamailio_spreads_carrier_calls_refuses_strangers_and_survives_a_node_killed(cluster, speech, waiter):
    settings, runtime = cluster
    runtimes = node_runtimes(settings, runtime)
    assert settings.clustered and [n.address for n in settings.nodes] == ["127.0.0.11", "127.0.0.12"]

    async def node_up(name: str, up: bool) -> bool:
        return kamailio.dispatcher_state(settings)[name].up is up

    for name in runtimes:
        await waiter(lambda name=name: node_up(name, True), timeout=30, what=f"dispatcher marking {name} up")

    # 0. Phones register with Kamailio: digest auth against the phones table's own credentials (the
    #    PostgreSQL view kamailio_subscriber); a wrong password is refused.
    front = SimpleNamespace(address=settings.sip.bind, sip_port=settings.sip.port)
    good = SippPhone(settings, "8001", node=front).start()
    try:
        contacts = await waiter(lambda: _contacts(settings, "8001"), timeout=30, what="8001 registered with Kamailio")
        assert contacts == [f"sip:8001@{good.address}:{good.local_port}"], contacts
    finally:
        good.stop()
    # The register scenario alone (no answering part): with a wrong password its REGISTER is challenged
    # again instead of accepted; SIPp takes that challenge for a repeat of the first, so it gives up after
    # one retransmission rather than five.
    bad = SippPhone(settings, "8002", node=front, password="wrong-password").command()
    del bad[bad.index("-oocsf"):bad.index("-oocsf") + 2]
    bad += ["-max_non_invite_retrans", "1"]
    refused = await asyncio.to_thread(subprocess.run, bad, cwd=SIPP_DIR, capture_output=True, timeout=60)
    assert refused.returncode != 0 and not kamailio.registered_contacts(settings, "8002")
    assert "REGISTER of 8002 from 127.0.0.1" in (settings.log_dir / "kamailio.log").read_text(errors="replace")

    # 1. Carrier calls through Kamailio reach both nodes (each node's own CDR).
    first = _callers(1, 10)
    result = await asyncio.to_thread(_calls, settings, speech, first)
    assert (result.successful, result.failed) == (10, 0), result.output
    spread = await waiter(lambda: _all_answered(runtimes, first), timeout=30, what="the CDR rows of both nodes")
    assert spread["node1"] and spread["node2"], spread

    # 2. A call from neither the carrier nor a node: 403 from Kamailio, no node sees it.
    stranger = _callers(2, 1)
    refused = await asyncio.to_thread(run_citizen_calls, settings, "10000", "", stranger, speech,
                                      scenario=SIPP_DIR / "citizen_refused.xml", source=STRANGER, timeout=30)
    assert (refused.successful, refused.failed) == (1, 0), refused.output
    assert not any(_answered_by_node(runtimes, stranger).values())

    # 3. node1 killed while calls come in: the dispatcher marks it down, then new calls all succeed on node2.
    during = _callers(3, 30)
    load = asyncio.create_task(asyncio.to_thread(_calls, settings, speech, during, 5, 3000))
    await waiter(lambda: _answered_on(runtimes, during, "node1", 2), timeout=60, what="load calls on node1")
    killed_at = time.monotonic()
    await asyncio.to_thread(_kill_and_keep_down, settings, settings.node("node1").program)
    await waiter(lambda: node_up("node1", False), timeout=30, interval=0.1, what="dispatcher marking node1 down")
    print(f"node1 marked down {time.monotonic() - killed_at:.1f} s after SIGKILL")
    load_result = await load
    print(f"calls during the kill: {load_result.successful} succeeded, {load_result.failed} failed "
          "(those on node1 when it died)")
    after = _callers(4, 10)
    result = await asyncio.to_thread(_calls, settings, speech, after)
    assert (result.successful, result.failed) == (10, 0), result.output
    carried = await waiter(lambda: _all_answered(runtimes, after), timeout=30, what="the calls after the kill")
    assert carried["node2"] == set(after), carried
    # Kamailio's own log: none of them was even tried on node1 (no failover needed: it was known down).
    assert _sent_to(settings, after) == {kamailio.node_uri(settings.node("node2"))}, _sent_to(settings, after)

    # 4. node1 back: the dispatcher sends it calls again.
    supervisor_rpc(settings).startProcess(settings.node("node1").program, True)
    await waiter(lambda: node_up("node1", True), timeout=90, what="dispatcher marking node1 up again")
    back = _callers(5, 6)
    result = await asyncio.to_thread(_calls, settings, speech, back)
    assert (result.successful, result.failed) == (6, 0), result.output
    carried = await waiter(lambda: _all_answered(runtimes, back), timeout=30, what="the calls after the return")
    assert carried["node1"] and carried["node2"], carried


async def _contacts(settings, extension: str) -> list[str]:
    return await asyncio.to_thread(kamailio.registered_contacts, settings, extension)


def _sent_to(settings, callers: list[str]) -> set[str]:
    """Where Kamailio sent these callers' INVITEs (its log: "carrier call <id> from <caller> to <node>")."""
    wanted = set(callers)
    text = (settings.log_dir / "kamailio.log").read_text(errors="replace")
    return {uri for caller, uri in re.findall(r"carrier call \S+ from (\d+) to (sip:\S+)", text) if caller in wanted}


async def _all_answered(runtimes, callers: list[str]) -> dict[str, set[str]] | None:
    found = _answered_by_node(runtimes, callers)
    return found if set().union(*found.values()) == set(callers) else None


async def _answered_on(runtimes, callers: list[str], node: str, at_least: int) -> bool:
    return len(_answered_by_node(runtimes, callers)[node]) >= at_least
