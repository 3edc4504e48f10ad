"""Issue 20, item 3: `./hotline up` on a running platform with calls up all along (at least 20: two
talking to the SIPp agents, the rest waiting in the queue or in the IVR; more are placed while the
upgrade runs, so calls are up whatever the machine's speed).

First a new version with a wrong configuration: `up` refuses it in plain Chinese before anything stops
(no service gets a new process, no call ends). Then a good one, on a platform the previous version
started (its code fingerprint in var/run): every Python service is restarted one after the other while
calls are up, Asterisk never. SIPp's own count says no call was dropped, and every call record is checked
against Asterisk's queue_log and CDR, recordings, pops and agent states (the fault harness).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from cli.supervisor import program_pid
from cli.upgrade import PYTHON_PROGRAMS, UNCHANGED, fingerprint_file
from core.events import STREAM
from core.logrotate import rotate_asterisk_logs
from core.settings import REPO_ROOT
from tests.faults.harness import Books, Fault, Outcome, record

pytestmark = pytest.mark.stack

GROUP, HOLD_MS, EVERY = 10, 24000, 12.0  # a group of 10 citizens every 12 s, each on the line ~30 s
UP = [sys.executable, "-m", "cli", "up"]  # what `./hotline up` runs after its Debian/venv checks
RESTARTED = re.compile(r"^\s+(\w+): restarted and healthy \(([\d.]+)s\)")


async def test_upgrade_with_calls_up_drops_none(fault_runner, fault_table) -> None:
    runner = fault_runner
    settings = runner.stack.settings
    await runner.restore()
    mark = runner.watcher.mark()
    books = Books(runner.stack)
    stream_start = (await runner.redis.xrevrange(STREAM, count=1) or [("0-0", {})])[0][0]
    fingerprint_file(settings).write_text("previous-release\n")  # services started from other code
    groups: list[tuple[list[str], asyncio.Task]] = []
    everyone: set[str] = set()

    def launch() -> None:
        callers = runner._callers(GROUP)
        everyone.update(callers)
        groups.append((callers, runner._place(callers, hold_ms=HOLD_MS, rate=5)))

    async def calls_up() -> int:
        return len({c.get("Linkedid") for c in await runner._live_channels() if c.get("CallerIDNum") in everyone})

    async def pids() -> dict[str, int]:
        return {p: await asyncio.to_thread(program_pid, settings, p) for p in (*PYTHON_PROGRAMS, "asterisk")}

    launch()
    launch()
    await runner.watcher.nth(mark, "AgentConnect", everyone, 2, timeout=90)
    deadline = time.monotonic() + 60
    while (up_now := await calls_up()) < 2 * GROUP and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert up_now == 2 * GROUP, f"only {up_now} calls up before the upgrade"
    before = await pids()

    # A wrong configuration: refused before anything stops.
    refused = await asyncio.to_thread(subprocess.run, UP, cwd=REPO_ROOT, capture_output=True, text=True,
                                      env={**os.environ, "HOTLINE_HOURS_MODE": "sometimes"}, timeout=120)
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert UNCHANGED in refused.stderr and "[hours] mode = 'sometimes'" in refused.stderr, refused.stderr
    assert await pids() == before, "a service was restarted by a refused upgrade"
    assert await calls_up() == 2 * GROUP, "a call ended during the refused upgrade"

    # Asterisk's books rotated with the calls up (item 4): each call's queue_log lines start in queue_log.1
    # and go on in a new file (Asterisk reopened it), its CDR row in the new Master.csv; the CTI restarted
    # by the upgrade catches up across both, and the comparison below reads both.
    rotated = await asyncio.to_thread(rotate_asterisk_logs, settings, runner.stack.runtime, 0)
    assert books.queue_log in rotated, rotated

    # The upgrade, with a new group of citizens every EVERY seconds while it runs.
    proc = await asyncio.create_subprocess_exec(*UP, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    output: list[str] = []
    cti_window = (0.0, 0.0)

    async def read_output() -> None:
        nonlocal cti_window
        async for raw in proc.stdout:
            line = raw.decode(errors="replace")
            output.append(line)
            if (m := RESTARTED.match(line)) and m.group(1) == "cti":
                cti_window = (time.time() - float(m.group(2)), time.time())

    reader = asyncio.create_task(read_output())
    calls_at_restart: dict[str, int] = {}
    last_launch = time.monotonic()
    while proc.returncode is None:
        now_pids, up_now = await pids(), await calls_up()
        for program in PYTHON_PROGRAMS:
            if now_pids[program] != before[program] and program not in calls_at_restart:
                calls_at_restart[program] = up_now  # the old process is gone: calls up at that moment
        if time.monotonic() - last_launch >= EVERY:
            launch()
            last_launch = time.monotonic()
        try:
            await asyncio.wait_for(proc.wait(), 0.5)
        except TimeoutError:
            pass
    await reader
    text = "".join(output)
    assert proc.returncode == 0, text[-3000:]
    after = await pids()
    assert after["asterisk"] == before["asterisk"], "Asterisk was restarted by the upgrade"
    assert all(after[p] != before[p] for p in PYTHON_PROGRAMS), f"not restarted: {before} -> {after}\n{text}"
    assert set(calls_at_restart) == set(PYTHON_PROGRAMS)
    assert min(calls_at_restart.values()) >= GROUP, f"calls up as each service restarted: {calls_at_restart}"

    # Zero dropped: each citizen ended the call itself, after its full time on the line.
    callers = [c for group, _ in groups for c in group]
    outcome = Outcome(Fault("cti", "upgrade", "rolling"), calls=len(callers))
    for group, task in groups:
        result = await task
        assert (result.successful, result.failed) == (len(group), 0), result.output[-2000:]
    old_book, new_book = books.queue_log.with_name("queue_log.1").read_text(), books.queue_log.read_text()
    first = {r.call_id for r in await runner._records(callers[:2 * GROUP])}
    spanning = {i for i in first if f"|{i}|" in old_book and f"|{i}|" in new_book}
    assert spanning, "no call's queue_log lines in both files: queue_log not reopened after the rotation?"
    # Rings while the CTI restarts get no pop, by nature (as in the fault suite); everything else must agree.
    await runner._compare(outcome, books, callers, mark, stream_start, *cti_window)
    record(outcome)
    # Zero dropped in Asterisk's own books too: each citizen has one leg in the CDR, on the line for its
    # whole time (the SIPp pause and the IVR before it), ended by the citizen.
    legs = defaultdict(list)
    for leg in books.cdr_calls().values():
        legs[leg.caller].append(leg)
    short = {c: [(leg.end - leg.start).total_seconds() for leg in legs[c]] for c in callers
             if len(legs[c]) != 1 or (legs[c][0].end - legs[c][0].start).total_seconds() < HOLD_MS / 1000 - 1}
    assert not short, f"calls not billed once for their whole time: {short}"
    # Every call has its record, complete and agreeing with queue_log, the CDR and AMI (caller, hotline,
    # node, start, answer and agent, wait and talk, end, hang-up cause, recording filed), nothing is
    # stranded, every pop given, every agent state right.
    damage = {"missing": outcome.missing, "stranded": outcome.stranded, "wrong": outcome.wrong,
              "recordings lost": outcome.recordings_lost, "pops lost": outcome.pops_lost_while_up,
              "duplicate originates": outcome.duplicate_originates, "agent states wrong": outcome.agents_wrong}
    assert not any(damage.values()) and outcome.health_honest, (
        f"{damage}\n" + "\n".join(outcome.problems) + f"\ncalls up at each restart: {calls_at_restart}\n" + text)
