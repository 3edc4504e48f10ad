"""Issue 12 items 3, 12 and 15 on the desk in process: the playback audit for every Range form, the
return address after log-in, and one answer for a ticket that is missing or another unit's."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

import pytest
from sqlalchemy import select, update

from core.models import User
from core.web import DB_KEY
from cti.models import CallRecord
from recordings.access import LISTENING_WINDOW
from recordings.models import PlaybackLog, Recording
from tickets.models import Ticket, TicketCall

AUDIO = b"RIFF" + bytes(range(256)) * 40  # 10 244 bytes


async def _recording(desk) -> Recording:
    call_id = f"ax-{uuid.uuid4().hex[:12]}"
    (desk.settings.recordings_dir / "t").mkdir(parents=True, exist_ok=True)
    (desk.settings.recordings_dir / "t" / f"{call_id}.wav").write_bytes(AUDIO)
    async with desk.app[DB_KEY].transaction() as db:
        db.add(CallRecord(call_id=call_id, hotline="12301", caller_number="13800000001",
                          started_at=datetime.now(UTC) - timedelta(minutes=2)))
        recording = Recording(call_id=call_id, kind="call", path=f"t/{call_id}.wav", format="wav")
        db.add(recording)
    return recording


async def _plays(desk, recording: Recording) -> list[PlaybackLog]:
    async with desk.app[DB_KEY].session() as db:
        return list((await db.scalars(select(PlaybackLog).where(PlaybackLog.recording_id == recording.id)
                                      .order_by(PlaybackLog.id))).all())


async def _user_id(desk, username: str) -> int:
    async with desk.app[DB_KEY].session() as db:
        return await db.scalar(select(User.id).where(User.username == username))


# Each Range form with the bytes aiohttp serves for it (None: 416, nothing sent).
RANGES = [
    (None, AUDIO), ("bytes=0-", AUDIO), ("bytes=00-", AUDIO), ("bytes=000-9", AUDIO[:10]),
    ("bytes=-100", AUDIO[-100:]), ("bytes=-0", AUDIO), ("bytes=-99999999", AUDIO), ("bytes=100-", AUDIO[100:]),
    ("bytes=5000-5001", AUDIO[5000:5002]), ("BYTES=0-10", AUDIO[:11]), ("bytes=0-99999999", AUDIO),
    ("bytes=0-1,5-9", None), ("bytes=-5,0-", None), ("bytes=abc", None), ("bytes=99999-", None),
    ("bytes=5-1", None), ("bytes= 0-10", None), ("items=0-10", None), ("bytes=", None),
]


@pytest.mark.parametrize(("range_header", "expected"), RANGES, ids=[str(r) for r, _ in RANGES])
async def test_every_response_that_sends_recording_bytes_is_audited_once(desk, range_header, expected):
    recording = await _recording(desk)
    await desk.login("lead1")
    headers = {"Range": range_header} if range_header is not None else {}
    response = await desk.client.get(f"/recordings/{recording.id}", headers=headers)
    body = await response.read()
    plays = await _plays(desk, recording)
    if expected is None:
        assert response.status == 416 and body == b"" and plays == []
        return
    assert response.status == (200 if range_header is None else 206) and body == expected
    assert len(plays) == 1
    row = plays[0]
    assert row.user_id == await _user_id(desk, "lead1") and row.client_address == "127.0.0.1"
    assert row.range_header == (range_header or "") and datetime.now(UTC) - row.at < timedelta(minutes=1)


async def test_one_listening_is_one_row_and_a_later_or_elsewhere_listening_another(desk):
    recording = await _recording(desk)
    url = f"/recordings/{recording.id}"
    await desk.login("lead1")
    assert (await desk.client.head(url)).status == 200
    assert await _plays(desk, recording) == []  # a HEAD sends no recording
    first = await desk.client.get(url, headers={"Range": "bytes=-4000", "X-Forwarded-For": "10.1.2.3"})
    assert first.status == 206 and len(await first.read()) == 4000
    for seek in ("bytes=0-", "bytes=5000-", "bytes=-10"):  # the browser seeking within the same listening
        assert (await desk.client.get(url, headers={"Range": seek})).status == 206
    plays = await _plays(desk, recording)
    assert [(p.range_header, p.forwarded_for) for p in plays] == [("bytes=-4000", "10.1.2.3")]

    async with desk.app[DB_KEY].transaction() as db:  # that listening ended a while ago
        await db.execute(update(PlaybackLog).where(PlaybackLog.id == plays[0].id)
                         .values(at=datetime.now(UTC) - LISTENING_WINDOW - timedelta(seconds=5)))
    assert (await desk.client.get(url, headers={"Range": "bytes=00-"})).status == 206
    async with desk.app[DB_KEY].transaction() as db:  # as if the last one came from another machine
        await db.execute(update(PlaybackLog).where(PlaybackLog.recording_id == recording.id)
                         .values(client_address="10.9.9.9"))
    assert (await desk.client.get(url, headers={"Range": "bytes=100-200"})).status == 206
    await desk.login("agent1")
    assert (await desk.client.get(url)).status == 403  # refused: nothing played, nothing audited
    assert [p.range_header for p in await _plays(desk, recording)] == ["bytes=-4000", "bytes=00-", "bytes=100-200"]


async def _login_with_next(desk, next_value: str):
    page = await (await desk.client.get(f"/login?next={quote(next_value, safe='')}")).text()
    shown = re.search(r'name="next" value="([^"]*)"', page).group(1)
    token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    response = await desk.client.post("/login", data={
        "username": "agent1", "password": desk.settings.secrets["demo_password"], "_csrf": token,
        "next": next_value}, allow_redirects=False)
    return shown, response


@pytest.mark.parametrize("hostile", [
    "/\t/127.0.0.3:8099/x", "/\n/127.0.0.3:8099/x", "/\r\n/127.0.0.3/x", "//127.0.0.3:8099/x",
    "/\\127.0.0.3:8099/x", "\\/127.0.0.3/x", "/\\/127.0.0.3/x", " //127.0.0.3/x", "/ /127.0.0.3/x",
    "/\x00/127.0.0.3", "/\x0b/127.0.0.3", "/\u3000/127.0.0.3", "/\u200b/127.0.0.3", "http://127.0.0.3/x",
    "https:/127.0.0.3", "javascript:alert(1)", "127.0.0.3/x", "",
])
async def test_log_in_returns_only_to_a_same_site_path(desk, hostile):
    shown, response = await _login_with_next(desk, hostile)
    assert response.status == 302 and response.headers["Location"] == "/desk"
    assert shown == ""


async def test_log_in_returns_to_the_page_asked_for(desk):
    target = "/tickets?state=pending&province=广东省"
    shown, response = await _login_with_next(desk, target)
    assert response.status == 302 and unquote(response.headers["Location"]) == target
    assert shown == target.replace("&", "&amp;")


async def test_the_ticket_page_answers_another_units_ticket_as_a_missing_one(desk):
    await desk.login("agent1")
    created = await desk.post_json("/api/tickets", {
        "kind": "complaint", "hotline": "12301", "description": "导游强迫购物", "complainant_phone": "13800000001",
        "complainant_name": "张三", "respondent_name": "某旅行社", "complaint_object": "旅行社及导游领队",
        "event_category": "强迫或变相强迫购物", "province": "广东省", "city": "广州市", "county": "天河区"})
    assert created.status == 201, await created.text()
    number = (await created.json())["number"]
    missing = str(int(number) + 1000) if not number.startswith("9") else "2" + number[1:]
    await desk.login("sc_handler")  # 四川: not this unit's ticket
    other, absent = await desk.client.get(f"/tickets/{number}"), await desk.client.get(f"/tickets/{missing}")
    other_text, absent_text = await other.text(), await absent.text()
    assert other.status == absent.status == 404
    assert other_text.replace(number, "N") == absent_text.replace(missing, "N")
    assert "不存在" in other_text
    api = await desk.client.get(f"/api/tickets/{number}")
    assert api.status == 404  # the JSON API already answered so


async def test_a_link_stored_by_someone_not_allowed_neither_plays_nor_shows_on_the_ticket_page(desk):
    recording = await _recording(desk)  # a call nobody in 四川 took, from a number not on their ticket
    await desk.login("agent1")
    created = await desk.post_json("/api/tickets", {
        "kind": "complaint", "hotline": "12301", "description": "导游强迫购物", "complainant_phone": "13900000009",
        "complainant_name": "李四", "respondent_name": "某旅行社", "complaint_object": "旅行社及导游领队",
        "event_category": "强迫或变相强迫购物", "province": "四川省", "city": "成都市", "county": "武侯区"})
    number = (await created.json())["number"]
    async with desk.app[DB_KEY].transaction() as db:  # as the old 关联来电 let sc_handler store it
        ticket_id = await db.scalar(select(Ticket.id).where(Ticket.number == number))
        db.add(TicketCall(ticket_id=ticket_id, call_id=recording.call_id,
                          linked_by_id=await _user_id(desk, "sc_handler")))
    await desk.login("sc_handler")
    page = await desk.page(f"/tickets/{number}")
    assert "导游强迫购物" in page and f"/recordings/{recording.id}" not in page
    assert (await desk.client.get(f"/recordings/{recording.id}", headers={"Range": "bytes=-100"})).status == 403
    assert await _plays(desk, recording) == []
    await desk.login("lead1")  # the lead may hear every recording, and the page offers it
    assert f'src="/recordings/{recording.id}"' in await desk.page(f"/tickets/{number}")
