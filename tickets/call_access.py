"""Who may attach a call to a ticket, and so hand its recording to everyone who sees the ticket.

A call recording is the citizen's voice and all they said. Linking a call to a ticket lets the
ticket's unit, the units above it and the call centre hear it, so a link may only be made by someone
who could already see that call:

- team leads and admins: they hear every recording anyway;
- the agent who took the call, or whose phone rang for it: the screen pop showed them the call and
  exists so that they register the ticket from it;
- the unit the ticket is dispatched to, for a call on the ticket's hotline from the ticket's
  complainant phone: the citizen called again about the case the unit is handling. The
  complainant phone is set at registration by the call centre (handling units cannot change it),
  so a unit cannot widen this by editing its own ticket.

Playback does not trust a link by itself (links made before this rule, by anyone viewing the
ticket, are still in the database; migration 0005 recorded who made each from the tracking log):
:func:`link_is_sound` re-checks the rule for whoever made the link, and a link without a maker (the
system's, for a voice message) counts only for the citizen's own call.
"""

from __future__ import annotations

from core.calls import CallRecord
from core.models import Role, User
from tickets.models import Ticket

_DIGITS = frozenset("0123456789")
# Shorter numbers (service codes, extensions) say nothing about who called.
_MIN_PHONE_DIGITS = 7


def _phone_key(number: str | None) -> str:
    """Digits only, without China's country code on a mobile number (+86 138…, 0086 138…)."""
    digits = "".join(ch for ch in number or "" if ch in _DIGITS)
    for prefix in ("0086", "86"):
        rest = digits[len(prefix):]
        if digits.startswith(prefix) and len(rest) == 11 and rest.startswith("1"):
            return rest
    return digits


def same_phone(a: str | None, b: str | None) -> bool:
    key = _phone_key(a)
    return len(key) >= _MIN_PHONE_DIGITS and key == _phone_key(b)


def took_call(call: CallRecord, user_id: int | None) -> bool:
    """The agent answered the call or was rung for it (and so had its screen pop)."""
    if user_id is None:
        return False
    rung = call.agents_rung if isinstance(call.agents_rung, list) else []
    return call.agent_id == user_id or any(isinstance(r, dict) and r.get("agent_id") == user_id for r in rung)


def citizens_own_call(call: CallRecord, ticket: Ticket) -> bool:
    """The call came from the ticket's complainant on the ticket's hotline."""
    return (call.hotline or ticket.hotline) == ticket.hotline and same_phone(call.caller_number,
                                                                             ticket.complainant_phone)


def may_link_call(user: User, call: CallRecord, ticket: Ticket) -> bool:
    """``user`` may attach ``call`` to ``ticket`` (they may already see ``ticket``: the action's own check)."""
    if user.role in (Role.ADMIN, Role.TEAM_LEAD):
        return True
    if user.role == Role.AGENT:
        return took_call(call, user.id)
    if user.role in (Role.UNIT_HANDLER, Role.UNIT_HEAD):
        return user.unit_id is not None and user.unit_id == ticket.unit_id and citizens_own_call(call, ticket)
    return False


def link_is_sound(call: CallRecord, ticket: Ticket, linked_by: User | None) -> bool:
    """Whether a stored link of ``call`` to ``ticket`` may grant its recording to those who see the ticket."""
    return citizens_own_call(call, ticket) or (linked_by is not None and may_link_call(linked_by, call, ticket))
