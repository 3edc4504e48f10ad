"""`./hotline up` on a platform that is already running: check first, then restart one part at a time.

An upgrade is `git pull` (or a new tarball) followed by `./hotline up`. The calls in progress must not
notice, so:

1. :func:`preflight` checks everything a service refuses at start-up (every policy file, opening hours,
   nodes) *before* anything is rendered, migrated or stopped; a wrong file stops `up` with a plain message while the
   running platform keeps taking calls.
2. The database is migrated (alembic) and the Asterisk configuration re-rendered (``core reload``:
   Asterisk re-reads it in place, its calls stay up); Asterisk itself is never restarted by `up`.
3. :func:`rolling_restart` restarts the Python services one after the other, each only once the one
   before it is healthy again (a new process with a fresh heartbeat). They are restart-safe (the CTI
   catches up from Asterisk's own books, a call in the IVR falls through to a queue), so a call up during
   the upgrade is not dropped. Services restart when the code or configuration changed since the last
   `up` (a fingerprint in ``var/run/code.sha256``) or their supervisor program changed.
"""

from __future__ import annotations

import hashlib
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.supervisor import program_pid, supervisor_rpc, supervisorctl
from core.settings import REPO_ROOT, ConfigError, Settings

if TYPE_CHECKING:
    from core.asterisk_runtime import AsteriskRuntime

Say = Callable[[str], None]
# The folders whose files a service reads at start-up: a change in them needs a restart to take effect.
CODE_FOLDERS = ("core", "cti", "ivr", "agent_desk", "tickets", "recordings", "config", "migrations")
CODE_FILES = ("pyproject.toml", "package-lock.json")
# Python programs restarted by an upgrade, in this order (scheduler last: it only sends notices).
PYTHON_PROGRAMS = ("ivr", "cti", "agent_desk", "recordings", "scheduler", "logrotate")
REFUSED = "配置有误，本次升级未做任何改动，正在运行的平台照常接听来电"
NOT_STARTED = "配置有误，平台未启动"
SETTINGS_REFUSED = "配置有误，本次 ./hotline up 未做任何改动（正在运行的平台照常接听来电）"
UNCHANGED = "未做任何改动"  # in both refusals of a running platform


def preflight(settings: Settings, running: bool = False) -> None:
    """Everything a service refuses at start-up, checked now: every policy file (cli.policies, with file,
    line and reason) and the settings read only later (opening hours, nodes). Raises :class:`ConfigError`
    naming all problems. ``running``: the platform is up (an upgrade), which the message says."""
    from cli.policies import check
    from core.hours import Hours

    problems = []
    for check_one in (lambda: check(settings), lambda: Hours.from_settings(settings), lambda: settings.nodes):
        try:
            check_one()
        except ConfigError as exc:
            problems.append(f"  {exc}")
    if problems:
        raise ConfigError((REFUSED if running else NOT_STARTED) + "：\n" + "\n".join(problems))


