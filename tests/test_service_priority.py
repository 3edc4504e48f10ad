"""Each service runs at its [priority] (nice): the CTI, IVR and desk ahead of Asterisk's threads, the
recordings worker behind them; a value outside -20 … 19 is refused at start-up."""

from __future__ import annotations

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


def test_every_service_and_each_of_its_threads_runs_at_its_configured_priority(stack):
    priority = stack.settings.priority
    for service in ("cti", "ivr", "agent_desk", "recordings", "scheduler"):
        pid = supervisorctl(stack.settings, "pid", service).stdout.strip()
        assert pid.isdigit(), (service, pid)
        # The threads too (aiosqlite's connection threads carry the CTI's database work).
        assert _threads_nice(pid) == {priority.of(service)}, service
    asterisk = stack.runtime.host_path(stack.runtime.inside("run", "asterisk.pid")).read_text().strip()
    assert _nice(asterisk) == 0  # the media keeps the default; the services around it are placed by it
    assert priority.of("cti") < 0 < priority.of("recordings")  # the shipped defaults' order


@pytest.mark.parametrize("value", ["-21", "20"])
def test_a_priority_outside_the_nice_range_is_refused_with_its_key(tmp_path, value):
    with pytest.raises(ConfigError, match=r"\[priority\] cti"):
        load_settings(tmp_path, env={"HOTLINE_PRIORITY_CTI": value})
