"""The request/reply channel through which other processes ask the CTI to act (the desk's side).

The CTI is the only process that talks AMI for call control and the only writer of agent state.
A command is one entry on the Redis stream ``hotline:cti:commands`` (read by the CTI's consumer
group); its answer is pushed to a reply list of its own, which the sender waits on with BLPOP.

Whoever decides first owns the command: the CTI marks it taken (``SET NX``) before it touches Asterisk,
a sender that gave up waiting marks it abandoned the same way. So a command the CTI did not pick up in
time is never carried out later (a hang-up five minutes late would cut off the next call), and a
command the CTI did start is waited for to the end: nothing is half-done behind the agent's back.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from core.service import heartbeat_key, problem_key

COMMANDS = "hotline:cti:commands"
COMMANDS_MAXLEN = 10_000
GROUP = "cti"
PICKUP_SECONDS = 3.0    # the CTI normally takes a command within milliseconds
EXECUTION_SECONDS = 10.0  # once taken: AMI actions time out after 5 s, an attended transfer looks for 3 s
MARK_TTL_SECONDS = 120
# What a call command may dial (it travels in an AMI Originate header): checked by sender and CTI alike.
PHONE_NUMBER = re.compile(r"^\+?\d{3,20}$")
# An agent's browser phone is the PJSIP endpoint web<agent id>, made by the desk (agent_desk/webphone.py).
BROWSER_PHONE_PREFIX = "web"


def reply_key(command_id: str) -> str:
    return f"hotline:cti:reply:{command_id}"


def mark_key(command_id: str) -> str:
    """Holds who owns the command: "taken" (the CTI) or "abandoned" (the sender gave up)."""
    return f"hotline:cti:cmd:{command_id}"


class CtiUnavailable(Exception):
    """The CTI is not running or did not answer in time; nothing was done. Words for people."""


@dataclass
class Refused(Exception):
    """The CTI refused or failed the command (words for people); ``status`` is the HTTP status to show."""

    message: str
    status: int = 409
    field: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class Reply:
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    status: int = 200
    field: str | None = None

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, "data": self.data, "message": self.message, "status": self.status,
                           "field": self.field}, ensure_ascii=False, default=str)

    @classmethod
    def from_json(cls, raw: str) -> Reply:
        body = json.loads(raw)
        return cls(bool(body.get("ok")), body.get("data") or {}, body.get("message") or "",
                   int(body.get("status") or 200), body.get("field"))


async def cti_problem(redis) -> str | None:
    """Why the CTI cannot take commands now (words for people), from its own heartbeat; None if it can."""
    problem = await redis.get(problem_key("cti"))
    if problem:
        return f"电话系统（CTI）暂不可用：{problem}，请稍后重试"
    if not await redis.exists(heartbeat_key("cti")):
        return "电话系统（CTI）未运行，请稍后重试或联系管理员"
    return None


async def send(redis, name: str, args: dict[str, Any], pickup: float = PICKUP_SECONDS,
               execution: float = EXECUTION_SECONDS) -> dict[str, Any]:
    """Ask the CTI to run command ``name``; returns its data, raises Refused or CtiUnavailable."""
    problem = await cti_problem(redis)
    if problem:
        raise CtiUnavailable(problem)
    command_id = uuid.uuid4().hex
    await redis.xadd(COMMANDS, {"id": command_id, "name": name, "args": json.dumps(args, ensure_ascii=False)},
                     maxlen=COMMANDS_MAXLEN, approximate=True)
    raw = await _wait(redis, command_id, pickup)
    if raw is None:
        if await redis.set(mark_key(command_id), "abandoned", nx=True, ex=MARK_TTL_SECONDS):
            raise CtiUnavailable(f"电话系统（CTI）{pickup:.0f} 秒内未响应，操作未执行，请稍后重试")
        raw = await _wait(redis, command_id, execution)  # the CTI took it: its answer is coming
        if raw is None:
            raise CtiUnavailable("电话系统（CTI）处理超时，操作结果未知，请查看话机和坐席状态后再试")
    reply = Reply.from_json(raw)
    if not reply.ok:
        raise Refused(reply.message, reply.status, reply.field)
    return reply.data


async def _wait(redis, command_id: str, seconds: float) -> str | None:
    popped = await redis.blpop([reply_key(command_id)], timeout=seconds)
    return popped[1] if popped else None
