"""Kamailio, the SIP front door of cluster mode ([cluster] nodes > 0; kamailio/kamailio.cfg).

Rendered into its own run folder with the dispatcher's list of Asterisk nodes, run by the platform's
supervisor like every other part but as the ``kamailio`` user of Debian's package (``-u``/``-g``: a SIP server
facing the carrier and the phones holds no root), asked over its control socket (``kamcmd``, as root) for
its health and for the dispatcher's view of each node.

The run folder is ``/run/kamailio/hotline-<instance>`` (Debian's own run folder of Kamailio, one per
platform instance), owned by ``kamailio``: the instance's ``var/`` is for root only, and Kamailio, once it has
dropped root, still writes its control socket and pid file and reads the dispatcher list again on
``dispatcher.reload``. The rendered kamailio.cfg holds the database password: the folder is 0750, the
files 0640, for root and the kamailio group only.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jinja2
from sqlalchemy.engine import make_url

from core.provisioning import SIP_REALM
from core.settings import REPO_ROOT, AsteriskNode, Settings

CONF_DIR = REPO_ROOT / "kamailio"
KAMAILIO = "/usr/sbin/kamailio"
KAMCMD = "/usr/sbin/kamcmd"
# Debian 12 packages the cluster mode needs (the `./hotline` wrapper installs them when it is configured).
DEBIAN_PACKAGES = ("kamailio", "kamailio-postgres-modules")
DISPATCHER_SET = 1
USER = "kamailio"  # Debian's package creates it (and /run/kamailio)
RUN_ROOT = Path("/run/kamailio")
_DESTINATION = re.compile(r"URI:\s*(\S+)\s+FLAGS:\s*(\S+)")


def run_dir(settings: Settings) -> Path:
    return RUN_ROOT / f"hotline-{settings.instance_id}"


def account() -> tuple[int, int]:
    """uid and gid Kamailio runs as; a clear message when the package's user is missing."""
    try:
        return pwd.getpwnam(USER).pw_uid, grp.getgrnam(USER).gr_gid
    except KeyError:
        raise RuntimeError(f"系统用户 {USER} 不存在：请以 root 重新安装 Debian 软件包 kamailio") from None


def _owned(path: Path, mode: int, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def ctl_socket(settings: Settings) -> Path:
    return run_dir(settings) / "ctl.sock"


def node_uri(node: AsteriskNode) -> str:
    """The node as the dispatcher names it (its SIP address)."""
    return f"sip:{node.address}:{node.sip_port}"


def dispatcher_list(settings: Settings) -> str:
    """One line per Asterisk node: set, URI, flags, priority, attributes (the socket it is reached from)."""
    socket = f"udp:{settings.cluster.proxy_address}:{settings.sip.port}"
    return "".join(f"{DISPATCHER_SET} {node_uri(node)} 0 0 duid={node.name};socket={socket}\n"
                   for node in settings.nodes)


def kamailio_db_url(url: str) -> str:
    """The platform's PostgreSQL URL as db_postgres reads it (postgres://user:password@host:port/db)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgres").render_as_string(hide_password=False)


def render_kamailio_config(settings: Settings) -> Path:
    """Write kamailio.cfg and the dispatcher list; returns the path of kamailio.cfg."""
    uid, gid = account()
    folder = run_dir(settings)
    if not RUN_ROOT.exists():  # /run is emptied at boot; the package's tmpfiles entry may not have run
        RUN_ROOT.mkdir(mode=0o755)
        _owned(RUN_ROOT, 0o755, uid, gid)
    folder.mkdir(exist_ok=True)
    _owned(folder, 0o750, uid, gid)  # its socket and pid file, written after it dropped root
    cluster, sip = settings.cluster, settings.sip
    (folder / "dispatcher.list").write_text(dispatcher_list(settings))
    _owned(folder / "dispatcher.list", 0o640, 0, gid)  # read again as kamailio on dispatcher.reload
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(CONF_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    text = env.get_template("kamailio.cfg").render(
        sip_bind=sip.bind, sip_port=sip.port, carrier_address=sip.carrier_address,
        proxy_address=cluster.proxy_address, phone_proxy_address=cluster.phone_proxy_address,
        ping_seconds=cluster.ping_seconds, failover_ms=cluster.failover_ms,
        carrier_calls_per_second=cluster.carrier_calls_per_second, pike_requests=cluster.pike_requests,
        children=2, ctl_socket=ctl_socket(settings), dispatcher_list=folder / "dispatcher.list",
        sip_realm=SIP_REALM, db_url=kamailio_db_url(settings.database_url))
    cfg = folder / "kamailio.cfg"
    cfg.write_text(text)
    _owned(cfg, 0o640, 0, gid)  # it holds the database password: root and the kamailio group only
    return cfg


def remove_run_dir(settings: Settings) -> None:
    """The instance's run folder (a throwaway stack's, when it is removed)."""
    shutil.rmtree(run_dir(settings), ignore_errors=True)


def command(settings: Settings) -> list[str]:
    """Kamailio in the foreground for supervisord (-DD: no daemon, -E: log to stderr, its supervisor log)."""
    folder = run_dir(settings)
    return [KAMAILIO, "-DD", "-E", "-f", str(folder / "kamailio.cfg"), "-P", str(folder / "kamailio.pid"),
            "-Y", str(folder), "-u", USER, "-g", USER, "-m", "64", "-M", "8"]


def installed() -> bool:
    return Path(KAMAILIO).exists() and shutil.which(KAMCMD) is not None


def rpc(settings: Settings, *args: str, timeout: float = 5) -> str:
    """A Kamailio RPC command over its control socket (``kamcmd``); raises on failure."""
    proc = subprocess.run([KAMCMD, "-s", f"unix:{ctl_socket(settings)}", *args], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0 or proc.stdout.startswith("error:"):  # kamcmd exits 0 on an RPC error
        raise RuntimeError(f"kamcmd {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def registered_contacts(settings: Settings, extension: str) -> list[str]:
    """The contacts Kamailio's registrar holds for a phone (empty: not registered)."""
    try:
        out = rpc(settings, "ul.lookup", "location", f"s:{extension}")  # s: a string, not the number 8001
    except RuntimeError:  # "AOR not found"
        return []
    return re.findall(r"Address:\s*(\S+)", out)


@dataclass(frozen=True)
class Destination:
    uri: str
    flags: str  # dispatcher's: A(ctive) / I(nactive) / D(isabled) / T(rying), then P(robing) or X

    @property
    def up(self) -> bool:
        """The dispatcher sends new calls to it."""
        return self.flags.startswith("A")


def dispatcher_state(settings: Settings) -> dict[str, Destination]:
    """The dispatcher's view of each node, by node name."""
    found = {uri: Destination(uri, flags) for uri, flags in _DESTINATION.findall(rpc(settings, "dispatcher.list"))}
    return {node.name: found[node_uri(node)] for node in settings.nodes if node_uri(node) in found}


def health(settings: Settings) -> tuple[bool, str]:
    """Kamailio answers on its control socket; the detail says which nodes its dispatcher sends calls to."""
    try:
        state = dispatcher_state(settings)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc) or "not running"
    up = [name for name, destination in state.items() if destination.up]
    return True, f"{settings.sip.bind}:{settings.sip.port}, nodes up: {', '.join(up) or 'none'}"
