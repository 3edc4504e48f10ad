"""Issue 2's first end-to-end test: a real call into 12301 through Asterisk."""

from __future__ import annotations

import subprocess
from datetime import timedelta

from sqlalchemy import select

from cli.democall import citizen_speech, originate_citizen
from cti.models import CallRecord
from sipdrivers.audio import duration_seconds, raw_stereo_channels, rms


async def test_call_into_12301_is_answered_routed_by_the_ivr_recorded_and_logged(stack, ami, db, waiter):
    speech = citizen_speech(stack.settings, "demo-complaint")
    # The citizen keys 1 once the IVR menu is playing (after the ~5 s greeting and recording notice).
    call = await originate_citizen(ami, "12301", keys="1", caller="13912345678", hold_seconds=10,
                                   speech_path=speech, delay_seconds=9)

    async def ended_record():
        async with db.session() as session:
            record = await session.scalar(select(CallRecord).where(CallRecord.call_id == call.call_id))
            return record if record and record.ended_at else None

    record = await waiter(ended_record, timeout=60, what="the call record to be closed")
    assert record.caller_number == "13912345678"
    assert record.hotline == "12301" and record.did == "12301"
    assert record.started_at < record.ended_at
    call_length = (record.ended_at - record.started_at).total_seconds()
    assert timedelta(seconds=5) < record.ended_at - record.started_at < timedelta(seconds=60)
    # The FastAGI IVR ran: the caller's choice (1 = consultation) is on the record.
    assert record.business == "consult"
    assert record.ivr_path and "main" in record.ivr_path

    # Recorded from answer to hangup: the caller's side carries real speech.
    assert record.recording_file and record.recording_file.endswith(".raw")
    path = stack.recording_path(record.recording_file)
    assert path.exists(), path
    caller_side, heard_side = raw_stereo_channels(path)
    assert rms(caller_side) > 200, "the citizen's speech should be in the recording"
    assert rms(heard_side) > 200, "the IVR prompts the caller heard should be in the recording"
    # Recording runs from the end of the recording notice (12365 standard 5.4) to hangup.
    notice = stack.asterisk_path(stack.runtime.inside("sounds", "recording-notice-12301.wav"))
    notice_seconds = float(subprocess.run(["soxi", "-D", str(notice)], capture_output=True, text=True).stdout)
    # Never longer than the call after the notice (nothing recorded before the citizen was told); shorter
    # by the set-up before the notice (answer, the IVR's first AGI round trip), which grows with the load.
    after_notice = call_length - notice_seconds
    assert after_notice - 3.0 < duration_seconds(caller_side) < after_notice + 0.5, (call_length, notice_seconds)
