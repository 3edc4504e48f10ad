"""A citizen call without a phone: AMI Originate of a Local/ channel into the hotline DID.

The Local channel's ``;2`` half runs the real hotline dialplan (from-carrier);
its ``;1`` half is the citizen (dialplans/test-callers.conf) who keys DTMF with
SendDTMF() and speaks a Mandarin sentence. Used by ``./hotline call`` and the tests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from core.ami import AmiClient, first_response, succeeded
from core.asterisk_runtime import resolve_runtime
from core.settings import Settings
from ivr.prompts import PromptStore

CITIZEN_SENTENCES = {
    "demo-complaint": "我要投诉，我在广州参加旅行社组织的旅游团，导游强迫我们购物，请帮我处理。",
    "demo-report": "我要举报，我们小区的电梯经常故障，存在安全隐患。",
}


@dataclass
class PlacedCall:
    call_id: str       # CALL_ID / uniqueid of the hotline side of the call
    citizen_id: str    # uniqueid of the citizen side
    did: str
    caller: str

    def __str__(self) -> str:
        return f"call {self.call_id} placed: {self.caller} -> {self.did}"


def citizen_speech(settings: Settings, name: str) -> str:
    """Path (as Asterisk sees it) of a sentence the citizen says; generated on first use."""
    runtime = resolve_runtime(settings)
    store = PromptStore(runtime.host_path(runtime.inside("sounds")), runtime.inside("sounds"))
    text = CITIZEN_SENTENCES.get(name, name)
    return store.ensure(name if name in CITIZEN_SENTENCES else f"citizen-{abs(hash(text))}", text)


async def originate_citizen(
    ami: AmiClient,
    did: str,
    keys: str = "",
    caller: str = "13800138000",
    hold_seconds: int = 30,
    speech_path: str = "",
    delay_seconds: float = 1,
    speech_delay_seconds: float = 0,
    speech_repeat_seconds: float = 0,
) -> PlacedCall:
    """``speech_repeat_seconds``: say the speech again after each such pause until the citizen hangs up."""
    call_id = f"hl-{uuid.uuid4().hex[:16]}"
    citizen_id = f"cz-{uuid.uuid4().hex[:16]}"
    variables = {"KEYS": keys, "SPEECH": speech_path, "HOLD_SECONDS": hold_seconds, "DELAY": delay_seconds,
                 "SPEECH_DELAY": speech_delay_seconds, "SPEECH_REPEAT": speech_repeat_seconds or ""}
    reply = await ami.action({
        "Action": "Originate",
        "Channel": f"Local/{did}@from-carrier/n",
        "Context": "test-citizen",
        "Exten": "s",
        "Priority": 1,
        "CallerID": f'"{caller}" <{caller}>',
        "ChannelId": citizen_id,
        "OtherChannelId": call_id,
        "Async": "true",
        "Variable": ",".join(f"{k}={v}" for k, v in variables.items()),
    })
    if not succeeded(reply):
        raise RuntimeError(f"Asterisk refused the call: {first_response(reply).get('Message')}")
    return PlacedCall(call_id=call_id, citizen_id=citizen_id, did=did, caller=caller)


async def place_call(settings: Settings, did: str, keys: str, caller: str, hold: int, speech: str) -> PlacedCall:
    ami = AmiClient(settings, "tools")  # an async Originate's reply ends with an event: events must be on
    await ami.connect()
    try:
        # The demo citizen keeps talking (a pause, then the sentence again): said only once, it would be over
        # while the call still rang, before the agent could answer and hear it.
        return await originate_citizen(ami, did, keys, caller, hold, citizen_speech(settings, speech) if speech else "",
                                       speech_repeat_seconds=2)
    finally:
        await ami.close()
