"""Call-control actions report what Asterisk answered (pure: a scripted AMI)."""

from __future__ import annotations

import pytest

from core.ami import AmiError
from cti import control


class ScriptedAmi:
    """Answers each action with the next scripted reply and records what was sent."""

    def __init__(self, *replies: dict[str, str]) -> None:
        self.replies = list(replies)
        self.sent: list[dict[str, str]] = []

    async def action(self, message: dict[str, str], **_: object) -> dict[str, str]:
        self.sent.append(message)
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


REFUSED = {"Response": "Error", "Message": "Channel2 does not exist"}
DONE = {"Response": "Success"}


async def test_resume_right_after_hold_retries_until_asterisk_takes_the_bridge():
    ami = ScriptedAmi(REFUSED, REFUSED, DONE)
    await control.resume(ami, "PJSIP/carrier-1", "PJSIP/8002-1")
    assert [m["Action"] for m in ami.sent] == ["Bridge"] * 3


async def test_a_resume_asterisk_keeps_refusing_is_reported_not_answered_as_done():
    ami = ScriptedAmi(REFUSED)
    with pytest.raises(AmiError, match="恢复通话失败：Channel2 does not exist"):
        await control.resume(ami, "PJSIP/carrier-1", "PJSIP/8002-1", settle_within=0.5)


async def test_a_refused_hold_is_reported():
    with pytest.raises(AmiError, match="保持失败"):
        await control.hold(ScriptedAmi(REFUSED), "PJSIP/carrier-1", "PJSIP/8002-1")
