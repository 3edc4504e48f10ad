"""An admin edits the 12301 menu in the admin area of the running platform (issue 17 item 2): a broken edit is
refused with its line and reason and changes nothing; a good one reaches the next real call through Asterisk
without a restart, while a call that was already in the menu goes on, whole, with the menu it started in.

Two sources: the call records the CTI wrote from Asterisk's events (IVR_PATH, BUSINESS) and the IVR's own log
(the queue each call was routed to), and the prompt file Asterisk plays, re-made with the new text."""

from __future__ import annotations

import html
import json
import re

import aiohttp
import pytest
from sqlalchemy import select

from cli.democall import originate_citizen
from core import content
from core.calls import CallRecord
from core.settings import CONFIG_DIR
from tests.channels import running

pytestmark = pytest.mark.stack

MENU = "menus/12301.yaml"
REPORT_KEY = '"3": {target: "queue:report", business: report}'
WAIT = "w" * 2  # 1 s per unit


async def _login(base: str, password: str) -> tuple[aiohttp.ClientSession, str]:
    client = aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True))
    page = await (await client.get("/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    response = await client.post("/login", data={"username": "admin", "password": password, "_csrf": token},
                                 allow_redirects=False)
    assert response.status == 302, await response.text()
    home = await (await client.get("/admin/menus")).text()
    return client, re.search(r'name="csrf-token" content="([^"]*)"', home).group(1)


async def test_a_menu_edit_reaches_the_next_call_and_spares_the_call_in_the_menu(stack, ami, db, waiter):
    shipped = (CONFIG_DIR / MENU).read_text(encoding="utf-8")
    assert REPORT_KEY in shipped
    edited_file = stack.settings.var_dir / content.FOLDER / MENU
    prompt_file = stack.asterisk_path(stack.runtime.inside("sounds")) / "12301-menu-main.wav"
    old_prompt = prompt_file.read_bytes()
    client, csrf = await _login(stack.settings.web_url, stack.settings.secrets["admin_password"])

    async def post(text: str | None) -> aiohttp.ClientResponse:
        form = {"_csrf": csrf, "file": MENU, "action": "save" if text is not None else "revert", "text": text or ""}
        return await client.post("/admin/menus/edit", data=form, allow_redirects=False)

    def routed_to(caller: str) -> list[str]:
        """The queues the IVR routed ``caller`` to, from its own log (each line names the channel's caller)."""
        lines = (json.loads(line) for line in stack.log("ivr").splitlines() if line.startswith("{"))
        return [line.get("queue") for line in lines if line.get("event") == "ivr_routed"
                and line.get("caller") == caller and line.get("script") == "ivr"]

    def reloads() -> int:
        return stack.log("ivr").count('"content_reloaded"')

    def more_reloads_than(seen: int):
        async def check() -> bool:
            return reloads() > seen
        return check

    async def record(call_id: str, ended: bool = True) -> CallRecord | None:
        async with db.session() as session:
            found = await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))
        return found if found and (found.ended_at or not ended) else None

    try:
        # A typo in the queue name: refused with the line and the reason; the platform's menu is untouched.
        lines = shipped.splitlines()
        at = next(n for n, line in enumerate(lines, 1) if REPORT_KEY in line)
        refused = await post(shipped.replace(REPORT_KEY, REPORT_KEY.replace("queue:report", "queue:reprot")))
        page = html.unescape(await refused.text())
        assert refused.status == 400 and f"config/{MENU} 第 {at} 行" in page and "未知的队列 'reprot'" in page, page
        assert not edited_file.exists()

        # A citizen already in the menu: keys 3 (report) only after the edit has been taken up.
        before = await originate_citizen(ami, "12301", keys=f"{WAIT * 10}3", caller="13766610301",
                                         hold_seconds=40, delay_seconds=1)

        await waiter(lambda: running(ami, before.call_id, "AGI"), timeout=30,
                     what="the first citizen to be in the IVR's menu")
        seen = reloads()
        saved = await post(shipped.replace(REPORT_KEY, '"3": {target: "queue:consult", business: consult}')
                           .replace("举报请按3", "咨询也可按3"))
        assert saved.status == 303, await saved.text()
        assert (CONFIG_DIR / MENU).read_text(encoding="utf-8") == shipped  # config/ is never written
        await waiter(more_reloads_than(seen), timeout=60, what="the IVR to take up the edited menu")
        assert await record(before.call_id) is None, "the first call must still be in progress"
        assert prompt_file.read_bytes() != old_prompt  # Asterisk plays the new text

        after = await originate_citizen(ami, "12301", keys="3", caller="13766610302", hold_seconds=10,
                                        delay_seconds=1)
        first = await waiter(lambda: record(before.call_id), timeout=120, what="the first call to end")
        second = await waiter(lambda: record(after.call_id), timeout=120, what="the second call to end")

        assert first.ivr_path.startswith("main:3") and first.business == "report", first.ivr_path
        assert second.ivr_path.startswith("main:3") and second.business == "consult", second.ivr_path
        # The IVR's own account: each call was routed once, to the queue its menu said (nothing dropped).
        assert routed_to("13766610301") == ["12301-report"] and routed_to("13766610302") == ["12301-consult"]
        assert '"ivr_failed"' not in stack.log("ivr")
    finally:
        seen = reloads()
        if edited_file.exists():
            reverted = await post(None)
            assert reverted.status == 303, await reverted.text()
            await waiter(more_reloads_than(seen), timeout=60, what="the IVR to take up the shipped menu again")
        await client.close()
