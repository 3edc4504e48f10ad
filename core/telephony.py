"""Asterisk-facing names every process shares: channel variables and how a call is identified.

The dialplan (dialplans/), the IVR (which sets them over AGI), the CTI (which reads them from AMI
events, listed in asterisk-conf/manager.conf ``channelvars``) and call origination all use these
names; they live here once so a rename cannot leave one side reading a variable nobody sets.
"""

from __future__ import annotations

from typing import Any


class ChanVar:
    """Channel variable names (a plain namespace of str constants: AGI and AMI take strings)."""

    CALL_ID = "CALL_ID"                  # the uniqueid of the citizen's leg, on every channel of the call
    HOTLINE = "HOTLINE"                  # 12301 / 12365
    IVR_PATH = "IVR_PATH"                # keys the caller went through, ">"-joined
    IVR_AHEAD = "IVR_AHEAD"              # keys typed ahead of a prompt
    IVR_ROUTE = "IVR_ROUTE"              # where the IVR sends the call next (the dialplan branches on it)
    BUSINESS = "BUSINESS"                # consult / complaint / report / progress / agent
    CATEGORY = "CATEGORY"                # complaint object chosen in the IVR
    LOOKUP_TICKET = "LOOKUP_TICKET"      # ticket number the caller looked up
    TARGET_QUEUE = "TARGET_QUEUE"
    RECORDING_FILE = "RECORDING_FILE"
    VOICEMAIL_FILE = "VOICEMAIL_FILE"
    CALLBACK_NUMBER = "CALLBACK_NUMBER"  # set when the caller asked to be called back
    CALLBACK_ID = "CALLBACK_ID"
    AGENT_ID = "AGENT_ID"
    SPY_TARGET = "SPY_TARGET"


# The variables Asterisk reports on every AMI event (manager.conf channelvars, checked by a test).
AMI_CHANNELVARS: tuple[str, ...] = (
    ChanVar.HOTLINE, ChanVar.CALL_ID, ChanVar.BUSINESS, ChanVar.CATEGORY, ChanVar.IVR_PATH,
    ChanVar.LOOKUP_TICKET, ChanVar.TARGET_QUEUE, ChanVar.RECORDING_FILE, ChanVar.VOICEMAIL_FILE,
    ChanVar.CALLBACK_NUMBER, ChanVar.AGENT_ID,
)


# The ActionID of a callback's Originate. An Originate Asterisk cannot carry out (the agent's phone not
# registered, not answering within its timeout) runs no dialplan, so no hangup handler reports it: only its
# OriginateResponse does, by this ActionID, possibly before the originating side has stored anything.
CALLBACK_ACTION_PREFIX = "callback-"
# The dial status a callback attempt ends with when the agent's phone was not reached (the citizen was not dialled).
AGENT_NOT_REACHED = "AGENT_NOT_REACHED"


def originate_action_id(call_id: str, callback_id: int | None) -> str:
    """The ActionID of the Originate of outbound call ``call_id`` (a callback's carries the request's id)."""
    return f"{CALLBACK_ACTION_PREFIX}{callback_id}-{call_id}" if callback_id else call_id


def callback_of_action(action_id: str | None) -> str | None:
    """The callback request id an Originate's ActionID carries (see :func:`originate_action_id`), if any."""
    if not action_id or not action_id.startswith(CALLBACK_ACTION_PREFIX):
        return None
    request, _, _ = action_id[len(CALLBACK_ACTION_PREFIX):].partition("-")
    return request if request.isdigit() else None


def inherited(name: str) -> str:
    """The name that makes Asterisk copy a variable to every channel the call creates (``__NAME``)."""
    return f"__{name}"


def chan_var(event: Any, name: str, prefix: str = "ChanVariable") -> str | None:
    """Read a channelvars value from an AMI event (panoramisk merges repeated headers into a list)."""
    raw = event.get(prefix)
    items = raw if isinstance(raw, list) else [raw] if raw else []
    for item in items:
        key, _, value = str(item).partition("=")
        if key == name:
            return value or None
    return event.get(f"{prefix}-{name}") or None


def call_id_of(event: Any) -> str | None:
    """The call an AMI event belongs to: its CALL_ID, or the channel's own uniqueid before the
    dialplan has set one (the citizen's first events)."""
    return chan_var(event, ChanVar.CALL_ID) or event.get("Uniqueid")
