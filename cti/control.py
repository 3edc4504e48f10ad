"""Call and agent control through AMI: the CTI's service behind the desk's commands (cti.commands).

The CTI is the one writer of agent state and the one process driving calls over AMI; the desk asks
for these actions over the command channel (cti.protocol) and reads state through cti.read.
Agents are people, not phones: logging in binds a person to a phone for the
session and makes that phone a member of the queues of the person's skills.
Nothing here is re-sent after an AMI reconnect (see core.ami): a lost reply
surfaces as an AmiError the desk shows in plain words.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any

from core import events as ev
from core.ami import AmiClient, AmiError, AmiNodes, first_response, on_node, succeeded
from core.models import User
from core.telephony import ChanVar, originate_action_id
from core.vocabulary import SELECTABLE_PAUSE_REASONS, AgentState, PauseReason
from cti.protocol import PHONE_NUMBER, Refused
from cti.read import AGENT_BY_PHONE, AGENT_SESSIONS

__all__ = ["AGENT_BY_PHONE", "AGENT_SESSIONS"]

HELD_PREFIX = "hotline:cti:held:"  # agent id -> citizen channel put on hold from the desk
CONSULT_PREFIX = "hotline:cti:consult:"  # agent id -> target of an attended transfer in consultation
TRANSFER_TARGET = re.compile(r"123\d\d-[a-z]+|8\d{3}")  # a queue (12365-report) or an agent phone (8002)
SPY_MODES = ("listen", "whisper", "barge")

# The CTI is the only writer of agent sessions, so in-process locks are enough: a session is read,
# changed and written back under its agent's lock (no update lost between two writers), and one
# agent's commands run one after the other (Asterisk and the session never disagree on who won).
# Per event loop: a lock belongs to the loop that first waited on it.
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, asyncio.Lock]] = weakref.WeakKeyDictionary()


def _lock(key: Any) -> asyncio.Lock:
    table = _locks.setdefault(asyncio.get_running_loop(), {})
    return table.setdefault(key, asyncio.Lock())


@contextlib.asynccontextmanager
async def agent_commands(agent_id: int) -> AsyncIterator[None]:
    """Hold while running a command for the agent: that agent's commands never interleave."""
    async with _lock(("commands", agent_id)):
        yield


def interface(phone: str) -> str:
    return f"PJSIP/{phone}"


PHONE_HINTS = "phone-hints"  # asterisk-conf/extensions.conf: a hint per phone, for ExtensionState
UNREACHABLE = ("-1", "4")    # ExtensionState: no such hint, or the phone is not registered there


async def phone_node(ami: AmiClient | AmiNodes, phone: str) -> str | None:
    """The node the phone is registered on (the first that says so); None with one node or none found."""
    if not isinstance(ami, AmiNodes) or len(ami) < 2:
        return None
    for client in ami:
        if not client.logged_in.is_set():
            continue
        try:
            reply = await client.action({"Action": "ExtensionState", "Exten": phone, "Context": PHONE_HINTS},
                                        timeout=3)
        except AmiError:
            continue  # that node is away: the phone is not usable there now anyway
        if first_response(reply).get("Status") not in UNREACHABLE:
            return client.node.name
    return None


async def agent_session(redis, agent_id: int) -> dict[str, Any] | None:
    raw = await redis.hget(AGENT_SESSIONS, str(agent_id))
    return json.loads(raw) if raw else None


async def set_agent_state(redis, agent_id: int, state: str, reason: str | None = None,
                          since: float | None = None, **extra: Any) -> dict:
    """Record the agent's state; ``since`` (epoch) is kept unless the state or reason changes, when it
    becomes ``since`` if given (e.g. Asterisk's own LastPause after a resync) or now."""
    async with _lock(("session", agent_id)):
        session = await agent_session(redis, agent_id) or {}
        if session.get("state") != state or session.get("reason") != reason:
            session["since"] = since or time.time()
        session.update(state=state, reason=reason, **extra)
        await redis.hset(AGENT_SESSIONS, str(agent_id), json.dumps(session, ensure_ascii=False))
    await ev.publish(redis, ev.AgentStateChanged(agent_id=agent_id, state=state, reason=reason,
                                                 since=session["since"]))
    return session


async def agent_login(ami: AmiClient | AmiNodes, redis, agent: User, phone: str) -> dict:
    """Join the agent's skill queues on ``phone``, on the node the phone is registered on; the agent starts
    paused until they press 就绪."""
    async with _lock("login"):  # phone ownership: two agents never log in on one phone
        return await _login(ami, redis, agent, phone)


