"""Issue 12 (items 1 and 15, applied to recordings): /recordings/{id} must not tell someone who may not
hear a recording whether its id exists. Recording ids are sequential, so a 404 for a missing id next
to a 403 for a real one counted every recording on the platform, and told which ids to try once a
link made them playable."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from core.web import DB_KEY
from recordings.models import Recording
from tests.desk.test_access_rules import _recording


async def _answer(desk, recording_id: int, accept: str) -> tuple[int, str]:
    response = await desk.client.get(f"/recordings/{recording_id}", headers={"Accept": accept,
                                                                              "Range": "bytes=-100"})
    text = (await response.read()).decode(errors="replace")
    return response.status, re.sub(r'content="[^"]*"', "", text)  # the page's CSRF token aside


async def test_a_recording_one_may_not_hear_answers_as_a_missing_one(desk):
    recording = await _recording(desk)  # agent1's colleagues' call: nothing links it to 四川
    async with desk.app[DB_KEY].session() as db:
        missing = (await db.scalar(select(func.max(Recording.id)))) + 1000
    await desk.login("sc_handler")
    for accept in ("text/html", "application/json"):
        hidden, absent = await _answer(desk, recording.id, accept), await _answer(desk, missing, accept)
        assert hidden == absent, accept
        assert hidden[0] == 403 and "录音" in hidden[1]
    await desk.login("lead1")  # who may hear every recording still tells a missing one apart
    assert (await _answer(desk, recording.id, "text/html"))[0] == 206
    status, text = await _answer(desk, missing, "text/html")
    assert status == 404 and "录音不存在" in text
