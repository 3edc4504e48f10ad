"""Ticket drafts built from a call's facts (what the IVR learnt), shown to the agent in the screen pop.

Tickets own the ticket kinds: the CTI hands over the call record and knows nothing of which IVR business
becomes which kind of ticket.
"""

from __future__ import annotations

from typing import Any

from core.calls import CallRecord
from tickets.models import Kind

# The IVR businesses that name a ticket kind directly; anything else leaves the kind to the agent.
_KIND_OF_BUSINESS = {k.value: k.value for k in (Kind.CONSULT, Kind.COMPLAINT, Kind.REPORT)}


def draft_from_call(record: CallRecord) -> dict[str, Any]:
    """The pre-filled ticket form for the call ``record``."""
    return {
        "hotline": record.hotline, "kind": _KIND_OF_BUSINESS.get(record.business or ""),
        "complaint_object": record.category, "complainant_phone": record.caller_number,
        "call_ref": record.ref,
    }
