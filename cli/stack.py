"""Bring one platform instance up or down: Asterisk, Redis and the Python services under supervisord.

Used by ``./hotline up|down|status`` and by the test harness, so the tests run
exactly what a user runs.
"""

from __future__ import annotations

import asyncio
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cli.supervisor import supervisorctl  # noqa: F401 - also the tests' way to it
from cli.upgrade import preflight, record_fingerprint, rolling_restart
from core import content, kamailio, provisioning
from core.asterisk_config import render_asterisk_config
from core.asterisk_runtime import AsteriskRuntime, node_runtimes, resolve_runtime
from core.db import Database
from core.filemodes import UMASK, private_umask, tighten
from core.metrics import SERVICE_METRICS
from core.provisioning import Telephony
from core.redis import server_command as redis_server_command
from core.settings import REPO_ROOT, Settings
from tickets.kannel import notify_programs, write_kannel_conf

PYTHON = sys.executable
SERVICES = ("ivr", "cti", "agent_desk", "recordings")
HEARTBEAT_SERVICES = ("ivr", "cti", "recordings", "scheduler")
Say = Callable[[str], None]


class StackError(RuntimeError):
    """A set-up step failed; the message names the step and what to do."""


@dataclass
class Health:
    name: str
    ok: bool
    detail: str


def _timed(say: Say, label: str):
    class _Timer:
        def __enter__(self):
            self.t0 = time.monotonic()
            say(f"==> {label}")
            return self

        def __exit__(self, exc_type, *_):
            if exc_type is None:
                say(f"    done in {time.monotonic() - self.t0:.1f}s")

    return _Timer()


