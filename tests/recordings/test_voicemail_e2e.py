"""Voice messages through the real Asterisk: queue timeout -> message -> ticket, callback, transcript."""

from __future__ import annotations

from sqlalchemy import select

from cli.democall import citizen_speech, originate_citizen
from cti.models import CallbackRequest, CallRecord
from recordings.models import Recording
from tickets.models import Kind, Source, State, Ticket


async def _recording(db, call_id: str, kind: str):
    async with db.session() as session:
        return await session.scalar(select(Recording).where(Recording.call_id == call_id, Recording.kind == kind))


async def test_caller_nobody_answers_leaves_a_message_that_becomes_a_ticket_with_callback(stack, ami, db, waiter,
                                                                                          no_agents):
    speech = citizen_speech(stack.settings, "demo-report")
    # 0 = an agent; nobody is logged in, so the queue offers a message (1) at once.
    call = await originate_citizen(ami, "12365", keys="0wwwwwwww1", caller="13611112222", hold_seconds=3,
                                   speech_path=speech, delay_seconds=6, speech_delay_seconds=9)

    async def transcribed():
        row = await _recording(db, call.call_id, "voicemail")
        return row if row and row.transcript_status not in ("pending",) else None

    row = await waiter(transcribed, timeout=120, what="the voice message to be filed and transcribed")
    assert row.transcript_status == "done", row.transcript_note
    assert row.duration_seconds >= 3  # the citizen's sentence, not just the beep
    assert row.format == "opus" and (stack.settings.recordings_dir / row.path).stat().st_size == row.size_bytes
    assert row.transcript  # real recognizer output on real audio (a Korean test model on Mandarin speech)

    async with db.session() as session:
        record = await session.scalar(select(CallRecord).where(CallRecord.call_id == call.call_id))
        ticket = await session.scalar(select(Ticket).where(Ticket.number == row.ticket_number))
        callback = await session.scalar(select(CallbackRequest).where(CallbackRequest.call_id == call.call_id))
    assert record.voicemail_file and "queue-timeout:1" in record.ivr_path
    assert record.abandoned is False
    assert ticket.kind == Kind.UNCLASSIFIED and ticket.state == State.UNCLASSIFIED
    assert ticket.source == Source.VOICEMAIL and ticket.hotline == "12365"
    assert ticket.complainant_phone == "13611112222"
    assert "queue-timeout:1" in ticket.description
    assert ticket.transcript == row.transcript
    assert callback.number == "13611112222" and callback.source == "voicemail"
    assert callback.ticket_number == ticket.number and callback.not_before is not None


async def test_a_message_too_short_to_hold_anything_opens_no_ticket(stack, ami, db, waiter, no_agents):
    # Keys straight through to the message; the citizen hangs up as soon as Asterisk records (after the
    # instructions and the beep), whatever the prompts' lengths: nothing but the beep is in the file.
    call = await originate_citizen(ami, "12301", keys="0wwwwwwww1", caller="13622223333", hold_seconds=120,
                                   delay_seconds=6)

    async def citizen_once_recording():
        reply = await ami.action({"Action": "CoreShowChannels"}, as_list=True, timeout=10)
        channels = {m.get("Uniqueid"): m for m in reply if m.get("Event") == "CoreShowChannel"}
        hotline_side, citizen = channels.get(call.call_id), channels.get(call.citizen_id)
        return citizen["Channel"] if hotline_side and citizen and hotline_side.get("Application") == "Record" \
            else None

    citizen_channel = await waiter(citizen_once_recording, timeout=90, what="Asterisk to record the message")
    await ami.action({"Action": "Hangup", "Channel": citizen_channel, "Cause": "16"})

    async def filed():
        return await _recording(db, call.call_id, "voicemail")

    row = await waiter(filed, timeout=90, what="the short message to be judged")
    assert row.transcript_status == "too_short"
    assert row.ticket_number is None
    async with db.session() as session:
        tickets = (await session.scalars(select(Ticket).where(Ticket.complainant_phone == "13622223333"))).all()
    assert tickets == []


async def test_after_hours_caller_hears_the_hours_and_leaves_a_message(stack, ami, db, redis, waiter):
    from core.hours import set_override

    await set_override(redis, "12301", "closed")  # the live switch a lead uses; same path as the calendar's
    try:
        speech = citizen_speech(stack.settings, "demo-complaint")
        # Greeting, hours and instructions take about 26 s: the citizen speaks after them.
        call = await originate_citizen(ami, "12301", keys="", caller="13633334444", hold_seconds=2,
                                       speech_path=speech, delay_seconds=1, speech_delay_seconds=30)

        async def filed():
            row = await _recording(db, call.call_id, "voicemail")
            return row if row and row.transcript_status != "pending" else None

        row = await waiter(filed, timeout=120, what="the after-hours message to be filed")
    finally:
        await set_override(redis, "12301", None)
    async with db.session() as session:
        record = await session.scalar(select(CallRecord).where(CallRecord.call_id == call.call_id))
        ticket = await session.scalar(select(Ticket).where(Ticket.number == row.ticket_number))
    assert record.ivr_path.startswith("after-hours")
    assert record.queued_at is None  # never offered to a queue after hours
    assert ticket is not None and ticket.source == Source.VOICEMAIL and ticket.hotline == "12301"
    assert row.transcript_status == "done"
