"""Each service runs at its [priority] (nice): the CTI, IVR and desk ahead of Asterisk's threads, the
recordings worker behind them, and the services named in ``realtime`` under SCHED_RR; a value outside
-20 … 19 or an unknown service is refused at start-up, and without the right to real-time scheduling a
service runs at its nice value and says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.stack import supervisorctl
from core.settings import ConfigError, load_settings


def _nice(pid: int | str) -> int:
    # /proc/<pid>/stat: field 19 is the nice value; the command name (field 2) may hold spaces, so
    # count from the closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


def _threads_nice(pid: int | str) -> set[int]:
    return {_nice(f"{pid}/task/{task.name}") for task in Path(f"/proc/{pid}/task").iterdir()}


def _threads_policy(pid: int | str) -> set[tuple[int, int]]:
    tasks = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    return {(os.sched_getscheduler(task), os.sched_getparam(task).sched_priority) for task in tasks}


def test_every_service_and_each_of_its_threads_runs_at_its_configured_priority(stack):
    priority = stack.settings.priority
    for service in ("cti", "ivr", "agent_desk", "recordings", "scheduler"):
        pid = supervisorctl(stack.settings, "pid", service).stdout.strip()
        assert pid.isdigit(), (service, pid)
        # The threads too (aiosqlite's connection threads carry the CTI's database work).
        assert _threads_nice(pid) == {priority.of(service)}, service
        expected = ((os.SCHED_RR, priority.realtime_priority) if service in priority.realtime
                    else (os.SCHED_OTHER, 0))
        assert _threads_policy(pid) == {expected}, service
    asterisk = stack.runtime.host_path(stack.runtime.inside("run", "asterisk.pid")).read_text().strip()
    assert _nice(asterisk) == 0  # the media keeps the default; the services around it are placed by it
    assert priority.of("cti") < 0 < priority.of("recordings")  # the shipped defaults' order
    assert "cti" in priority.realtime and "recordings" not in priority.realtime
    # Redis carries every pop and agent state: its main thread real-time, its other threads (and snapshot
    # children) ordinary, by chrt --reset-on-fork.
    redis = supervisorctl(stack.settings, "pid", "redis").stdout.strip()
    assert "redis" in priority.realtime and redis.isdigit(), redis
    assert (os.sched_getscheduler(int(redis)) & ~os.SCHED_RESET_ON_FORK) == os.SCHED_RR
    assert os.sched_getparam(int(redis)).sched_priority == priority.realtime_priority


@pytest.mark.parametrize("value", ["-21", "20"])
def test_a_priority_outside_the_nice_range_is_refused_with_its_key(tmp_path, value):
    with pytest.raises(ConfigError, match=r"\[priority\] cti"):
        load_settings(tmp_path, env={"HOTLINE_PRIORITY_CTI": value})


@pytest.mark.parametrize(("key", "value", "reason"), [("REALTIME", "cti,asterisk", "未知的服务 asterisk"),
                                                      ("REALTIME_PRIORITY", "0", "1 到 99")])
def test_an_unknown_realtime_service_or_priority_is_refused(tmp_path, key, value, reason):
    with pytest.raises(ConfigError, match=reason):
        load_settings(tmp_path, env={f"HOTLINE_PRIORITY_{key}": value})


TAKE = """
import os, threading
from core.service import _take_priority
from core.settings import load_settings

class Log:
    def warning(self, event, **kw):
        print(event, sorted(kw))

_take_priority(load_settings(env={"HOTLINE_PRIORITY_REALTIME": "cti"}).priority, "cti", Log())
later = []
worker = threading.Thread(target=lambda: later.append(os.sched_getscheduler(0)))
worker.start(); worker.join()
print("policy", os.sched_getscheduler(0), later[0], os.getpriority(os.PRIO_PROCESS, 0))
"""


@pytest.mark.parametrize("permitted", [True, False])
def test_realtime_is_taken_by_later_threads_too_and_without_the_right_the_service_stays_at_its_nice(permitted):
    # A real process: with CAP_SYS_NICE (root, as the stack runs) and without it (setpriv takes it away).
    command = [sys.executable, "-c", TAKE]
    if not permitted:
        command = ["setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice", *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    nice = load_settings().priority.of("cti")
    if permitted:
        assert f"policy {os.SCHED_RR} {os.SCHED_RR} {nice}" in out, out
    else:  # raising the nice value needs the same right: both refused, both said
        assert "realtime_not_taken" in out and "priority_not_taken" in out, out
        assert f"policy {os.SCHED_OTHER} {os.SCHED_OTHER}" in out, out
