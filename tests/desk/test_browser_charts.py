"""The report's and the evaluation's charts are ECharts in Chromium: drawn on a canvas, a tooltip with the
figure on hover, and a click that drills down (a day of the report, a month of the evaluation)."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page, async_playwright, expect

from cti.models import CallRecord, CallState
from tests.desk.test_browser import CHROMIUM_ARGS, DESKTOP, open_as

pytestmark = pytest.mark.stack

DAY = dt.date(2025, 6, 10)  # a past day of its own: no other test's calls fall on it


async def _hover_the_middle(page: Page, chart: str) -> None:
    canvas = page.locator(f"{chart} canvas").first
    await canvas.scroll_into_view_if_needed()  # the mouse only reaches what is in the viewport
    box = await canvas.bounding_box()
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.7)


async def test_report_and_evaluation_charts_have_tooltips_and_drill_down(stack, db):
    zone = ZoneInfo(stack.settings.timezone)
    arrival = dt.datetime.combine(DAY, dt.time(10), zone)
    tag = uuid.uuid4().hex[:8]
    async with db.transaction() as session:  # three calls into 12301 that day: two answered, one abandoned
        for n, answered in enumerate((True, True, False)):
            start = arrival + dt.timedelta(minutes=n)
            session.add(CallRecord(
                call_id=f"chart-{tag}-{n}", direction="inbound", hotline="12301", did="12301", state=CallState.ENDED,
                started_at=start, queued_at=start + dt.timedelta(seconds=5),
                answered_at=start + dt.timedelta(seconds=15) if answered else None,
                ended_at=start + dt.timedelta(seconds=120), abandoned=not answered, wait_seconds=10,
                talk_seconds=100 if answered else None))
    period = f"from={DAY - dt.timedelta(days=1)}&to={DAY + dt.timedelta(days=1)}&hotline=12301"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await open_as(browser, stack.settings.web_url, "lead1",
                                 stack.settings.secrets["demo_password"], DESKTOP)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{stack.settings.web_url}/report?{period}")
            await expect(page.locator("#chart-days canvas").first).to_be_visible()
            await expect(page.locator("#chart-waits canvas").first).to_be_visible()
            await _hover_the_middle(page, "#chart-days")
            tooltip = page.locator("#chart-days > div").filter(has_text="呼入总数")
            await expect(tooltip.last).to_contain_text("06-10")
            await expect(tooltip.last).to_contain_text("3")   # calls that day
            await expect(tooltip.last).to_contain_text("坐席接通")
            await page.mouse.down()
            await page.mouse.up()
            await page.wait_for_url(f"**/report?from={DAY}&to={DAY}&hotline=12301")
            await expect(page.locator("h1.page-title")).to_contain_text(f"{DAY} 至 {DAY}")

            # The evaluation of that month: a line of the score per month; a click opens that month's report.
            await page.goto(f"{stack.settings.web_url}/evaluation?from={DAY.replace(day=1)}&to={DAY}&hotline=12301")
            await expect(page.locator("#chart-months canvas").first).to_be_visible()
            await _hover_the_middle(page, "#chart-months")
            await expect(page.locator("#chart-months > div").filter(has_text="综合得分").last).to_contain_text("2025-06")
            await page.mouse.down()
            await page.mouse.up()
            await page.wait_for_url(f"**/report?from={DAY.replace(day=1)}&to={DAY}&hotline=12301")
            assert errors == []
        finally:
            await browser.close()
