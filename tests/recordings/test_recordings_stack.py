"""Call recordings through the real stack: MixMonitor's raw stereo file -> the worker -> Ogg Opus.

Issue 13, item 3: the stored file keeps the caller (left) and what the caller heard (right) apart, checked
against Asterisk's own raw file and in Chromium. Item 1 (part): a spool file without a filed recording is
reported by `./hotline recordings check` once it is idle for the grace period, and filed when the worker
is back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from playwright.async_api import async_playwright
from sqlalchemy import select

from cli.democall import citizen_speech, originate_citizen
from cli.stack import supervisorctl
from core.settings import REPO_ROOT
from cti.models import CallRecord
from recordings.models import Recording
from recordings.opus import stream_layout
from recordings.storage import channels_problem, opus_levels, raw_levels
from tests.desk.test_browser import CHROMIUM_ARGS, DESKTOP, open_as

GRACE = "3"  # seconds, instead of the configured 10 minutes


def recordings_check(grace: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if grace is not None:
        env["HOTLINE_RECORDINGS_SPOOL_GRACE_SECONDS"] = grace
    return subprocess.run([sys.executable, "-m", "cli", "recordings", "check"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


async def ended_call(db, waiter, call_id: str) -> CallRecord:
    async def ended():
        async with db.session() as session:
            record = await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))
            return record if record and record.ended_at else None

    return await waiter(ended, timeout=90, what=f"call {call_id} to end")


async def filed_recording(db, waiter, call_id: str) -> Recording:
    async def filed():
        async with db.session() as session:
            return await session.scalar(select(Recording).where(Recording.call_id == call_id,
                                                                Recording.kind == "call"))

    return await waiter(filed, timeout=120, what=f"the recording of {call_id} to be filed")


async def place_recorded_call(stack, ami, caller: str):
    # The citizen speaks (left) while the IVR menu and queue prompts play to them (right).
    return await originate_citizen(ami, "12301", keys="1", caller=caller, hold_seconds=8,
                                   speech_path=citizen_speech(stack.settings, "demo-complaint"), delay_seconds=9)


async def test_unfiled_spool_file_is_reported_then_filed_when_the_worker_is_back(stack, ami, db, waiter, tmp_path,
                                                                                 no_agents):
    stopped = supervisorctl(stack.settings, "stop", "recordings")
    assert "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    try:
        call = await place_recorded_call(stack, ami, "13955550001")
        record = await ended_call(db, waiter, call.call_id)
        raw = stack.recording_path(record.recording_file)
        assert raw.exists(), raw
        original = tmp_path / "original.raw"
        shutil.copy(raw, original)  # Asterisk's own file, to compare the stored copy with

        # With the configured grace (10 minutes) a just-finished call is not a problem yet.
        fresh = recordings_check()
        assert call.call_id not in fresh.stdout, fresh.stdout

        async def reported():
            result = recordings_check(GRACE)
            return result if call.call_id in result.stdout else None

        result = await waiter(reported, timeout=30, interval=1, what="recordings check to report the spool file")
        assert result.returncode == 1
        line = next(line for line in result.stdout.splitlines() if call.call_id in line)
        assert "未归档" in line and "通话已于" in line, line
    finally:
        started = supervisorctl(stack.settings, "start", "recordings")
        assert "started" in started.stdout or "already started" in started.stdout, started.stdout

    row = await filed_recording(db, waiter, call.call_id)
    stored = stack.settings.recordings_dir / row.path
    assert row.format == "opus" and stored.stat().st_size == row.size_bytes
    assert not raw.exists()
    after = recordings_check(GRACE)
    assert call.call_id not in after.stdout
    assert "暂存区" not in after.stdout, after.stdout  # nothing else left unfiled either

    # Both channels kept apart, measured against the raw file MixMonitor wrote.
    assert stream_layout(stored) == (2, 1, 2, 0)
    before, kept = raw_levels(original), opus_levels(stored)
    assert before.difference_db > max(before.left_db, before.right_db) - 20, before  # a real two-sided call
    assert channels_problem(before, kept) is None, (before, kept)
    assert kept.difference_db > before.difference_db - 3, (before, kept)


async def test_a_stored_call_plays_in_chromium_with_caller_and_far_side_apart(stack, ami, db, waiter, no_agents):
    call = await place_recorded_call(stack, ami, "13955550002")
    row = await filed_recording(db, waiter, call.call_id)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium",
                                           args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"])
        try:
            page = await open_as(browser, stack.settings.web_url, "lead1", stack.settings.secrets["demo_password"],
                                 DESKTOP)
            # What the desk's player gets, decoded by Chromium's own Ogg Opus decoder.
            decoded = await page.evaluate("""async (url) => {
                const data = await (await fetch(url)).arrayBuffer();
                const audio = await new OfflineAudioContext(2, 8000, 8000).decodeAudioData(data);
                const channel = (c) => audio.getChannelData(c);
                let left = 0, right = 0, difference = 0;
                for (let i = 0; i < audio.length; i++) {
                    const l = channel(0)[i], r = channel(1)[i];
                    left += l * l; right += r * r; difference += (l - r) * (l - r);
                }
                const db = (sum) => 10 * Math.log10(sum / audio.length + 1e-20);
                return {channels: audio.numberOfChannels, seconds: audio.duration,
                        left: db(left), right: db(right), difference: db(difference)};
            }""", f"/recordings/{row.id}")
            # Played through an <audio> element: both outputs of a channel splitter carry sound.
            played = await page.evaluate("""async (url) => {
                const element = new Audio(url);
                const context = new AudioContext();
                const split = context.createChannelSplitter(2);
                context.createMediaElementSource(element).connect(split);
                const meters = [context.createAnalyser(), context.createAnalyser()];
                split.connect(meters[0], 0);
                split.connect(meters[1], 1);
                const buffer = new Float32Array(2048), energy = [0, 0];
                let differs = 0;
                await element.play();
                while (!element.ended && element.currentTime < 12) {
                    await new Promise((done) => setTimeout(done, 50));
                    const now = meters.map((meter) => {
                        meter.getFloatTimeDomainData(buffer);
                        return buffer.reduce((sum, v) => sum + v * v, 0);
                    });
                    energy[0] += now[0]; energy[1] += now[1];
                    if (Math.abs(now[0] - now[1]) > 0.1 * Math.max(now[0], now[1], 1e-9)) differs++;
                }
                return {energy, differs};
            }""", f"/recordings/{row.id}")
        finally:
            await browser.close()
    assert decoded["channels"] == 2 and abs(decoded["seconds"] - row.duration_seconds) < 0.5, decoded
    # The caller's speech (left) and the prompts they heard (right) are different signals: their
    # difference is about as loud as the channels themselves, not silence as in a mono copy.
    assert decoded["difference"] > max(decoded["left"], decoded["right"]) - 10, decoded
    assert min(played["energy"]) > 0 and played["differs"] >= 5, played
