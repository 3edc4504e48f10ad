"""The admin pages 电话分机 and 队列 in process (no CTI here): admin only, list and search, a bad form refused
in Chinese with nothing written, a new phone's password shown once and kept only as its digest, and a change
the CTI cannot apply yet kept and said so. On the real stack: tests/desk/test_browser_admin_telephony.py."""

from __future__ import annotations

import re

from core import provisioning
from core.web import DB_KEY


async def test_phone_and_queue_pages_list_search_refuse_create_and_say_when_not_yet_live(desk):
    await desk.login("agent1")
    assert (await desk.client.get("/admin/extensions", allow_redirects=False)).status == 403
    await desk.client.post("/logout", data={"_csrf": desk.csrf}, allow_redirects=False)
    await desk.login("admin", desk.settings.secrets["admin_password"])
    db = desk.app[DB_KEY]

    page = await desk.page("/admin/extensions")
    assert all(ext in page for ext in ("8001", "8005", "8101")) and 'href="/admin/queues"' in page
    page = await desk.page("/admin/extensions?q=班长")
    assert "8101" in page and "8001" not in page

    response = await desk.client.post("/admin/extensions", data={"_csrf": desk.csrf, "extension": "12a",
                                                                 "label": "坏分机", "kind": "agent"})
    assert response.status == 400 and "8 开头的 4 位数字" in await response.text()
    assert await provisioning.get_phone(db, "12a") is None

    response = await desk.client.post("/admin/extensions", data={"_csrf": desk.csrf, "extension": "8090",
                                                                 "label": "坐席 90", "kind": "agent"})
    page = await response.text()
    assert response.status == 200, page
    password = re.search(r'id="sip-password"><code>([a-z0-9]+)</code>', page).group(1)
    assert "尚未生效" in page and "CTI" in page  # kept, and the admin is told it is not live yet
    phone = await provisioning.get_phone(db, "8090")
    assert phone.md5_cred == provisioning.md5_cred("8090", password) and phone.enabled
    assert password not in await desk.page("/admin/extensions/8090")  # shown once only

    page = await desk.page("/admin/queues")
    assert "12301-complaint" in page and "轮询（接着上次）" in page
    response = await desk.client.post("/admin/queues/12301-complaint", data={
        "_csrf": desk.csrf, "hotline": "12301", "business": "complaint", "strategy": "rrmemory",
        "ring_seconds": "三十", "max_wait_seconds": "120", "announce_every_seconds": "30", "wrapup_seconds": "5",
        "music_class": "default", "enabled": "on"})
    assert response.status == 400 and "振铃时长（秒）应为整数" in await response.text()
    assert (await provisioning.get_queue(db, "12301-complaint")).ring_seconds != "三十"
    assert (await desk.client.get("/admin/queues/no-such-queue")).status == 404