def _free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _ephemeral_port() -> int:
    """A free loopback TCP port from the kernel (the test SMTP server's, outside the block)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_port_block() -> dict[str, str]:
    """HOTLINE_* port settings for a block of 100 free loopback ports: test and benchmark stacks
    run beside a demo stack or each other."""
    for base in random.sample(range(20000, 30000, 100), 100):
        if all(_free(base + offset) for offset in range(16)):
            return {
                # Kannel (admin, smsbox, fake SMSC, sendsms) and the test SMTP server.
                **{f"HOTLINE_NOTIFY_KANNEL_{name}_PORT": str(base + 6 + i)
                   for i, name in enumerate(("ADMIN", "SMSBOX", "SMSC", "SENDSMS"))},
                "HOTLINE_NOTIFY_SMTP_PORT": str(_ephemeral_port()),
                "HOTLINE_SIP_PORT": str(base), "HOTLINE_AMI_PORT": str(base + 1),
                "HOTLINE_AGI_PORT": str(base + 2), "HOTLINE_WEB_PORT": str(base + 3),
                "HOTLINE_REDIS_PORT": str(base + 4), "HOTLINE_WEBPHONE_HTTP_PORT": str(base + 5),
                # The carrier's own SIP port (its SIPp in tests) and its media (+2..+5): on the carrier address,
                # so two test sessions side by side never answer each other's outbound calls.
                "HOTLINE_SIP_CARRIER_PORT": str(base + 10),
                # Each Python service's metrics endpoint (core/metrics.py).
                **{f"HOTLINE_METRICS_{service.upper()}_PORT": str(base + 11 + i)
                   for i, service in enumerate(SERVICE_METRICS)},
                "HOTLINE_SIP_RTP_START": str(base + 20), "HOTLINE_SIP_RTP_END": str(base + 99),
            }
    raise RuntimeError("no free block of loopback ports for the test stack")


def supervisord_conf(settings: Settings, runtime: AsteriskRuntime) -> str:
    var = settings.var_dir
    env = {k: v for k, v in os.environ.items() if k.startswith("HOTLINE_")}
    env["HOTLINE_VAR"] = str(var)
    env["PYTHONUNBUFFERED"] = "1"
    env_line = ",".join(f'{k}="{v}"' for k, v in sorted(env.items()))
    # One Asterisk per node; the first keeps the single-node program name.
    runtimes = node_runtimes(settings, runtime)
    programs: dict[str, str] = {node.program: " ".join(runtimes[node.name].foreground_command())
                                for node in settings.nodes}
    if settings.clustered:  # the SIP front door; single node: none
        programs["kamailio"] = shlex.join(kamailio.command(settings))
    if settings.runs_own_redis:
        redis = redis_server_command(settings, var / "redis")
        if "redis" in settings.priority.realtime and _may_run_realtime():
            # Its main thread real-time; its snapshot child and background threads (--reset-on-fork) ordinary.
            redis = ["chrt", "--rr", "--reset-on-fork", str(settings.priority.realtime_priority), *redis]
        programs["redis"] = shlex.join(redis)
    for service in SERVICES:
        programs[service] = f"{PYTHON} -m {service}"
    programs["logrotate"] = f"{PYTHON} -m core.logrotate"  # Asterisk's messages, queue_log, Master.csv
    programs.update(notify_programs(settings))
    lines = [
        "[unix_http_server]",
        f"file={settings.run_dir / 'supervisor.sock'}",
        "chmod=0700",
        "[supervisord]",
        f"umask={UMASK:03o}",  # every service, Asterisk and Redis: files 0640, folders 0750 at most
        f"logfile={settings.log_dir / 'supervisord.log'}",
        f"logfile_maxbytes={settings.logs.max_mb}MB",
        f"logfile_backups={settings.logs.backups}",
        f"pidfile={settings.run_dir / 'supervisord.pid'}",
        f"directory={REPO_ROOT}",
        f"environment={env_line}",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "[supervisorctl]",
        f"serverurl=unix://{settings.run_dir / 'supervisor.sock'}",
    ]
    for name, command in programs.items():
        lines += [
            f"[program:{name}]",
            f"command={command}",
            f"umask={UMASK:03o}",
            "autorestart=true",
            "startsecs=1",
            "startretries=1000",
            "stopwaitsecs=15",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={settings.log_dir / (name + '.log')}",
            f"stdout_logfile_maxbytes={settings.logs.max_mb}MB",  # rotation: [logs] in hotline.toml
            f"stdout_logfile_backups={settings.logs.backups}",
            f"priority={10 if name.startswith('asterisk') or name in ('redis', 'kamailio') else 50}",
        ]
    return "\n".join(lines) + "\n"


def _may_run_realtime() -> bool:
    """Whether this process may start real-time programs (root or CAP_SYS_NICE): without it chrt would fail
    and the program with it, so it runs ordinary instead (the Python services log realtime_not_taken)."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (PermissionError, AttributeError):
        return False
    return shutil.which("chrt") is not None


def supervisor_running(settings: Settings) -> bool:
    pid_file = settings.run_dir / "supervisord.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (ValueError, ProcessLookupError):
        return False
    return True


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def check_health(settings: Settings, runtime: AsteriskRuntime) -> list[Health]:
    """Each part answers its own health check."""
    from core.redis import connect_sync

    results = []
    runtimes = node_runtimes(settings, runtime)
    for node in settings.nodes:
        out = runtimes[node.name].rx("core show uptime seconds") if _port_open(node.ami_host, node.ami_port) else ""
        results.append(Health(node.program, "System uptime" in out,
                              out.strip().splitlines()[0] if out else "not running"))
    if settings.clustered:
        results.append(Health("kamailio", *kamailio.health(settings)))
    from core.service import heartbeat_key, problem_key

    heartbeats: dict[str, float] = {}
    problems: dict[str, str] = {}
    try:
        client = connect_sync(settings)
        client.ping()
        results.append(Health("redis", True, settings.redis_url))
        for service in HEARTBEAT_SERVICES:
            value = client.get(heartbeat_key(service))
            if value:
                heartbeats[service] = float(value)
            problem = client.get(problem_key(service))
            if problem:  # the service says it is alive but not working (e.g. the CTI's consumer stuck)
                problems[service] = problem if isinstance(problem, str) else problem.decode(errors="replace")
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", reported in words
        results.append(Health("redis", False, str(exc)))
    now = time.time()
    for service in HEARTBEAT_SERVICES:
        age = now - heartbeats[service] if service in heartbeats else None
        ok = age is not None and age < 10 and service not in problems
        detail = problems.get(service) or (f"heartbeat {age:.1f}s ago" if age is not None else "no heartbeat")
        if service == "ivr":
            ok = ok and _port_open(settings.agi.host, settings.agi.port)
        results.append(Health(service, ok, detail))
    web = settings.web
    try:
        import urllib.request

        with urllib.request.urlopen(f"{settings.web_url}/healthz", timeout=2) as resp:
            results.append(Health("agent_desk", resp.status == 200, f"{settings.web_url}"))
    except Exception as exc:  # noqa: BLE001
        results.append(Health("agent_desk", False, f"{web.host}:{web.port}: {exc}"))
    return results


