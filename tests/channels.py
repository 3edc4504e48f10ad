"""What Asterisk itself says a call is doing (CoreShowChannels), for tests that must act at a given moment."""

from __future__ import annotations

from typing import Any


async def running(ami: Any, call_id: str, application: str) -> bool:
    """Whether the channel of ``call_id`` (its uniqueid) is running ``application`` (e.g. "AGI": in the IVR)."""
    reply = await ami.action({"Action": "CoreShowChannels"}, as_list=True, timeout=10)
    return any(m.get("Uniqueid") == call_id and m.get("Application") == application for m in reply)