def cluster_router(ami: AmiClient | AmiNodes) -> Any:
    """The CTI's one ACD across the nodes (cti.routing.ClusterRouter) in cluster mode, else None."""
    return getattr(ami, "acd", None)


async def _login(ami: AmiClient | AmiNodes, redis, agent: User, phone: str) -> dict:
    router = cluster_router(ami)
    current = await agent_session(redis, agent.id)
    if router is not None and phone.isdigit():
        # Every node reaches the phone through Kamailio: the agent starts on their home node (or stays on
        # the node they are a member on), and the router moves them to where callers wait.
        signed_in = current and current.get("state") != AgentState.OFFLINE and current.get("node")
        client = on_node(ami, current["node"] if signed_in else router.home(agent.id))
    else:
        client = on_node(ami, await phone_node(ami, phone))
    owner = await redis.hget(AGENT_BY_PHONE, phone)
    if owner and int(owner) != agent.id:
        raise AmiError(f"分机 {phone} 已被其他坐席登录")
    if current and current.get("state") != AgentState.OFFLINE and current.get("phone") not in (None, phone):
        # Logging in again elsewhere would leave the first phone in the queues, ringing for nobody.
        raise AmiError(f"您已在分机 {current['phone']} 登录，请先退出")
    queues = agent.skill_list
    if not queues:
        raise AmiError("该坐席未配置技能队列，请联系管理员")
    for queue in queues:
        await join_queue(client, agent, phone, queue, paused=True, reason="login")
    await redis.hset(AGENT_BY_PHONE, phone, str(agent.id))
    return await set_agent_state(redis, agent.id, AgentState.PAUSED, PauseReason.LOGIN, phone=phone, queues=queues,
                                 node=client.node.name)


async def join_queue(client: AmiClient, agent: User, phone: str, queue: str, paused: bool, reason: str = "") -> None:
    """Make the agent's phone a member of ``queue`` with the skill's penalty."""
    reply = await client.action({
        "Action": "QueueAdd", "Queue": queue, "Interface": interface(phone),
        "MemberName": f"{agent.display_name}({agent.username})", "StateInterface": interface(phone),
        "Penalty": str(agent.skills.get(queue, 0)), "Paused": "true" if paused else "false", "Reason": reason,
    })
    if not succeeded(reply) and "Already there" not in str(first_response(reply).get("Message")):
        raise AmiError(f"加入队列 {queue} 失败：{first_response(reply).get('Message')}")


async def agent_skills_changed(ami: AmiClient | AmiNodes, redis, agent: User) -> dict:
    """Apply an agent's changed skills now if they are logged in (the admin changed them): join the new
    queues (paused as the agent is), leave the dropped ones, set the kept ones' penalties."""
    async with _lock("login"):
        session = await agent_session(redis, agent.id)
        if not session or session.get("state") == AgentState.OFFLINE:
            return {"applied": False}
        client, phone = on_node(ami, session.get("node")), session["phone"]
        old, new = list(session.get("queues") or []), agent.skill_list
        paused = session.get("state") == AgentState.PAUSED
        for queue in new:
            if queue in old:
                await client.action({"Action": "QueuePenalty", "Interface": interface(phone), "Queue": queue,
                                     "Penalty": str(agent.skills[queue])})
            else:
                await join_queue(client, agent, phone, queue, paused, str(session.get("reason") or "") if paused else "")
        for queue in old:
            if queue not in new:
                await client.action({"Action": "QueueRemove", "Queue": queue, "Interface": interface(phone)})
        await set_agent_state(redis, agent.id, session["state"], session.get("reason"), queues=new)
        return {"applied": True, "queues": new}


async def agent_logout(ami: AmiClient | AmiNodes, redis, agent: User) -> None:
    async with _lock("login"):  # phone ownership: two agents never log in on one phone
        await _logout(ami, redis, agent)


async def _logout(ami: AmiClient | AmiNodes, redis, agent: User) -> None:
    session = await agent_session(redis, agent.id)
    if not session or session.get("state") == AgentState.OFFLINE:
        return
    phone = session["phone"]
    for queue in session.get("queues", []):
        await on_node(ami, session.get("node")).action({"Action": "QueueRemove", "Queue": queue, "Interface": interface(phone)})
    await redis.hdel(AGENT_BY_PHONE, phone)
    await set_agent_state(redis, agent.id, AgentState.OFFLINE, None, phone=None, queues=[], node=None)


