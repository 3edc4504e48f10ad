"""A callback attempt's result never lost: the request does not stay "dialling" when no hangup handler reports.

An Originate Asterisk could not carry out (the agent's phone not registered, not answering) runs no dialplan,
so only its OriginateResponse tells; and a CTI that was away when an attempt ended must settle it later from
the call's record. Either way the citizen is never dialled twice and never forgotten."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from cti import callbacks
from cti.models import CallbackRequest, CallbackStatus, CallRecord


def _request(number: str, **values) -> CallbackRequest:
    now = datetime.now(UTC)
    return CallbackRequest(call_id=f"cb-{number}", number=number, hotline="12301", queue="12301-general",
                           source="queue", position_at=now, expires_at=now + timedelta(hours=2), note="排队回拨",
                           **values)


class NoChannels:
    """An Asterisk with no channel up (the only AMI action the settling asks)."""

    async def action(self, action, **_kwargs):
        assert action["Action"] == "CoreShowChannels"
        return []




async def test_attempts_whose_result_was_missed_are_settled_from_the_records(callback_db):
    """Three requests left dialling 2 minutes ago: one whose call never started (given back, its attempt not
    counted: the citizen was not dialled), one whose citizen answered (done), one whose citizen did not
    (retried later); one dialling right now is left alone."""
    db, now = callback_db, datetime.now(UTC)
    long_ago = now - timedelta(minutes=2)
    async with db.transaction() as session:
        rows = {name: _request(number, status=CallbackStatus.DIALING, attempts=1, outbound_call_id=f"out-test-{name}")
                for name, number in (("never", "13800000001"), ("answered", "13800000002"),
                                     ("unanswered", "13800000003"), ("now", "13800000004"))}
        session.add_all(rows.values())
        for name, answered in (("answered", True), ("unanswered", False)):
            session.add(CallRecord(call_id=f"out-test-{name}", started_at=long_ago, ended_at=long_ago,
                                   answered_at=long_ago if answered else None, direction="outbound",
                                   caller_number=rows[name].number))
    async with db.transaction() as session:  # their last change 2 minutes ago, except "now"
        await session.execute(update(CallbackRequest).where(
            CallbackRequest.outbound_call_id.in_([f"out-test-{n}" for n in ("never", "answered", "unanswered")]))
            .values(updated_at=long_ago))

    await callbacks.settle_missed_results(db, NoChannels(), now)

    async with db.session() as session:
        after = {r.outbound_call_id.removeprefix("out-test-"): r
                 for r in (await session.scalars(select(CallbackRequest).where(  # other tests' rows may be here
                     CallbackRequest.outbound_call_id.like("out-test-%")))).all()}
    assert after["never"].status == CallbackStatus.PENDING and after["never"].attempts == 0
    assert "未收到拨号结果" in after["never"].note and after["never"].next_attempt_at > now
    assert after["answered"].status == CallbackStatus.DONE
    assert after["unanswered"].status == CallbackStatus.PENDING and after["unanswered"].attempts == 1
    assert after["unanswered"].next_attempt_at >= now + callbacks.RETRY_AFTER - timedelta(seconds=1)
    assert after["now"].status == CallbackStatus.DIALING


@pytest.mark.stack
async def test_a_callback_the_agents_phone_does_not_take_is_given_back(stack, ami, db, redis, waiter, no_agents):
    """The CTI claimed a request and Asterisk accepted the Originate, but the agent's phone is not registered:
    Asterisk's OriginateResponse says Failure (seen on our own AMI connection too) and the CTI gives the
    request back at once for the next free agent, without counting the attempt against the citizen."""
    phone = stack.settings.sip.agent_extensions[-1]  # registered by no test of this session right now
    failures: list[dict] = []
    ami.on_event("OriginateResponse", lambda _m, event: failures.append(dict(event))
                 if event.get("Response") == "Failure" else None)
    async with db.transaction() as session:
        request = _request("13822226666")
        session.add(request)
    try:
        assert await callbacks.claim(db, request.id, agent_id=1)
        call_id = await callbacks.dial_claimed(db, ami, request, 1, phone)

        async def given_back():
            async with db.session() as session:
                row = await session.get(CallbackRequest, request.id)
            return row if row.status == CallbackStatus.PENDING else None

        row = await waiter(given_back, timeout=60, what="the CTI to give the request back")
        assert row.attempts == 0 and "坐席话机未接通" in row.note, row.note
        assert any(f.get("ActionID", "").endswith(call_id) for f in failures), failures
    finally:
        await callbacks_cancel(db, request.id)


async def callbacks_cancel(db, request_id: int) -> None:
    async with db.transaction() as session:
        await session.execute(update(CallbackRequest).where(CallbackRequest.id == request_id)
                              .values(status=CallbackStatus.CANCELLED))
