"""Render asterisk-conf/ and dialplans/ into an instance's etc folder inside the Asterisk runtime.

The files in the repository are plain Asterisk configuration; only values that
differ per installation (ports, addresses, generated secrets) are written as
``{{ placeholders }}`` and filled in here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jinja2

from core.ami import ami_username
from core.asterisk_runtime import AsteriskRuntime, node_runtime
from core.provisioning import SIP_REALM, Telephony, seed_telephony
from core.settings import AMI_ACCOUNTS, REPO_ROOT, AsteriskNode, Settings
from core.telephony import AMI_CHANNELVARS

CONF_DIR = REPO_ROOT / "asterisk-conf"
DIALPLAN_DIR = REPO_ROOT / "dialplans"
INSTANCE_DIRS = ("etc", "lib", "lib/keys", "spool/monitor", "spool/voicemail-in", "log/cdr-csv", "run", "sounds")


def ami_accounts(settings: Settings) -> list[dict[str, str]]:
    """The AMI users of asterisk-conf/manager.conf. An action needs one of its classes in ``write``
    (Asterisk's manager.c): QueueAdd/Remove/Pause are agent; Hangup, Redirect, Bridge, BlindTransfer, Atxfer,
    CancelAtxfer are call; Originate is originate; CoreShowChannels is reporting; QueueStatus, QueueReload and
    Ping none; Reload is config or system."""
    control = "call,agent,originate,reporting"
    accounts = [
        ("cti", settings.ami.cti_events, control,
         "CTI: follows calls (event classes it subscribes to), rebuilds agent states, dials callbacks, "
         "carries out the desk's commands (agent log-in/pause, transfers, hang-up, callbacks, listen)"),
        ("provision", "", "config",
         "CTI, applying an admin's change of phones or queues: Reload of res_pjsip, pbx_config and "
         "QueueReload (Reload needs config or system; no events, no call control)"),
        ("tools", "all", "system,call,agent,user,command,reporting,originate",
         "operator tools, tests and benchmarks (./hotline call, CLI commands in tests)"),
    ]
    assert {name for name, *_ in accounts} == set(AMI_ACCOUNTS)
    return [{"username": ami_username(settings, name), "secret": settings.secrets[f"ami_{name}"],
             "read": read, "write": write, "why": why} for name, read, write, why in accounts]


def template_values(settings: Settings, runtime: AsteriskRuntime, node: AsteriskNode | None = None,
                    telephony: Telephony | None = None) -> dict:
    """Values of one node's files (``runtime``: the platform's, as resolve_runtime gives it; ``telephony``:
    the phones and queues of the database, core.provisioning.load; without it, the seed of a new
    installation)."""
    sip, agi, queues = settings.sip, settings.agi, settings.queues
    node = node or settings.nodes[0]
    shared = runtime
    runtime = node_runtime(runtime, node)
    telephony = telephony or seed_telephony(settings)
    # A disabled phone leaves pjsip.conf: after the reload it can no longer register or be dialled.
    phones = [{"ext": phone.extension, "md5_cred": phone.md5_cred, "label": phone.label}
              for phone in telephony.phones if phone.enabled]
    return {
        "inst": runtime.instance_dir,
        # One prompt folder for every node: the IVR writes read-backs once, whichever node plays them.
        "prompts": shared.inside("sounds"),
        "node": node.name,
        "sip_bind": node.address,
        "sip_port": node.sip_port,
        "carrier_address": sip.carrier_address,
        "carrier_match": settings.cluster.proxy_address if settings.clustered else sip.carrier_address,
        "carrier_port": sip.carrier_port,
        "clustered": settings.clustered,
        # Cluster mode: the phones are reached through Kamailio's phone side (pjsip.conf); "" for one node.
        "phone_proxy": settings.cluster.phone_proxy_address if settings.clustered else "",
        "phone_proxy_port": sip.port,
        "rtp_start": node.rtp_start,
        "carrier_rtp_timeout": sip.carrier_rtp_timeout_seconds,
        "carrier_rtp_timeout_hold": sip.carrier_rtp_timeout_hold_seconds,
        "agent_rtp_timeout": sip.agent_rtp_timeout_seconds,
        "session_timers": sip.session_timers,
        "session_expires": sip.session_expires_seconds,
        "session_min_se": sip.session_min_se_seconds,
        "rtp_end": node.rtp_end,
        "phones": phones,
        "sip_realm": SIP_REALM,
        "ami_host": node.ami_host,
        "ami_port": node.ami_port,
        "ami_accounts": ami_accounts(settings),
        "channelvars": ",".join(AMI_CHANNELVARS),
        "agi_host": agi.host,
        "agi_port": agi.port,
        # Disabled queues stay in queues.conf, so callers already waiting in one are still served.
        "queues": [queue.public() for queue in telephony.queues],
        "queue_max_wait": queues.max_wait_seconds,
        "vm_max_seconds": settings.voicemail.max_seconds,
        "bench_echo": settings.asterisk.bench_echo,
        # The browser phones register on the first node only (one WebSocket target for the desk's proxy).
        "http_enabled": "yes" if node.first else "no",
        "http_bind": node.address,
        "http_port": settings.webphone.http_port,
        "ari_username": ari_username(settings),
        "ari_secret": settings.secrets["ari_desk"],
        "metrics_username": ASTERISK_METRICS_USER,
        "metrics_password": settings.secrets["asterisk_metrics"],
    }


# Prometheus's basic-auth user on Asterisk's /metrics (prometheus.conf).
ASTERISK_METRICS_USER = "hotline-metrics"


def ari_username(settings: Settings) -> str:
    """The desk's ARI user (asterisk-conf/ari.conf): it creates and deletes browser-phone endpoints."""
    return f"{settings.ami.username}-desk"


def render_asterisk_config(settings: Settings, runtime: AsteriskRuntime, node: AsteriskNode | None = None,
                           telephony: Telephony | None = None) -> Path:
    """Write one node's Asterisk files (``runtime``: the platform's); returns the host path of its etc folder.

    Each file is written next to its target and renamed over it, so an Asterisk reloading meanwhile (the
    CTI applying an admin's change to another node) reads the old file or the new one, never half of one."""
    runtime_of_node = node_runtime(runtime, node or settings.nodes[0])
    base = runtime_of_node.host_instance_dir
    uid, gid = runtime.asterisk_ids()
    for sub in INSTANCE_DIRS:
        (base / sub).mkdir(parents=True, exist_ok=True)
    # The folder of all instances is made under whatever umask the caller had (027 under the test stacks'
    # private umask): Asterisk, not root, must still pass through it to its own folder; nobody lists it.
    base.parent.chmod(0o711)
    etc = base / "etc"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(CONF_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    values = template_values(settings, runtime, node, telephony)
    for conf in sorted(CONF_DIR.glob("*.conf")):
        text = env.get_template(conf.name).render(values)
        target = etc / conf.name
        partial = target.with_name(f".{conf.name}.new")
        partial.write_text(text)
        # manager.conf, pjsip.conf, ari.conf and prometheus.conf carry secrets: readable by Asterisk only.
        partial.chmod(0o640)
        os.chown(partial, uid, gid)
        partial.replace(target)
    dialplans = etc / "dialplans"
    if dialplans.exists():
        shutil.rmtree(dialplans)
    shutil.copytree(DIALPLAN_DIR, dialplans)
    # Only folders Asterisk writes to, and its config: never walk a year of recordings.
    owned = {base, *(base / sub for sub in INSTANCE_DIRS), *(base / sub for sub in ("spool", "log"))}
    for path in [*owned, *etc.rglob("*")]:
        os.chown(path, uid, gid)
    return etc