async def agent_sign_out(ami: AmiClient | AmiNodes, redis, agent: User) -> dict:
    """An admin locked, disabled or reset the agent: out of their queues at once (签出), on every node (a
    membership left on a node the phone moved away from would still ring for nobody)."""
    async with _lock("login"):
        session = await agent_session(redis, agent.id)
        if not session or session.get("state") == AgentState.OFFLINE:
            return {"applied": False, "queues": []}
        phone, queues = session["phone"], list(session.get("queues") or [])
        await _logout(ami, redis, agent)
        others = [c for c in ami if c.node.name != session.get("node")] if isinstance(ami, AmiNodes) else []
        for client in others:
            if not client.logged_in.is_set():
                continue  # away: it lost its members with its calls, or the CTI's resync finds them
            for queue in queues:
                with contextlib.suppress(AmiError):  # "Not there" is the usual answer
                    await client.action({"Action": "QueueRemove", "Queue": queue, "Interface": interface(phone)})
        return {"applied": True, "queues": queues, "phone": phone}


async def agent_pause(ami: AmiClient | AmiNodes, redis, agent: User, reason: str, by_system: bool = False) -> dict:
    if reason not in SELECTABLE_PAUSE_REASONS and not (by_system and reason in (PauseReason.LOGIN, PauseReason.PHONE)):
        raise AmiError(f"未知的暂停原因：{reason}")
    session = await _require_session(redis, agent.id)
    await on_node(ami, session.get("node")).action({"Action": "QueuePause", "Interface": interface(session["phone"]), "Paused": "true",
                      "Reason": reason})
    return await set_agent_state(redis, agent.id, AgentState.PAUSED, reason)


async def agent_ready(ami: AmiClient | AmiNodes, redis, agent: User) -> dict:
    session = await _require_session(redis, agent.id)
    router = cluster_router(ami)
    if router is not None and str(session.get("phone") or "").isdigit():
        # Cluster mode: the router unpauses the agent on the node of the longest-waiting caller for
        # their skills (or where they are), not necessarily here (cti.routing).
        state = await set_agent_state(redis, agent.id, AgentState.READY, None)
        router.kick()
        return state
    await on_node(ami, session.get("node")).action({"Action": "QueuePause", "Interface": interface(session["phone"]), "Paused": "false"})
    return await set_agent_state(redis, agent.id, AgentState.READY, None)


async def _require_session(redis, agent_id: int) -> dict:
    session = await agent_session(redis, agent_id)
    if not session or session.get("state") == AgentState.OFFLINE:
        raise AmiError("请先使用分机登录")
    return session


# --- live call control ------------------------------------------------------

async def live_channels(ami: AmiClient) -> list[dict[str, Any]]:
    """Every channel Asterisk has up (CoreShowChannels), as plain dicts."""
    reply = await ami.action({"Action": "CoreShowChannels"}, as_list=True, timeout=5)
    return [dict(m) for m in (reply if isinstance(reply, list) else []) if m.get("Event") == "CoreShowChannel"]


async def agent_channel(ami: AmiClient, phone: str) -> str | None:
    """The agent phone's channel currently up, if any."""
    return next((c["Channel"] for c in await live_channels(ami)
                 if str(c.get("Channel", "")).startswith(f"PJSIP/{phone}-")), None)


async def hangup(ami: AmiClient, channel: str) -> None:
    await ami.action({"Action": "Hangup", "Channel": channel, "Cause": 16})


async def to_survey(ami: AmiClient, citizen_channel: str) -> None:
    """Send a citizen whose agent is leaving to the satisfaction survey (dialplans/queues.conf)."""
    await ami.action({"Action": "Redirect", "Channel": citizen_channel, "Context": "hotline-survey",
                      "Exten": "s", "Priority": 1})


async def hold(ami: AmiClient, citizen_channel: str, agent_channel_name: str) -> None:
    """Citizen hears music; the agent's phone stays up in silence until resume()."""
    reply = await ami.action({
        "Action": "Redirect", "Channel": citizen_channel, "Context": "desk-hold", "Exten": "citizen",
        "Priority": 1, "ExtraChannel": agent_channel_name, "ExtraContext": "desk-hold",
        "ExtraExten": "agent", "ExtraPriority": 1,
    })
    if not succeeded(reply):
        raise AmiError(f"保持失败：{first_response(reply).get('Message')}")


async def resume(ami: AmiClient, citizen_channel: str, agent_channel_name: str,
                 settle_within: float = 3.0) -> None:
    """Join the held citizen and the agent again.

    Right after hold() the two channels may still be on their way into desk-hold, and Bridge refuses a
    channel in the middle of a redirect; so it is retried for a moment rather than reported as done
    while the citizen is left on music (the reply used to be ignored)."""
    deadline = time.monotonic() + settle_within
    while True:
        reply = await ami.action({"Action": "Bridge", "Channel1": agent_channel_name,
                                  "Channel2": citizen_channel, "Tone": "no"})
        if succeeded(reply):
            return
        if time.monotonic() >= deadline:
            raise AmiError(f"恢复通话失败：{first_response(reply).get('Message')}")
        await asyncio.sleep(0.3)


