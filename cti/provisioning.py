"""Applying the database's phones and queues to every Asterisk node without a restart (the CTI's side).

Rendered files plus targeted reloads (README, "Phones and queues from the database"): each node's files
are rendered from ``core.provisioning.load`` and then, over that node's AMI with the ``provision``
account (write class ``config``, the least Asterisk's Reload accepts; it reads no events):

* ``Reload res_pjsip.so``: sorcery re-reads pjsip.conf. Calls in progress keep their channels, phones
  that did not change stay registered (contacts live in astdb), a new phone may register at once and a
  removed (disabled) one is refused.
* ``Reload pbx_config.so``: the dialplan with each queue's longest wait and the phones' hints.
* ``QueueReload Parameters=yes``: app_queue's ``queue reload parameters``; callers keep their place,
  dynamic members (the agents the CTI added with QueueAdd) stay, and a new queue is created.
"""

from __future__ import annotations

import asyncio
from typing import Any

from core import provisioning
from core.ami import AmiClient, AmiError, first_response
from core.asterisk_config import render_asterisk_config
from core.asterisk_runtime import resolve_runtime
from core.db import Database
from core.settings import AsteriskNode, Settings

RELOADS: tuple[dict[str, str], ...] = (
    {"Action": "Reload", "Module": "res_pjsip.so"},
    {"Action": "Reload", "Module": "pbx_config.so"},
    {"Action": "QueueReload", "Parameters": "yes", "Members": "no", "Rules": "no"},
)
# One change at a time: two admins saving at once must not interleave renders and reloads.
_applying = asyncio.Lock()


async def _reload_node(settings: Settings, node: AsteriskNode) -> None:
    client = AmiClient(settings, "provision", events="off", node=node)
    await client.connect(timeout=5)
    try:
        for action in RELOADS:
            reply = first_response(await client.action(action, timeout=15))
            if reply.get("Response") != "Success":
                raise AmiError(f"节点 {node.name} 未能重新加载配置（{action.get('Module') or action['Action']}："
                               f"{reply.get('Message') or '无说明'}），请查看 Asterisk 日志")
    finally:
        await client.close()


async def apply(settings: Settings, db: Database, log) -> dict[str, Any]:
    """Render and reload every node; returns the nodes applied. A node that fails stops the run with its
    name (the nodes before it already carry the change; applying again is harmless)."""
    async with _applying:
        telephony = await provisioning.load(db)
        runtime = await asyncio.to_thread(resolve_runtime, settings)
        for node in settings.nodes:
            await asyncio.to_thread(render_asterisk_config, settings, runtime, node, telephony)
            await _reload_node(settings, node)
            log.info("telephony_applied", node=node.name, phones=len(telephony.phones),
                     queues=len(telephony.queues))
        return {"nodes": [node.name for node in settings.nodes]}
