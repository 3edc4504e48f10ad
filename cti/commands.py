"""The CTI's side of the command channel (cti.protocol): read commands, run them, answer.

Commands come from the desk (agent log-in/pause/ready/logout, call control, callbacks from the inbox,
the team lead's listen/whisper/barge, the wallboard's queue callers). Each runs in its own task so a
slow one (an attended transfer looks for its consultation leg for 3 s) holds up nobody else; one
agent's commands run one after the other (cti.control.agent_commands).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from redis.exceptions import ResponseError

from core.ami import AmiError, AmiNodes
from core.db import Database
from core.models import User
from core.provisioning import enabled_extensions
from core.settings import Settings
from cti import callbacks, control, provisioning
from cti.protocol import (
    BROWSER_PHONE_PREFIX,
    COMMANDS,
    GROUP,
    MARK_TTL_SECONDS,
    Refused,
    Reply,
    mark_key,
    reply_key,
)
from tickets import clock

REPLY_TTL_SECONDS = 60
READ_BLOCK_MS = 2000


class CommandWorker:
    def __init__(self, redis, ami: AmiNodes, db: Database, settings: Settings, log) -> None:
        self.redis = redis
        self.ami = ami
        self.db = db
        self.settings = settings
        self.log = log
        self.consumer = f"{socket.gethostname()}-{id(self):x}"
        self._running: set[asyncio.Task] = set()
        self.task: asyncio.Task | None = None

    def start(self) -> asyncio.Task:
        self.task = asyncio.create_task(self.run(), name="cti-commands")
        return self.task

    def problem(self) -> str | None:
        if self.task is not None and self.task.done():
            return "CTI 命令处理已停止"
        return None

    async def _ensure_group(self) -> None:
        try:
            # "$": commands sent before the CTI ever ran were answered as unavailable by their sender.
            await self.redis.xgroup_create(COMMANDS, GROUP, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        grouped = False
        while True:
            try:
                if not grouped:
                    await self._ensure_group()
                    grouped = True
                batches = await self.redis.xreadgroup(GROUP, self.consumer, {COMMANDS: ">"}, count=50,
                                                      block=READ_BLOCK_MS)
            except Exception as exc:  # noqa: BLE001 - Redis away (or lost the group): senders time out meanwhile
                self.log.warning("commands_read_failed", error=str(exc))
                grouped = False
                await asyncio.sleep(1)
                continue
            for _stream, entries in batches or ():
                for entry_id, fields in entries:
                    task = asyncio.create_task(self.run_one(entry_id, fields))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)

    async def run_one(self, entry_id: str, fields: dict[str, str]) -> None:
        command_id, name = fields.get("id") or entry_id, fields.get("name") or ""
        try:
            if not await self.redis.set(mark_key(command_id), "taken", nx=True, ex=MARK_TTL_SECONDS):
                # Its sender gave up waiting and told the agent nothing was done: keep it so.
                self.log.info("command_abandoned", command=name, command_id=command_id)
                return
            reply = await self.answer(name, json.loads(fields.get("args") or "{}"))
            self.log.info("command_done", command=name, command_id=command_id, ok=reply.ok, status=reply.status)
            await self.redis.lpush(reply_key(command_id), reply.to_json())
            await self.redis.expire(reply_key(command_id), REPLY_TTL_SECONDS)
        except Exception:  # noqa: BLE001 - its sender times out and says the outcome is unknown
            self.log.exception("command_failed", command=name, command_id=command_id)
        finally:
            try:
                await self.redis.xack(COMMANDS, GROUP, entry_id)
            except Exception as exc:  # noqa: BLE001 - left pending; its mark keeps it from running twice
                self.log.warning("command_ack_failed", command_id=command_id, error=str(exc))

    async def answer(self, name: str, args: dict[str, Any]) -> Reply:
        try:
            return Reply(True, await self.execute(name, args))
        except Refused as exc:
            return Reply(False, message=exc.message, status=exc.status, field=exc.field)
        except AmiError as exc:
            return Reply(False, message=str(exc), status=409)
        except Exception:  # noqa: BLE001 - answered in plain words; the details go to the log
            self.log.exception("command_error", command=name)
            return Reply(False, message="电话系统处理失败，请稍后重试", status=503)

    async def execute(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if not self.ami.logged_in.is_set():
            raise Refused("暂时无法连接电话系统（AMI），请稍后重试", 503)
        if name == "telephony_apply":  # an admin changed phones or queues (core.provisioning)
            return await provisioning.apply(self.settings, self.db, self.log)
        if name == "queue_status":
            return {"waiting": await control.queue_callers(self.ami)}
        if name == "spy":
            lead_phone = self.settings.sip.lead_extensions[0]
            await control.spy_on_agent(self.ami, self.redis, lead_phone, int(args["agent_id"]), str(args["mode"]))
            return {"lead_phone": lead_phone}
        agent_id = int(args["agent_id"])
        async with control.agent_commands(agent_id):
            if name == "agent_state":
                return await self._agent_state(agent_id, args)
            if name == "call":
                return await control.call_operation(self.ami, self.redis, agent_id, str(args["op"]), args)
            if name == "callback":
                phone, ami = await control.logged_in_phone(self.ami, self.redis, agent_id)
                call_id = await callbacks.call_back_by_agent(self.db, ami, agent_id, phone, int(args["callback_id"]),
                                                             clock.now(self.settings))
                return {"call_id": call_id}
        raise Refused(f"未知的命令：{name}", 400)

    async def _agent_state(self, agent_id: int, args: dict[str, Any]) -> dict[str, Any]:
        async with self.db.session() as session:
            agent = await session.get(User, agent_id)
        if agent is None:
            raise Refused("坐席不存在", 404)
        action = args.get("action")
        if action == "login":
            phone = str(args.get("phone") or "")
            if phone != f"{BROWSER_PHONE_PREFIX}{agent_id}" and phone not in await enabled_extensions(self.db):
                raise Refused("请选择有效的分机号", 400, "phone")
            await control.agent_login(self.ami, self.redis, agent, phone)
        elif action == "ready":
            await control.agent_ready(self.ami, self.redis, agent)
        elif action == "pause":
            await control.agent_pause(self.ami, self.redis, agent, str(args.get("reason") or ""),
                                      by_system=bool(args.get("by_system")))
        elif action == "logout":
            await control.agent_logout(self.ami, self.redis, agent)
        elif action == "skills":  # the admin changed the agent's skills (agent_desk/admin_users.py)
            return await control.agent_skills_changed(self.ami, self.redis, agent)
        elif action == "signout":  # an admin locked, disabled or reset the agent (agent_desk/admin_users.py)
            return await control.agent_sign_out(self.ami, self.redis, agent)
        else:
            raise Refused("未知的操作", 400, "action")
        return {}