async def blind_transfer(ami: AmiClient, agent_channel_name: str, target: str) -> None:
    """Send the agent's caller to a queue name (e.g. 12365-report) or an agent phone (8002)."""
    await ami.action({"Action": "BlindTransfer", "Channel": agent_channel_name, "Context": "desk-transfer",
                      "Exten": target})


async def attended_transfer(ami: AmiClient, agent_channel_name: str, target: str,
                            started_within: float = 3.0) -> None:
    """Consult the target while the citizen hears music; complete_transfer() or cancel_transfer() ends it.

    Atxfer works by feeding the agent's channel the feature code as DTMF, which Asterisk may drop while
    the channel is still settling (e.g. just back from a cancelled consultation). So the consultation
    leg is looked for; if it never appears the agent is told to try again. Never re-sent here: a late
    second code would land in the consultation, where the same digits complete the transfer."""
    reply = await ami.action({"Action": "Atxfer", "Channel": agent_channel_name, "Context": "desk-transfer",
                              "Exten": target})
    if not succeeded(reply):
        raise AmiError(f"咨询转接失败：{first_response(reply).get('Message')}")
    deadline = time.monotonic() + started_within
    while time.monotonic() < deadline:
        if any(str(c.get("Channel", "")).startswith(f"Local/{target}@desk-transfer")
               for c in await live_channels(ami)):
            return
        await asyncio.sleep(0.2)
    raise AmiError("咨询转接未能发起，请稍后再试")


async def complete_transfer(ami: AmiClient, agent_channel_name: str) -> None:
    """The agent leaves the consultation: Asterisk joins the citizen and the target."""
    await hangup(ami, agent_channel_name)


async def cancel_transfer(ami: AmiClient, agent_channel_name: str) -> None:
    """Drop the consulted party and go back to the citizen."""
    reply = await ami.action({"Action": "CancelAtxfer", "Channel": agent_channel_name})
    if not succeeded(reply):
        raise AmiError(f"取消转接失败：{first_response(reply).get('Message')}")


async def call_citizen(ami: AmiClient, agent_id: int, phone: str, number: str,
                       callback_id: int | None = None, hotline: str = "") -> str:
    """Outbound call (e.g. a callback): ring the agent's phone, then dial the citizen; recorded."""
    call_id = f"out-{uuid.uuid4().hex[:16]}"
    variables = {ChanVar.AGENT_ID: agent_id, ChanVar.CALL_ID: call_id, ChanVar.CALLBACK_ID: callback_id or "",
                 ChanVar.HOTLINE: hotline}
    reply = await ami.action({
        "Action": "Originate", "ActionID": originate_action_id(call_id, callback_id),
        "Channel": interface(phone), "ChannelId": call_id,
        "Context": "from-desk", "Exten": number,
        "Priority": 1, "CallerID": f'"回拨 {number}" <{number}>', "Timeout": 30000, "Async": "true",
        "Variable": ",".join(f"{k}={v}" for k, v in variables.items()),
    })
    if not succeeded(reply):
        raise AmiError(f"外呼失败：{first_response(reply).get('Message')}")
    return call_id


async def spy(ami: AmiClient, lead_phone: str, agent_phone: str, mode: str) -> None:
    """Team lead listens (listen), whispers to the agent (whisper) or joins (barge)."""
    if mode not in ("listen", "whisper", "barge"):
        raise AmiError(f"未知的监听方式：{mode}")
    reply = await ami.action({
        "Action": "Originate", "Channel": interface(lead_phone), "Context": "desk-spy", "Exten": mode,
        "Priority": 1, "Async": "true", "Variable": f"{ChanVar.SPY_TARGET}={interface(agent_phone)}",
        "CallerID": f'"监听 {agent_phone}" <{agent_phone}>',
    })
    if not succeeded(reply):
        raise AmiError(f"监听失败：{first_response(reply).get('Message')}")


# --- the desk's call operations (commands run in the CTI, see cti.commands) ---------------------------

def live_call_channels(channels: list[dict[str, str]], phone: str) -> tuple[str | None, str | None]:
    """(agent channel, citizen channel) of the agent phone's bridged call (pure)."""
    mine = next((c for c in channels if c.get("Channel", "").startswith(f"PJSIP/{phone}-")), None)
    if mine is None:
        return None, None
    bridge = mine.get("BridgeId") or ""
    peer = next((c for c in channels if bridge and c.get("BridgeId") == bridge and c is not mine), None)
    return mine["Channel"], peer["Channel"] if peer else None


