"""Kannel, the SMS gateway the platform runs (Debian ``kannel``, ``kannel-extras``), and the scheduler program.

``bearerbox`` holds the connection to the SMSC and Kannel's own message store; ``smsbox`` serves the HTTP
``sendsms`` interface on loopback that :mod:`tickets.outbox` calls. With ``[notify] fake_handset`` the SMSC
is Kannel's ``fake`` type and its test client ``fakesmsc`` plays the handset: every SMS it receives is a
line ``Got message N: <from to ucs-2 text>`` in ``var/log/sms_handset.log`` (:func:`handset_messages`).
A real SMSC (SMPP, CIMD, a modem ...) replaces the ``group = smsc`` block: see README "Notifications".
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from urllib.parse import unquote_to_bytes

from core.settings import Settings

BEARERBOX = "/usr/sbin/bearerbox"
SMSBOX = "/usr/sbin/smsbox"
FAKESMSC = "/usr/lib/kannel/test/fakesmsc"
HANDSET_LOG = "sms_handset.log"
# "from to ucs-2 text", or for a part of a long message "from to udh <header> data <bytes>".
GOT = re.compile(r"Got message \d+: <(\S+) (\S+) (\S+) (\S*)(?: (\S+) (\S*))?>")


def conf_path(settings: Settings) -> Path:
    return settings.run_dir / "kannel.conf"


def kannel_conf(settings: Settings) -> str:
    cfg = settings.notify
    password = cfg.kannel_password or settings.secrets.get("kannel_password", "")
    store = settings.var_dir / "kannel"
    store.mkdir(parents=True, exist_ok=True)
    smsc = ["group = smsc", "smsc = fake", "smsc-id = handset", f"port = {cfg.kannel_smsc_port}",
            "our-host = 127.0.0.1", "connect-allow-ip = 127.0.0.1"]
    return "\n".join([
        "group = core",
        f"admin-port = {cfg.kannel_admin_port}",
        "admin-interface = 127.0.0.1",
        f"admin-password = {password}",
        f"smsbox-port = {cfg.kannel_smsbox_port}",
        "smsbox-interface = 127.0.0.1",
        "box-allow-ip = 127.0.0.1",
        "log-level = 1",
        # Accepted messages survive a restart of Kannel: the gateway keeps them until the SMSC takes them.
        "store-type = spool",
        f"store-location = {store}",
        "",
        *smsc,
        "",
        "group = smsbox",
        "bearerbox-host = 127.0.0.1",
        f"bearerbox-port = {cfg.kannel_smsbox_port}",
        f"sendsms-port = {cfg.kannel_sendsms_port}",
        "sendsms-interface = 127.0.0.1",
        "log-level = 1",
        "",
        "group = sendsms-user",
        f"username = {cfg.kannel_username}",
        f"password = {password}",
        "user-allow-ip = 127.0.0.1",
        "max-messages = 10",
        "concatenation = true",
        "",
    ])


def write_kannel_conf(settings: Settings) -> None:
    """var/run/kannel.conf, mode 600 (it holds the sendsms password)."""
    if not settings.notify.kannel_run:
        return
    path = conf_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(kannel_conf(settings))
    path.with_suffix(".tmp").replace(path)


def notify_programs(settings: Settings) -> dict[str, str]:
    """Supervisor programs: the scheduler, and Kannel with its fake handset when configured."""
    programs = {"scheduler": f"{sys.executable} -m tickets.scheduler"}
    cfg = settings.notify
    if cfg.kannel_run:
        conf = shlex.quote(str(conf_path(settings)))
        programs["kannel_bearerbox"] = f"{BEARERBOX} {conf}"
        programs["kannel_smsbox"] = f"{SMSBOX} {conf}"
        if cfg.fake_handset:
            # fakesmsc reads messages to send from stdin and ends at EOF: an endless empty stdin keeps it up.
            programs["sms_handset"] = ("/bin/sh -c " + shlex.quote(
                f"tail -f /dev/null | exec {FAKESMSC} -H 127.0.0.1 -r {int(cfg.kannel_smsc_port)}"))
    return programs


def decode_text(coding: str, raw: str) -> str:
    data = unquote_to_bytes(raw.replace("+", "%20"))
    return data.decode("utf-16-be") if coding in ("ucs-2", "udh") else data.decode("latin-1")


def _concat_part(udh_raw: str) -> tuple[int, int, int] | None:
    """(reference, parts, this part) from a concatenated SMS's user data header (IE 0x00 or 0x08)."""
    udh = unquote_to_bytes(udh_raw.replace("+", "%20"))
    i = 1
    while i + 1 < len(udh):
        ie, size = udh[i], udh[i + 1]
        body = udh[i + 2:i + 2 + size]
        if ie == 0x00 and size == 3:
            return body[0], body[1], body[2]
        if ie == 0x08 and size == 4:
            return (body[0] << 8) | body[1], body[2], body[3]
        i += 2 + size
    return None


def handset_messages(log_text: str) -> list[tuple[str, str]]:
    """(recipient, text) of every SMS the fake handset received, in order; long ones joined from their parts."""
    result: list[tuple[str, str]] = []
    parts: dict[tuple[str, int], dict[int, str]] = {}
    for m in GOT.finditer(log_text):
        to, coding = m.group(2), m.group(3)
        if coding != "udh" or m.group(6) is None:
            result.append((to, decode_text(coding, m.group(4))))
            continue
        info = _concat_part(m.group(4))
        text = decode_text(coding, m.group(6))
        if info is None:
            result.append((to, text))
            continue
        ref, total, seq = info
        got = parts.setdefault((to, ref), {})
        got[seq] = text
        if len(got) == total:
            result.append((to, "".join(got[k] for k in sorted(got))))
            del parts[(to, ref)]
    return result