def migrate(settings: Settings) -> None:
    migrate_url(settings.database_url)


def migrate_url(url: str) -> None:
    """Bring the database at ``url`` to the latest alembic revision."""
    proc = subprocess.run(
        [PYTHON, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini"), "-x", f"url={url}", "upgrade", "head"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )
    if proc.returncode != 0:
        raise StackError(f"database migration failed:\n{proc.stderr[-2000:]}")


async def seed_and_load_telephony(settings: Settings) -> Telephony:
    """The phones and queues Asterisk's files carry: the database's, seeded on a new installation."""
    db = Database(settings.database_url)
    try:
        await provisioning.seed(db, settings)
        return await provisioning.load(db)
    finally:
        await db.close()


def prepare(settings: Settings, say: Say = print) -> AsteriskRuntime:
    """Everything before processes start: policies, runtime, config, prompts, schema, demo data."""
    with _timed(say, "Checking policy files (menus, deadlines, rules, units, templates, prompts, phrases)"):
        from cli.policies import check

        content.use(settings.var_dir)  # the instance's edits (var/content) are checked and used like config/
        check(settings)  # a broken file stops `up` here, before anything is built or started
    if settings.clustered and not kamailio.installed():
        raise StackError(f"集群模式需要 Kamailio（{kamailio.KAMAILIO} 不存在）：请以 root 运行 ./hotline up，"
                         f"它会安装 Debian 软件包 {' '.join(kamailio.DEBIAN_PACKAGES)}")
    if settings.clustered:
        try:
            kamailio.account()  # it runs as the package's kamailio user, never as root
        except RuntimeError as exc:
            raise StackError(str(exc)) from None
    with _timed(say, "Asterisk runtime"):  # built with the usual umask: its system files are for everyone
        runtime = resolve_runtime(settings, build=True, say=say)
    with private_umask():
        return _prepare_instance(settings, runtime, say)


def _prepare_instance(settings: Settings, runtime: AsteriskRuntime, say: Say) -> AsteriskRuntime:
    for folder in (settings.log_dir, settings.run_dir, settings.recordings_dir):
        folder.mkdir(parents=True, exist_ok=True)
    with _timed(say, "Migrating the database"):
        migrate(settings)
    with _timed(say, "Phones and queues (database, seeded from config/hotline.toml)"):
        telephony = asyncio.run(seed_and_load_telephony(settings))
    with _timed(say, "Rendering Asterisk configuration"):
        for node in settings.nodes:
            render_asterisk_config(settings, runtime, node, telephony)
    with _timed(say, "Generating Mandarin prompts"):
        from ivr.setup import generate_prompts

        generate_prompts(settings, runtime)
    if settings.clustered:
        with _timed(say, f"Rendering Kamailio configuration ({len(settings.nodes)} Asterisk nodes behind it)"):
            kamailio.render_kamailio_config(settings)
    with _timed(say, "Rendering Kannel configuration"):
        write_kannel_conf(settings)
    with _timed(say, "Seeding demo accounts"):
        from cli.demo import seed_demo_data

        asyncio.run(seed_demo_data(settings))
    with _timed(say, "File modes: nothing for other users"):
        # Files of older installations (mode 644 and 755): database, logs, recordings, Redis, CDR, and the
        # runtime's cache of synthesized prompts (read-backs of every instance; only root reads it).
        from ivr.setup import SHARED_CACHE

        for folder in (settings.var_dir, settings.recordings_dir, runtime.host_path(SHARED_CACHE),
                       *(node.host_instance_dir for node in node_runtimes(settings, runtime).values())):
            tighten(folder)
    return runtime


def _start_services(settings: Settings, runtime: AsteriskRuntime, say: Say) -> None:
    conf = settings.run_dir / "supervisord.conf"
    conf.write_text(supervisord_conf(settings, runtime))
    with _timed(say, "Starting services"):
        if supervisor_running(settings):
            # An upgrade (or a second `up`): one part at a time, never Asterisk, calls stay up.
            rolling_restart(settings, runtime, say, HEARTBEAT_SERVICES,
                            healthy=lambda: all(h.ok for h in check_health(settings, runtime)))
            if settings.clustered:  # the re-rendered node list, taken up in place (calls stay up)
                try:
                    kamailio.rpc(settings, "dispatcher.reload")
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    say(f"    !! Kamailio 未重新读取节点列表（{exc}）；请执行 ./hotline status 查看")
        else:
            proc = subprocess.run([PYTHON, "-m", "supervisor.supervisord", "-c", str(conf)],
                                  capture_output=True, text=True, cwd=REPO_ROOT)
            if proc.returncode != 0:
                raise StackError(f"supervisord did not start: {proc.stderr.strip()}")
            record_fingerprint(settings)


def up(settings: Settings, say: Say = print, wait: float = 90) -> AsteriskRuntime:
    with _timed(say, "Checking configuration and policies"):
        preflight(settings, supervisor_running(settings))  # before anything is rendered, migrated or restarted
    runtime = prepare(settings, say)
    with private_umask():  # supervisord opens its log before it applies its own umask setting
        _start_services(settings, runtime, say)
    with _timed(say, "Waiting for every part to answer its health check"):
        deadline = time.monotonic() + wait
        while True:
            health = check_health(settings, runtime)
            if all(h.ok for h in health):
                break
            if time.monotonic() > deadline:
                bad = ", ".join(f"{h.name} ({h.detail})" for h in health if not h.ok)
                raise StackError(f"not healthy after {wait:.0f}s: {bad}. Logs: {settings.log_dir}")
            time.sleep(0.5)
    return runtime


def down(settings: Settings, say: Say = print) -> None:
    if not supervisor_running(settings):
        say("nothing running")
        return
    supervisorctl(settings, "shutdown")
    deadline = time.monotonic() + 30
    while supervisor_running(settings) and time.monotonic() < deadline:
        time.sleep(0.2)
    say("stopped")


def purge_instance(settings: Settings, runtime: AsteriskRuntime) -> None:
    """Remove an instance's files inside the Asterisk runtime, every node's (used by the test harness)."""
    for node in node_runtimes(settings, runtime).values():
        shutil.rmtree(node.host_instance_dir, ignore_errors=True)
    if settings.clustered:
        kamailio.remove_run_dir(settings)  # outside var/ (core.kamailio): Kamailio's own, per instance




@contextmanager
def throwaway_stack(overrides: dict[str, str], prefix: str, say: Say = print) -> Iterator[tuple[Settings, AsteriskRuntime]]:
    """A whole platform in a temporary folder on free ports (tests, benchmarks); removed afterwards."""
    from core.settings import load_settings

    var = Path(tempfile.mkdtemp(prefix=prefix))
    env = {**free_port_block(), **overrides, "HOTLINE_VAR": str(var)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    settings = load_settings()
    runtime = None
    try:
        runtime = up(settings, say=say)
        yield settings, runtime
    finally:
        down(settings, say=lambda _line: None)
        if runtime is not None:
            purge_instance(settings, runtime)
        if os.environ.get("HOTLINE_KEEP_VAR") != "1":  # keep logs and database to debug a failure
            shutil.rmtree(var, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