async def logged_in_phone(ami: AmiClient | AmiNodes, redis, agent_id: int) -> tuple[str, AmiClient]:
    """The phone the agent is logged in on and the AMI connection of its node (their calls are there);
    refused in plain words when they are not logged in."""
    session = await agent_session(redis, agent_id)
    if not session or session.get("state") == AgentState.OFFLINE or not session.get("phone"):
        raise Refused("请先使用分机登录")
    return session["phone"], on_node(ami, session.get("node"))


async def call_operation(nodes: AmiClient | AmiNodes, redis, agent_id: int, op: str,
                         args: dict[str, Any]) -> dict[str, Any]:
    """Hang up, hold, resume, transfer (blind/attended, then complete/cancel) the agent's live call, or
    call a citizen; returns what the desk shows ({"message"?, "call_id"?})."""
    phone, ami = await logged_in_phone(nodes, redis, agent_id)
    if op == "dial":
        number = str(args.get("number") or "")
        if not PHONE_NUMBER.match(number):
            raise Refused("请输入有效的电话号码", 400, "number")
        return {"call_id": await call_citizen(ami, agent_id, phone, number, hotline=str(args.get("hotline") or ""))}
    agent_chan, citizen_chan = live_call_channels(await live_channels(ami), phone)
    held_key, consult_key = f"{HELD_PREFIX}{agent_id}", f"{CONSULT_PREFIX}{agent_id}"
    if agent_chan is None:
        raise Refused("当前没有进行中的通话")
    if op == "hangup":
        # The agent leaves; the citizen stays for the satisfaction survey (一次一评), which no agent
        # may skip: a citizen the agent put on hold goes there from the music.
        held = await redis.get(held_key)
        if held and citizen_chan is None:
            await to_survey(ami, held)
        await hangup(ami, agent_chan)
        await redis.delete(held_key)
    elif op == "hold":
        if citizen_chan is None:
            raise Refused("通话已处于保持状态")
        await hold(ami, citizen_chan, agent_chan)
        await redis.set(held_key, citizen_chan, ex=3600)
    elif op == "resume":
        held = await redis.get(held_key)
        if not held:
            raise Refused("没有处于保持状态的通话")
        await resume(ami, held, agent_chan)
        await redis.delete(held_key)
    elif op == "transfer":
        target = str(args.get("target") or "").strip()
        if not TRANSFER_TARGET.fullmatch(target):
            raise Refused("请选择转接的队列或坐席分机", 400, "target")
        if args.get("mode", "blind") == "attended":
            await attended_transfer(ami, agent_chan, target)
            await redis.set(consult_key, target, ex=3600)
            return {"message": f"正在咨询 {target}，客户在听等待音乐；可完成转接或取消"}
        await blind_transfer(ami, agent_chan, target)
    elif op in ("complete", "cancel"):
        if not await redis.delete(consult_key):
            raise Refused("当前没有进行中的咨询转接")
        if op == "complete":
            await complete_transfer(ami, agent_chan)
            return {"message": "已完成转接"}
        await cancel_transfer(ami, agent_chan)
        return {"message": "已取消转接，回到原通话"}
    else:
        raise Refused("未知的通话操作", 404)
    return {}


async def spy_on_agent(nodes: AmiClient | AmiNodes, redis, lead_phone: str, agent_id: int, mode: str) -> None:
    """The team lead's phone listens to, whispers to or joins the agent's live call (on the agent's node)."""
    if mode not in SPY_MODES:
        raise Refused("请选择监听方式", 400, "mode")
    session = await agent_session(redis, agent_id)
    if not session or not session.get("phone"):
        raise Refused("该坐席未登录分机", 409, "agent_id")
    ami = on_node(nodes, session.get("node"))
    if await agent_channel(ami, session["phone"]) is None:
        raise Refused("该坐席当前没有通话", 409, "agent_id")
    await spy(ami, lead_phone, session["phone"], mode)


async def queue_callers(nodes: AmiNodes) -> list[dict[str, Any]]:
    """Callers in queue now (every node's QueueStatus: a caller waits on the node that took the call)."""
    waiting: list[dict[str, Any]] = []
    for ami in nodes:
        reply = await ami.action({"Action": "QueueStatus"}, as_list=True, timeout=3)
        waiting += [{"queue": m.get("Queue"), "caller": m.get("CallerIDNum"), "wait": float(m.get("Wait") or 0)}
                    for m in (reply if isinstance(reply, list) else []) if m.get("Event") == "QueueEntry"]
    return waiting
