"""Where Asterisk runs: the host's own (20+) or a Debian-sid chroot built once per machine.

Each platform instance keeps its Asterisk files in its own folder inside the
runtime (``/srv/hotline/<instance>``), so a demo stack and a test stack can run
side by side on one machine without touching ``/etc/asterisk``.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from core.settings import AsteriskNode, Settings

SID_MIRROR = "http://deb.debian.org/debian"
ASTERISK_PACKAGES = ["asterisk", "asterisk-core-sounds-en-wav", "asterisk-moh-opsound-wav", "tzdata"]
APT_NO_EXPIRY = ["-o", "Acquire::Check-Valid-Until=false"]
# The chroot's asterisk user and group get an id no host account or group has (Debian's package would take
# the next free system id, 101, which is the host's postgres: the host's PostgreSQL account then owned
# Asterisk's config with the AMI secrets). The same id on every rebuild: the first free one from here.
ASTERISK_ID_BASE = 64301
ASTERISK_ID_LAST = 64999


class RuntimeError_(RuntimeError):
    """Building or finding the Asterisk runtime failed; the message names the step."""


@dataclass(frozen=True)
class AsteriskRuntime:
    """Paths and commands of one Asterisk installation (chroot root or '/')."""

    root: Path
    instance_id: str

    @property
    def is_chroot(self) -> bool:
        return self.root != Path("/")

    # Paths as Asterisk sees them ------------------------------------------
    @property
    def instance_dir(self) -> str:
        return f"/srv/hotline/{self.instance_id}"

    def inside(self, *parts: str) -> str:
        return "/".join([self.instance_dir, *parts])

    # The same paths seen from the host -----------------------------------
    def host_path(self, asterisk_path: str) -> Path:
        return self.root / asterisk_path.lstrip("/")

    @property
    def host_instance_dir(self) -> Path:
        return self.host_path(self.instance_dir)

    @property
    def asterisk_uid(self) -> int | None:
        """The uid Asterisk runs as (``-U asterisk``, resolved in the runtime's own passwd)."""
        return next((uid for uid, name in _ids_in(self.root / "etc/passwd").items() if name == "asterisk"), None)

    def command(self, *args: str) -> list[str]:
        base = ["chroot", str(self.root)] if self.is_chroot else []
        return [*base, "asterisk", *args]

    def foreground_command(self) -> list[str]:
        return self.command("-f", "-U", "asterisk", "-G", "asterisk", "-C", self.inside("etc", "asterisk.conf"))

    def rx(self, cli: str, timeout: float = 10) -> str:
        """Run one Asterisk CLI command against this instance."""
        proc = subprocess.run(
            self.command("-C", self.inside("etc", "asterisk.conf"), "-rx", cli),
            capture_output=True, text=True, timeout=timeout,
        )
        return proc.stdout

    def asterisk_ids(self) -> tuple[int, int]:
        """uid and gid of the runtime's asterisk user (they differ between chroot and host)."""
        uid = gid = None
        for line in self.host_path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == "asterisk":
                uid, gid = int(fields[2]), int(fields[3])
        if uid is None:
            raise RuntimeError_(f"no asterisk user in {self.host_path('/etc/passwd')}")
        return uid, gid


def node_runtime(runtime: AsteriskRuntime, node: AsteriskNode) -> AsteriskRuntime:
    """The runtime of one node (``runtime`` as resolve_runtime gives it): its own instance folder, so its
    own config, spool, CDR, queue_log and control socket. The first node keeps the single-node folder."""
    return runtime if node.first else replace(runtime, instance_id=f"{runtime.instance_id}-{node.name}")


def node_runtimes(settings: Settings, runtime: AsteriskRuntime) -> dict[str, AsteriskRuntime]:
    """Every configured node's runtime by node name, the first node first."""
    return {node.name: node_runtime(runtime, node) for node in settings.nodes}


def _ids_in(passwd_or_group: Path) -> dict[int, str]:
    ids: dict[int, str] = {}
    if passwd_or_group.exists():
        for line in passwd_or_group.read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 3 and fields[2].isdigit():
                ids[int(fields[2])] = fields[0]
    return ids


def choose_asterisk_id(root: Path, host: Path = Path("/")) -> int:
    """One id, free as a uid and a gid both on the host and in the chroot (except the asterisk entries)."""
    taken = {*_ids_in(host / "etc/passwd"), *_ids_in(host / "etc/group")}
    taken |= {i for i, name in _ids_in(root / "etc/passwd").items() if name != "asterisk"}
    taken |= {i for i, name in _ids_in(root / "etc/group").items() if name != "asterisk"}
    for candidate in range(ASTERISK_ID_BASE, ASTERISK_ID_LAST + 1):
        if candidate not in taken:
            return candidate
    raise RuntimeError_(f"no free uid/gid between {ASTERISK_ID_BASE} and {ASTERISK_ID_LAST} for asterisk")


def asterisk_id_collides(root: Path, host: Path = Path("/")) -> tuple[int, int] | None:
    """(uid, gid) of the chroot's asterisk user if either is also used on the host; None if all is well."""
    users, groups = _ids_in(root / "etc/passwd"), _ids_in(root / "etc/group")
    uid = next((i for i, name in users.items() if name == "asterisk"), None)
    gid = next((i for i, name in groups.items() if name == "asterisk"), None)
    if uid is None or gid is None:
        return None
    host_ids = {*_ids_in(host / "etc/passwd"), *_ids_in(host / "etc/group")}
    return (uid, gid) if uid in host_ids or gid in host_ids else None


def processes_in(root: Path) -> list[int]:
    """Processes whose root directory is ``root`` (an Asterisk of this runtime, or its ``asterisk -rx``)."""
    found = []
    target = root.resolve()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "root")).resolve() == target:
                    found.append(int(proc.name))
            except OSError:
                continue  # gone meanwhile, or not ours to read
    return found


