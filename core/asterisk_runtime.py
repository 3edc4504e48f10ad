"""Where Asterisk runs: the host's own (20+) or a Debian-sid chroot built once per machine.

Each platform instance keeps its Asterisk files in its own folder inside the
runtime (``/srv/hotline/<instance>``), so a demo stack and a test stack can run
side by side on one machine without touching ``/etc/asterisk``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings

SID_MIRROR = "http://deb.debian.org/debian"
ASTERISK_PACKAGES = ["asterisk", "asterisk-core-sounds-en-wav", "asterisk-moh-opsound-wav", "tzdata"]
APT_NO_EXPIRY = ["-o", "Acquire::Check-Valid-Until=false"]


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
    mode = settings["asterisk"]["mode"]
    version = host_asterisk_version()
    if mode == "host" or (mode == "auto" and version and version[0] >= 20):
        if not version:
            raise RuntimeError_("asterisk.mode = host, but no asterisk binary is installed")
        return AsteriskRuntime(Path("/"), settings.instance_id)
    root = Path(settings["asterisk"]["chroot_cache"])
    if not (root / ".hotline-ready").exists():
        if not build:
            raise RuntimeError_(f"no Asterisk runtime at {root}: run ./hotline up to build it")
        build_chroot(root, settings.log_dir / "asterisk-build.log", say=say)
    return AsteriskRuntime(root, settings.instance_id)