def code_fingerprint(root: Path = REPO_ROOT) -> str:
    """sha256 over the files the services load (code, configuration, migrations, pinned dependencies)."""
    digest = hashlib.sha256()
    files = [root / name for name in CODE_FILES if (root / name).exists()]
    for folder in CODE_FOLDERS:
        files += [p for p in (root / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint_file(settings: Settings) -> Path:
    return settings.run_dir / "code.sha256"


class UpgradeError(RuntimeError):
    """A part did not come back after its restart; the message says which and where its log is."""


def _back(settings: Settings, program: str, old_pid: int, since: float, redis: Any,
          heartbeats: tuple[str, ...]) -> bool:
    """``program`` runs in a new process and says so: a heartbeat written after ``since`` (the desk: its
    health page answers)."""
    from core.service import heartbeat_key

    if program_pid(settings, program) in (0, old_pid):
        return False
    try:
        if program in heartbeats:
            value = redis.get(heartbeat_key(program))
            return value is not None and float(value) > since
        if program == "agent_desk":
            with urllib.request.urlopen(f"{settings.web_url}/healthz", timeout=2) as resp:
                return resp.status == 200
    except Exception:  # noqa: BLE001 - Redis away or the desk still starting: not back yet
        return False
    return True


def _wait_healthy(settings: Settings, program: str, old_pid: int, since: float, timeout: float,
                  heartbeats: tuple[str, ...], healthy: Callable[[], bool]) -> None:
    """Until ``program`` is back and every part passes its health check (``healthy``)."""
    from core.redis import connect_sync

    redis = connect_sync(settings)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if _back(settings, program, old_pid, since, redis, heartbeats) and healthy():
                return
            if time.monotonic() > deadline:
                raise UpgradeError(f"{program} 重启后 {timeout:.0f} 秒内未恢复正常，升级停在这一步（之后的服务未重启）。"
                                 f"日志：{settings.log_dir / (program + '.log')}")
            time.sleep(0.2)
    finally:
        redis.close()


def changed_programs(settings: Settings) -> dict[str, str]:
    """``supervisorctl reread``: program -> changed / available (new) / disappeared (removed)."""
    found = {}
    for line in supervisorctl(settings, "reread").stdout.splitlines():
        name, _, what = line.partition(":")
        if what.strip() in ("changed", "available", "disappeared"):
            found[name.strip()] = what.strip()
    return found


def rolling_restart(settings: Settings, runtime: AsteriskRuntime, say: Say, heartbeats: tuple[str, ...],
                    healthy: Callable[[], bool], timeout: float = 90) -> list[str]:
    """Apply the new version to a running platform one part at a time; returns the programs restarted.
    ``heartbeats``: the programs that write one; ``healthy``: every part passes its health check."""
    from core.asterisk_runtime import node_runtimes

    changed = changed_programs(settings)
    fingerprint = code_fingerprint()
    stale = (fingerprint_file(settings).read_text().strip() if fingerprint_file(settings).exists() else "") \
        != fingerprint
    asterisk = {node.program for node in settings.nodes}
    for node in node_runtimes(settings, runtime).values():
        node.rx("core reload")  # the re-rendered configuration, read in place: calls stay up
    for program in sorted(set(changed) & asterisk):
        # A changed Asterisk program (a new runtime) would need a restart that ends every call: left to
        # the operator at a quiet hour (README, Upgrade).
        say(f"    !! {program} 的启动方式已改变，为不中断通话未重启它；请在话务空闲时执行 "
            f"./hotline down && ./hotline up")
    restarted = []
    others = [p for p in changed if p not in asterisk and p not in PYTHON_PROGRAMS]
    order = [*sorted(others), *(p for p in PYTHON_PROGRAMS if p in changed or stale)]
    rpc = supervisor_rpc(settings)
    for program in order:
        since = time.time()
        if changed.get(program) in ("disappeared", "available"):
            supervisorctl(settings, "update", program)  # removed, or added and started
            say(f"    {program}: {'removed' if changed[program] == 'disappeared' else 'added'}")
            if changed[program] == "disappeared":
                continue
            old_pid = 0
        else:
            old_pid = program_pid(settings, program)
            if program in changed:
                supervisorctl(settings, "update", program)  # its program changed: replaced
            else:  # the new code under the same program
                if old_pid:
                    rpc.stopProcess(program, True)
                rpc.startProcess(program, False)
        _wait_healthy(settings, program, old_pid, since, timeout, heartbeats, healthy)
        say(f"    {program}: restarted and healthy ({time.time() - since:.1f}s)")
        restarted.append(program)
    supervisorctl(settings, "start", "all")  # a part someone stopped by hand runs again, as after a fresh `up`
    fingerprint_file(settings).write_text(fingerprint + "\n")
    return restarted


def record_fingerprint(settings: Settings) -> None:
    """After a fresh start: the services run this version."""
    fingerprint_file(settings).write_text(code_fingerprint() + "\n")
