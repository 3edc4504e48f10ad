"""Classic per-call AGI (ivr/classic_agi.py, pyst2) as a capacity comparison point.

Asterisk starts a new process for every call and talks AGI over its stdin and
stdout. With the Debian-sid chroot runtime that process runs inside the
chroot, so the benchmark gives the chroot an interpreter of its own, a virtual
environment with the project's pinned runtime dependencies (once per machine,
kept in the chroot cache) and, for each run, a copy of the code, the
configuration and the stack's secrets and database. Two small wrappers named
like the FastAGI scripts (``ivr``, ``queue-timeout``) let the dialplan's
``AGI(${AGI_URL}/ivr)`` run them when the global AGI_URL points at their folder.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib

from core.asterisk_runtime import APT_NO_EXPIRY, AsteriskRuntime
from core.settings import REPO_ROOT, Settings

CLASSIC_DIR = "/opt/hotline-classic"   # inside the runtime
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
WRAPPER = """#!/bin/sh
# Classic AGI for the benchmark: one Python process per call (stdin/stdout AGI).
cd {src} && exec {python} -m ivr.classic_agi {script}
"""


def _python(runtime: AsteriskRuntime) -> str:
    return f"{CLASSIC_DIR}/venv/bin/python" if runtime.is_chroot else str(REPO_ROOT / ".venv" / "bin" / "python")


def _in_runtime(runtime: AsteriskRuntime, *cmd: str) -> None:
    base = ["chroot", str(runtime.root)] if runtime.is_chroot else []
    proc = subprocess.run([*base, *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}… failed in the Asterisk runtime:\n{proc.stdout[-1500:]}"
                           f"{proc.stderr[-1500:]}")


def _ensure_interpreter(runtime: AsteriskRuntime, say) -> None:
    if not runtime.is_chroot or runtime.host_path(f"{CLASSIC_DIR}/venv/.ready").exists():
        return
    say("  classic AGI: installing Python and the project's dependencies in the Asterisk runtime (once)")
    _in_runtime(runtime, "apt-get", *APT_NO_EXPIRY, "update")
    _in_runtime(runtime, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", *APT_NO_EXPIRY, "install", "-y",
                "--no-install-recommends", "python3", "python3-venv", "ca-certificates")
    resolv = runtime.host_path("/etc/resolv.conf")
    if not resolv.exists() or not resolv.read_text().strip():
        shutil.copy("/etc/resolv.conf", resolv)
    _in_runtime(runtime, "python3", "-m", "venv", f"{CLASSIC_DIR}/venv")
    pins = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # The host's certificate bundle: the same trust (and any egress proxy's CA) as the host's pip.
    shutil.copy(HOST_CA_BUNDLE, runtime.host_path(f"{CLASSIC_DIR}/host-ca.crt"))
    _in_runtime(runtime, "env", f"SSL_CERT_FILE={CLASSIC_DIR}/host-ca.crt", f"{CLASSIC_DIR}/venv/bin/pip",
                "install", "--quiet", "--cert", f"{CLASSIC_DIR}/host-ca.crt", *pins)
    runtime.host_path(f"{CLASSIC_DIR}/venv/.ready").write_text("ok\n")


def prepare(settings: Settings, runtime: AsteriskRuntime, say=print) -> str:
    """Make classic AGI runnable for this stack; returns the value for the dialplan's AGI_URL."""
    _ensure_interpreter(runtime, say)
    uid, gid = runtime.asterisk_ids()
    agi_dir = runtime.host_path(f"{CLASSIC_DIR}/agi")
    agi_dir.mkdir(parents=True, exist_ok=True)
    if runtime.is_chroot:
        src = runtime.host_path(f"{CLASSIC_DIR}/src")
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(
            ".venv", "var", ".git", "__pycache__", "*.png", "node_modules", "results.*"))
        # The stack's folder at the same path inside the runtime: secrets and a copy of the database
        # (the IVR only reads tickets), owned by the asterisk user that runs the AGI process.
        var = runtime.host_path(str(settings.var_dir))
        (var / "log").mkdir(parents=True, exist_ok=True)
        for name in ("secrets.toml", "hotline.db"):
            if (settings.var_dir / name).exists():
                shutil.copy2(settings.var_dir / name, var / name)
        for path in [var, *var.rglob("*")]:
            shutil.chown(path, uid, gid)
        source = f"{CLASSIC_DIR}/src"
    else:
        source = str(REPO_ROOT)
    for script in ("ivr", "queue-timeout"):
        wrapper = agi_dir / script
        wrapper.write_text(WRAPPER.format(src=source, python=_python(runtime), script=script))
        wrapper.chmod(0o755)
    return f"{CLASSIC_DIR}/agi"


def cleanup(settings: Settings, runtime: AsteriskRuntime) -> None:
    if runtime.is_chroot:
        shutil.rmtree(runtime.host_path(str(settings.var_dir)), ignore_errors=True)