def _set_id(path: Path, name: str, new: int) -> None:
    lines = []
    for line in path.read_text().splitlines(keepends=True):
        fields = line.split(":")
        if fields[0] == name and len(fields) > 3:
            fields[2] = str(new)
            if path.name == "passwd":
                fields[3] = str(new)
            line = ":".join(fields)
        lines.append(line)
    tmp = path.with_name(path.name + ".hotline-tmp")
    tmp.write_text("".join(lines))
    os.chmod(tmp, path.stat().st_mode & 0o7777)
    tmp.replace(path)


def fix_asterisk_ids(root: Path, say=print, host: Path = Path("/")) -> bool:
    """Move a cached chroot's asterisk user off an id the host uses (e.g. its postgres), chowning every file
    that user or group owns. Idempotent; skipped with a warning while any process runs in that runtime,
    because a running Asterisk keeps its old uid and would lose access to its own files.
    Returns True if the ids were changed."""
    if asterisk_id_collides(root, host) is None:
        return False
    # Two `up`s at once (a demo and a test stack): one moves the ids, the other then finds nothing to do.
    with (root / ".hotline-ids.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fix_asterisk_ids_locked(root, say, host)


def _fix_asterisk_ids_locked(root: Path, say, host: Path) -> bool:
    collision = asterisk_id_collides(root, host)
    if collision is None:
        return False
    running = processes_in(root)
    if running:
        say(f"  WARNING: the asterisk user of {root} has uid/gid {collision}, also used on this host; not changed "
            f"while {len(running)} process(es) run in that runtime (pids {running[:5]}). Stop every stack "
            "that uses it and run ./hotline up again.")
        return False
    old_uid, old_gid = collision
    new = choose_asterisk_id(root, host)
    for path in (root / "etc/passwd", root / "etc/group"):
        _set_id(path, "asterisk", new)
    root_dev = root.stat().st_dev
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(folder, d)).st_dev == root_dev]  # never a mount
        for name in (*dirs, *files, "."):
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if st.st_uid == old_uid or st.st_gid == old_gid:
                os.lchown(path, new if st.st_uid == old_uid else -1, new if st.st_gid == old_gid else -1)
                if not os.path.islink(path) and st.st_mode & 0o6000:
                    os.chmod(path, st.st_mode & 0o7777)  # chown clears set-id bits: keep the package's modes
    say(f"  asterisk user of {root} moved from uid {old_uid}/gid {old_gid} to {new}/{new} (not used on this host)")
    return True


def host_asterisk_version() -> tuple[int, ...] | None:
    exe = shutil.which("asterisk")
    if not exe:
        return None
    out = subprocess.run([exe, "-V"], capture_output=True, text=True).stdout
    match = re.search(r"Asterisk (\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else None


def _run(step: str, cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError_(f"{step} failed (exit {proc.returncode}); see {log} for the output")


def build_chroot(root: Path, log: Path, say=print) -> None:
    """debootstrap Debian sid into ``root`` and install Asterisk 22 there (about a minute)."""
    ready = root / ".hotline-ready"
    if ready.exists():
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    say(f"  building the Asterisk runtime in {root} (debootstrap sid, ~1 min; log: {log})")
    _run("debootstrap of Debian sid", ["debootstrap", "--variant=minbase", "sid", str(partial), SID_MIRROR], log)
    say(f"  base system ready after {time.monotonic() - t0:.0f}s; installing Asterisk")
    _run("apt-get update in the chroot", ["chroot", str(partial), "apt-get", *APT_NO_EXPIRY, "update"], log)
    # Created before the package, which then keeps it (adduser --system reuses an existing system user).
    asterisk_id = str(choose_asterisk_id(partial))
    _run("creating the asterisk group", ["chroot", str(partial), "groupadd", "--system", "--gid", asterisk_id,
                                         "asterisk"], log)
    _run("creating the asterisk user", ["chroot", str(partial), "useradd", "--system", "--uid", asterisk_id,
                                        "--gid", asterisk_id, "--home-dir", "/var/lib/asterisk", "--no-create-home",
                                        "--shell", "/usr/sbin/nologin", "--comment", "Asterisk PBX daemon",
                                        "asterisk"], log)
    _run(
        "installing Asterisk in the chroot",
        ["chroot", str(partial), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", *APT_NO_EXPIRY,
         "install", "-y", "--no-install-recommends", *ASTERISK_PACKAGES],
        log,
    )
    (partial / ".hotline-ready").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    if root.exists():
        shutil.rmtree(root)
    partial.rename(root)
    say(f"  Asterisk runtime built in {time.monotonic() - t0:.0f}s")


def resolve_runtime(settings: Settings, build: bool = False, say=print) -> AsteriskRuntime:
    """Pick the host's Asterisk 20+ or the cached chroot (building it if asked)."""
    mode = settings.asterisk.mode
    version = host_asterisk_version()
    if mode == "host" or (mode == "auto" and version and version[0] >= 20):
        if not version:
            raise RuntimeError_("asterisk.mode = host, but no asterisk binary is installed")
        return AsteriskRuntime(Path("/"), settings.instance_id)
    root = Path(settings.asterisk.chroot_cache)
    if not (root / ".hotline-ready").exists():
        if not build:
            raise RuntimeError_(f"no Asterisk runtime at {root}: run ./hotline up to build it")
        build_chroot(root, settings.log_dir / "asterisk-build.log", say=say)
    if build:  # ./hotline up: a chroot built before uids were chosen is moved off the host's ids
        fix_asterisk_ids(root, say=say)
    return AsteriskRuntime(root, settings.instance_id)
