"""The agent vocabulary shared by every process and the desk's JavaScript.

Agent states and pause reasons are stored as these enums' values in Redis (the CTI's agent sessions)
and sent in live events, so the values are a storage format: never rename one. The desk's JS gets
the same values and labels from :func:`js_vocabulary` (rendered into every page by base.html), so a
state the JS compares against always exists here (tests/desk/test_vocabulary.py checks that).
"""

from __future__ import annotations

import enum
from typing import Any


class AgentState(enum.StrEnum):
    OFFLINE = "offline"
    READY = "ready"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAPUP = "wrapup"
    PAUSED = "paused"

    @property
    def label(self) -> str:
        return AGENT_STATE_LABELS[self]


class PauseReason(enum.StrEnum):
    """Why an agent is paused (or, for CALLBACK, why a ready agent is ringing)."""

    BREAK = "break"
    TRAINING = "training"
    ACW = "acw"
    MEETING = "meeting"
    MEAL = "meal"
    # Set by the platform, never chosen by the agent:
    LOGIN = "login"          # just logged in, paused until they press 就绪
    CALLBACK = "callback"    # rung for a callback the CTI is placing
    PHONE = "phone"          # the browser phone disconnected

    @property
    def label(self) -> str:
        return PAUSE_REASON_LABELS[self]

    @property
    def selectable(self) -> bool:
        """Whether an agent may choose this reason on the desk."""
        return self not in (PauseReason.LOGIN, PauseReason.CALLBACK, PauseReason.PHONE)


AGENT_STATE_LABELS: dict[AgentState, str] = {
    AgentState.OFFLINE: "离线", AgentState.READY: "就绪", AgentState.RINGING: "振铃",
    AgentState.ON_CALL: "通话中", AgentState.WRAPUP: "话后整理", AgentState.PAUSED: "暂停",
}
PAUSE_REASON_LABELS: dict[PauseReason, str] = {
    PauseReason.BREAK: "小休", PauseReason.TRAINING: "培训", PauseReason.ACW: "话后处理",
    PauseReason.MEETING: "会议", PauseReason.MEAL: "用餐", PauseReason.LOGIN: "签入后",
    PauseReason.CALLBACK: "回拨", PauseReason.PHONE: "网页电话离线",
}
# The reasons an agent may pick on the desk, value -> label, in display order.
SELECTABLE_PAUSE_REASONS: dict[str, str] = {r.value: r.label for r in PauseReason if r.selectable}


def state_label(state: str | None) -> str:
    """The Chinese label of a stored state (an unknown value is shown as it is)."""
    try:
        return AgentState(state).label
    except ValueError:
        return state or ""


def reason_label(reason: str | None) -> str:
    try:
        return PauseReason(reason).label
    except ValueError:
        return ""


def js_vocabulary() -> dict[str, Any]:
    """What the desk's JS knows of the vocabulary: ``AgentState.READY`` -> "ready" and the labels."""
    return {
        "AgentState": {s.name: s.value for s in AgentState},
        "PauseReason": {r.name: r.value for r in PauseReason},
        "stateLabels": {s.value: s.label for s in AgentState},
        "reasonLabels": {r.value: r.label for r in PauseReason},
    }
