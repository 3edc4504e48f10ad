"""./hotline up | down | status | test | call | bench | unlock …"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from cli import stack
from cli.metrics import figure_lines, scrape_all
from core.asterisk_runtime import resolve_runtime
from core.settings import REPO_ROOT, ConfigError, load_settings


def _print_access(settings) -> None:
    from cli.demo import DEMO_USERS

    sip = settings.sip
    print()
    print(f"  Web desk:        {settings.web_url}/")
    from tickets.dispatch import demo_unit_users

    print(f"  Demo logins:     {', '.join(u.username for u in DEMO_USERS)}")
    print(f"  Handling units:  {', '.join(name for name, *_ in demo_unit_users())}")
    print(f"                   password for all demo logins: {settings.secrets['demo_password']}")
    print(f"  Admin:           admin / {settings.secrets['admin_password']}")
    print(f"  SIP server:      {sip.bind}:{sip.port} (UDP)" + (
        f", Kamailio in front of {', '.join(f'{n.name} {n.address}:{n.sip_port}' for n in settings.nodes)}"
        if settings.clustered else ""))
    for line in phone_lines(settings):
        print(f"    {line}")
    print("  Demo call:       ./hotline call 12301 --keys 2w1   (complaint, travel agency)")
    print(f"  Logs:            {settings.log_dir}/")


def phone_lines(settings) -> list[str]:
    """The phones as the database has them (core.provisioning): a seeded phone's password of var/secrets.toml
    only while it still works; one an admin re-generated or created says where its password was shown."""
    from core import provisioning
    from core.db import Database

    async def load() -> provisioning.Telephony:
        db = Database(settings.database_url)
        try:
            return await provisioning.load(db)
        finally:
            await db.close()

    try:
        phones = list(asyncio.run(load()).phones)
    except Exception:  # noqa: BLE001 - the database cannot be read: say what the configuration seeds
        phones = provisioning.seed_phones(settings)
    lines = []
    for phone in phones:
        seeded = settings.secrets.get(f"sip_{phone.extension}")
        if seeded and phone.md5_cred == provisioning.md5_cred(phone.extension, seeded):
            secret = f"password {seeded}"
        else:
            secret = "password changed by an admin (shown once; 系统管理 → 电话分机 → 重新生成密码)"
        lines.append(f"phone {phone.extension}:      user {phone.extension}  {secret}"
                     + ("" if phone.enabled else "  (disabled)"))
    return lines


def cmd_up(args) -> int:
    from cli.upgrade import SETTINGS_REFUSED

    if args.nodes is not None:  # cluster mode for this run, as [cluster] nodes (and for the services it starts)
        os.environ["HOTLINE_CLUSTER_NODES"] = str(args.nodes)
    try:
        settings = load_settings()
    except ConfigError as exc:  # before anything is touched: a running platform keeps taking calls
        raise ConfigError(f"{SETTINGS_REFUSED}：\n  {exc}") from exc
    t0 = time.monotonic()
    stack.up(settings)
    print(f"\nThe hotline platform is up ({time.monotonic() - t0:.0f}s).")
    _print_access(settings)
    return 0


def cmd_down(args) -> int:
    stack.down(load_settings())
    return 0


def cmd_status(args) -> int:
    settings = load_settings()
    running = stack.supervisor_running(settings)
    if running:
        print(stack.supervisorctl(settings, "status").stdout)
    else:
        print("supervisor: not running (start with ./hotline up)")
    runtime = resolve_runtime(settings)
    health = stack.check_health(settings, runtime)
    for h in health:
        print(f"  {'OK ' if h.ok else 'BAD'}  {h.name:<11} {h.detail}")
    from core.disk import disk_space

    disks = disk_space(settings)
    for disk in disks:
        print(f"  {'BAD' if disk.low else 'OK '}  {'disk':<11} {disk.detail}")
    for line in _live_figures(settings):
        print(f"       {line}")
    answered, scraped = scrape_all(settings)
    for endpoint, error in answered:
        print(f"  {'BAD' if error else 'OK '}  {'metrics':<11} {endpoint.name}: {endpoint.url}"
              + (f" ({error})" if error else ""))
    for line in figure_lines(scraped):
        print(f"       {line}")
    _print_access(settings)
    return 0 if running and all(h.ok for h in health) and not any(d.low for d in disks) else 1


def _live_figures(settings) -> list[str]:
    from core.metrics import live_summary
    from core.redis import connect

    async def run() -> list[str]:
        redis = connect(settings, "tools")
        try:
            return await live_summary(redis)
        except Exception:  # noqa: BLE001 - Redis down is already reported above
            return []
        finally:
            await redis.aclose()

    return asyncio.run(run())


def cmd_call(args) -> int:
    from cli.democall import place_call

    settings = load_settings()
    result = asyncio.run(place_call(settings, args.did, args.keys, args.caller, args.hold, args.speech))
    print(result)
    return 0


def cmd_install_model(args) -> int:
    from pathlib import Path

    from recordings.transcribe import install_model

    settings = load_settings()
    folder = install_model(Path(args.archive), settings.var_dir / "models")
    print(f"model installed in {folder}")
    print(f"set it in config/hotline.toml:  [transcription] model_path = \"{folder}\"")
    print(f"(or export HOTLINE_TRANSCRIPTION_MODEL_PATH={folder}) and run ./hotline up again")
    return 0


def cmd_recordings(args) -> int:
    from core.asterisk_runtime import node_runtimes, resolve_runtime
    from core.db import Database
    from core.logs import setup_logging
    from recordings.retention import integrity_report, purge, spool_report

    settings = load_settings()

    async def run() -> int:
        db = Database(settings.database_url)
        try:
            if args.action == "check":
                problems = await integrity_report(db, settings.recordings_dir)
                for row, issue in problems:
                    print(f"  {row.path}  call {row.call_id}: {issue}")
                left = []
                for runtime in node_runtimes(settings, resolve_runtime(settings)).values():  # each node's spool
                    left += await spool_report(db, runtime.host_path(runtime.inside("spool")),
                                               settings.recordings.spool_grace_seconds)
                for item, issue in left:
                    print(f"  {item.file.path}  call {item.file.call_id}: {issue}")
                print(f"{len(problems) + len(left)} problem(s)")
                return 1 if problems or left else 0
            log = setup_logging("retention")
            report = await purge(db, settings.recordings_dir, settings.recordings.retention_days,
                                 dry_run=args.dry_run, log=log)
            verb = "would delete" if report.dry_run else "deleted"
            print(f"{verb} {len(report.deleted)}; kept under legal hold {len(report.kept_legal_hold)}; "
                  f"kept for open tickets {len(report.kept_open_ticket)}")
            return 0
        finally:
            await db.close()

    return asyncio.run(run())


def cmd_hours(args) -> int:
    from core.hours import OVERRIDE_KEY, is_open
    from core.redis import connect_sync

    settings = load_settings()
    client = connect_sync(settings)
    if args.state == "auto":
        client.hdel(OVERRIDE_KEY, args.hotline)
    elif args.state in ("open", "closed"):
        client.hset(OVERRIDE_KEY, args.hotline, args.state)
    overrides = client.hgetall(OVERRIDE_KEY)
    print(f"calendar says: {'staffed' if is_open(settings) else 'after hours'}; overrides: {overrides or 'none'}")
    return 0


def cmd_unlock(args) -> int:
    """Lift a log-in lock of an account (or, with --address, of a source address); audited."""
    import getpass

    from agent_desk.login_guard import unlock
    from core.db import Database
    from core.redis import connect

    settings = load_settings()
    kind, subject = ("address", args.address) if args.address else ("account", args.username)
    if not subject:
        print("!! give a USERNAME or --address ADDRESS", file=sys.stderr)
        return 2

    async def run() -> bool:
        redis = connect(settings, "tools")
        db = Database(settings.database_url)
        try:
            return await unlock(redis, db, kind, subject, f"命令行 ({getpass.getuser()})", None)
        finally:
            await redis.aclose()
            await db.close()

    lifted = asyncio.run(run())
    print(f"{kind} {subject}: {'unlocked' if lifted else 'was not locked (its failure count is cleared)'}")
    return 0


def cmd_backup(args) -> int:
    from pathlib import Path

    from cli.backup import backup

    snapshot = backup(load_settings(), Path(args.dest), keep=args.keep)
    print(f"backup complete: {snapshot}")
    print("  SENSITIVE / 敏感: it holds the secrets and configuration (folders 0700, files 0600)")
    return 0


def cmd_restore(args) -> int:
    from pathlib import Path

    from cli.backup import config_differences, restore, verify

    settings = load_settings()
    if args.check:
        snapshot, manifest = verify(Path(args.src))
        print(f"backup intact / 备份完好: {snapshot} ({len(manifest['files'])} files)")
        return 0
    snapshot = restore(settings, Path(args.src))
    print(f"restored {snapshot} into {settings.var_dir}")
    differing = config_differences(settings)
    if differing:
        print(f"  configuration of the backup is in {settings.var_dir / 'config-from-backup'}; it differs from")
        print(f"  config/ in: {', '.join(differing)} (copy what you need, then ./hotline up)")
    else:
        print("  configuration identical to config/; start with ./hotline up")
    return 0


def whole_suite_options() -> list[str]:
    """pytest options for the whole suite: test files spread over HOTLINE_TEST_WORKERS sessions (default 2), each
    with its own throwaway platform on its own ports. Most of the suite's wall time is spent waiting on real calls
    (prompts, rings, outages held for 15 s), not on the CPU, so two sessions nearly halve it even on two cores.
    A file stays in one session: its tests share that session's platform in order."""
    workers = int(os.environ.get("HOTLINE_TEST_WORKERS", "2"))
    options = ["--durations=25"]
    if workers > 1:
        options += ["-n", str(workers), "--dist", "loadfile"]
    return options


