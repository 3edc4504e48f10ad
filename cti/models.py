"""The CTI slice's models: the call facts live in core.calls (tickets and recordings read them without the CTI)."""

from core.calls import CallbackRequest, CallbackStatus, CallRecord, CallState, new_call_ref

__all__ = ["CallRecord", "CallState", "CallbackRequest", "CallbackStatus", "new_call_ref"]
