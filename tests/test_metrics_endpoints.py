"""Issue 20 item 1: every metrics endpoint (each Python service's, Asterisk's res_prometheus) scraped over
HTTP around one real call from the carrier through the IVR and a queue to a SIPp agent, and a ticket
registered on the desk: each endpoint has counted them, and `./hotline status` prints the same figures."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from sqlalchemy import func, select

from cli.metrics import ASTERISK_METRICS, endpoint, endpoints, total
from core.metrics import parse_metrics
from recordings.models import Recording
from sipdrivers.carrier import run_citizen_calls, ulaw_from_wav
from sipdrivers.phones import agents_on_phones
from tests.security.test_authorization_matrix import COMPLAINT, login

pytestmark = pytest.mark.stack


def scrape_all(settings) -> dict[str, dict]:
    return {e.name: parse_metrics(e.scrape()) for e in endpoints(settings)}


def _speech(stack, tmp_path):
    from cli.democall import citizen_speech

    wav = stack.runtime.host_path(stack.runtime.inside("sounds", "demo-complaint.wav"))
    if not wav.exists():
        citizen_speech(stack.settings, "demo-complaint")
    return ulaw_from_wav(wav, tmp_path / "citizen.ulaw")


async def test_each_endpoint_counts_a_real_call_and_status_reads_the_same_figures(
        stack, ami, db, redis, waiter, tmp_path):
    settings = stack.settings
    before = await asyncio.to_thread(scrape_all, settings)
    caller = "13700002001"
    async with agents_on_phones(settings, stack.runtime, ami, redis, db, {"agent1": "8001"}):
        cti = await waiter(lambda: asyncio.to_thread(lambda: parse_metrics(endpoint(settings, "cti").scrape())),
                           what="the CTI's endpoint")
        assert total(cti, "hotline_agents", state="ready") >= 1  # agent1, from the CTI's agent sessions
        # 2 = complaint, 1 = travel agencies: the 12301-complaint queue, answered by agent1's SIPp phone.
        sipp = asyncio.create_task(asyncio.to_thread(
            run_citizen_calls, settings, "12301", "21", [caller], _speech(stack, tmp_path), hold_ms=8000))

        async def in_progress():
            now = await asyncio.to_thread(lambda: {name: parse_metrics(endpoint(settings, name).scrape())
                                                   for name in ("cti", "asterisk")})
            return now if (total(now["cti"], "hotline_calls_in_progress", hotline="12301") >= 1
                           and total(now["asterisk"], "asterisk_channels_count") >= 1) else None

        now = await waiter(in_progress, timeout=60, interval=0.5, what="the call in progress on the CTI and Asterisk")
        during = now["cti"]
        assert {labels["node"] for labels, v in during["hotline_calls_in_progress"] if v} == {"node1"}
        result = await sipp
        assert result.returncode == 0 and result.successful == 1, result.output

    # A ticket registered on the desk, and its page opened by number.
    client, csrf = await login(settings.web_url, "agent1", settings.secrets["demo_password"])
    try:
        created = await client.post("/api/tickets", json=COMPLAINT, headers={"X-CSRF-Token": csrf})
        assert created.status == 201, await created.text()
        number = (await created.json())["number"]
        assert (await client.get(f"/tickets/{number}")).status == 200
    finally:
        await client.close()

    def grew(after, before_, name, **labels) -> float:
        return total(after, name, **labels) - total(before_, name, **labels)

    missing: list[str] = []

    async def counted():
        after = await asyncio.to_thread(scrape_all, settings)
        missing[:] = [what for what, (service, name) in {
            "call ended on the CTI": ("cti", "hotline_calls_ended_total"),
            "ticket step on the scheduler": ("scheduler", "hotline_ticket_actions_total"),
            "call on Asterisk": ("asterisk", "asterisk_calls_sum")}.items()
            if grew(after[service], before[service], name) < 1]
        return None if missing else after

    try:
        after = await waiter(counted, timeout=60, interval=1, what="the call and the ticket counted everywhere")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; not counted: {missing}") from None
    cti, b = after["cti"], before["cti"]
    assert grew(cti, b, "hotline_calls_total", hotline="12301", node="node1") == 1
    assert grew(cti, b, "hotline_screen_pops_total") >= 1
    assert grew(cti, b, "hotline_ring_to_pop_seconds_count") == grew(cti, b, "hotline_screen_pops_total")
    assert grew(cti, b, "hotline_cti_lag_seconds_count") > 10  # every AMI event of the call
    # The CTI's own share is measured for the same events and is part of the lag behind Asterisk.
    assert grew(cti, b, "hotline_cti_own_seconds_count") == grew(cti, b, "hotline_cti_lag_seconds_count")
    assert 0 < grew(cti, b, "hotline_cti_own_seconds_sum") <= grew(cti, b, "hotline_cti_lag_seconds_sum")
    assert total(cti, "hotline_ami_connected", node="node1") == 1
    assert "hotline_ami_reconnects_total" in cti and "hotline_ami_half_open_total" in cti
    assert grew(after["ivr"], before["ivr"], "hotline_fastagi_roundtrip_seconds_count") > 0
    desk = after["agent_desk"]
    assert grew(desk, before["agent_desk"], "hotline_http_requests_total",
                route="/api/tickets", method="POST", status="201") == 1
    assert total(desk, "hotline_http_requests_total", route=r"/tickets/{number}", status="200") >= 1
    routes = {labels["route"] for labels, _ in desk["hotline_http_requests_total"]}
    assert not any(number in route for route in routes), routes  # the pattern, never the path sent
    sched = after["scheduler"]
    assert grew(sched, before["scheduler"], "hotline_ticket_actions_total") >= 1
    assert {labels["state"] for labels, _ in sched["hotline_notices"]} >= {"pending", "failed", "uncertain"}
    assert total(sched, "hotline_disk_free_bytes") > 0
    # Recordings: the gauges agree with the database (the second source).
    async with db.session() as session:
        rows = await session.scalar(select(func.count()).select_from(Recording))
    rec = await waiter(lambda: asyncio.to_thread(lambda: parse_metrics(endpoint(settings, "recordings").scrape())))
    assert total(rec, "hotline_transcriptions") >= rows - 1  # the worker may file the call's meanwhile
    assert {labels["age"] for labels, _ in rec["hotline_recordings_spool_files"]} == {"fresh", "stale"}
    # Asterisk's own, behind basic auth.
    for name in ASTERISK_METRICS:
        assert name in after["asterisk"], name
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(endpoint(settings, "asterisk").url, timeout=5)
    assert refused.value.code == 401

    # `./hotline status` prints the same figures from the same endpoints.
    status = subprocess.run([sys.executable, "-m", "cli", "status"], capture_output=True, text=True,
                            env=dict(os.environ), timeout=60)
    for each in endpoints(settings):
        assert f"OK   metrics     {each.name}: {each.url}" in status.stdout, status.stdout
    now = parse_metrics(endpoint(settings, "cti").scrape())
    assert f"calls since the CTI started: {total(now, 'hotline_calls_total'):.0f}" in status.stdout, status.stdout