def cmd_test(args) -> int:
    # The layering contracts ([tool.importlinter] in pyproject.toml) hold for every run, a subset of tests too.
    lint = subprocess.call([str(Path(sys.executable).with_name("lint-imports"))], cwd=REPO_ROOT)
    if lint != 0:
        print("!! import contracts broken (lint-imports, see above)", file=sys.stderr)
        return lint
    env = dict(os.environ)
    chosen = args.pytest_args or whole_suite_options()
    cmd = [sys.executable, "-m", "pytest", *chosen]
    return subprocess.call(cmd, cwd=REPO_ROOT, env=env)


def cmd_bench(args) -> int:
    return subprocess.call([sys.executable, "-m", "bench", *args.bench_args], cwd=REPO_ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hotline", description="12301/12365 hotline platform")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="install, configure and start everything")
    up.add_argument("--nodes", type=int, default=None,
                    help="cluster mode: Kamailio in front of N Asterisk nodes ([cluster] nodes; needs PostgreSQL)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything ./hotline up started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="each part and its health").set_defaults(func=cmd_status)
    call = sub.add_parser("call", help="place a demo citizen call through Asterisk")
    call.add_argument("did", choices=["12301", "12365"])
    call.add_argument("--keys", default="", help="DTMF the citizen presses (w = half-second pause)")
    call.add_argument("--caller", default="13800138000", help="the citizen's phone number")
    call.add_argument("--hold", type=int, default=60, help="seconds the citizen stays on the line")
    call.add_argument("--speech", default="demo-complaint", help="prompt the citizen says after the keys")
    call.set_defaults(func=cmd_call)
    model = sub.add_parser("install-model", help="verify and install vosk-model-small-cn-0.22 from its zip")
    model.add_argument("archive")
    model.set_defaults(func=cmd_install_model)
    rec = sub.add_parser("recordings", help="recordings retention: purge [--dry-run] | check")
    rec.add_argument("action", choices=["purge", "check"])
    rec.add_argument("--dry-run", action="store_true")
    rec.set_defaults(func=cmd_recordings)
    hours = sub.add_parser("hours", help="open or close the line now (open|closed), or follow the calendar (auto)")
    hours.add_argument("state", choices=["open", "closed", "auto", "show"])
    hours.add_argument("--hotline", default="*", help="12301, 12365 or * for both")
    hours.set_defaults(func=cmd_hours)
    unlock = sub.add_parser("unlock", help="lift the log-in lock of an account (or --address) after failed log-ins")
    unlock.add_argument("username", nargs="?", default="")
    unlock.add_argument("--address", default="", help="unlock a source address instead of an account")
    unlock.set_defaults(func=cmd_unlock)
    back = sub.add_parser("backup", help="consistent snapshot (database, recordings, evidence, secrets, config) into DEST")
    back.add_argument("dest")
    back.add_argument("--keep", type=int, default=None, help="snapshots to keep in DEST (default [backup] keep)")
    back.set_defaults(func=cmd_backup)
    rest = sub.add_parser("restore", help="verify a backup, then restore it into this fresh instance (HOTLINE_VAR)")
    rest.add_argument("src", help="a snapshot folder, or a backup DEST (its newest snapshot)")
    rest.add_argument("--check", action="store_true", help="only verify the backup against its manifest")
    rest.set_defaults(func=cmd_restore)
    test = sub.add_parser("test", help="install test dependencies and run the whole suite")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    test.set_defaults(func=cmd_test)
    bench = sub.add_parser("bench", help="run the benchmarks and print the results table")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("test", "bench"):
        # Everything after the command belongs to pytest / the bench runner, untouched and in order.
        rest = argparse.Namespace(pytest_args=argv[1:], bench_args=argv[1:])
        return cmd_test(rest) if argv[0] == "test" else cmd_bench(rest)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, stack.StackError, RuntimeError) as exc:  # BackupError is a RuntimeError
        print(f"!! {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
