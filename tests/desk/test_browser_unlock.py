"""The admin's 账号解锁 page in Chromium against the real stack: a locked account is listed, the 解锁
button lifts the lock (as the audit log on the page and in the database say) and the account logs in."""

from __future__ import annotations

from playwright.async_api import async_playwright, expect
from sqlalchemy import select
from test_browser import CHROMIUM_ARGS, DESKTOP, PAGE_ERRORS, open_as, screenshots_dir

from core.models import SecurityAudit


async def test_an_admin_lifts_a_lock_on_the_unlock_page(stack, db):
    base, secrets = stack.settings.web_url, stack.settings.secrets
    limit = stack.settings.web.login_account_failures
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for _ in range(limit):
                page = await open_as(browser, base, "agent5", "wrong-password", DESKTOP)
                await page.context.close()
            locked = await open_as(browser, base, "agent5", secrets["demo_password"], DESKTOP)
            await expect(locked.locator(".alert")).to_contain_text("登录失败次数过多")
            assert locked.url.startswith(f"{base}/login")

            admin = await open_as(browser, base, "admin", secrets["admin_password"], DESKTOP)
            await admin.click(".mainnav >> text=系统管理")
            await admin.click(".admin-nav >> text=账号解锁")
            row = admin.locator("#locks tbody tr", has_text="agent5")
            await expect(row).to_contain_text("账号")
            await admin.screenshot(path=screenshots_dir() / "admin-unlock.png")
            await row.locator("button", has_text="解锁").click()
            await expect(admin.locator("#unlock-done")).to_contain_text("已解锁")
            await expect(admin.locator("#locks tbody tr", has_text="agent5")).to_have_count(0)
            await expect(admin.locator("#audit tbody tr").first).to_contain_text("解锁")

            again = await open_as(browser, base, "agent5", secrets["demo_password"], DESKTOP)
            assert again.url.endswith("/desk")
        finally:
            await browser.close()
    async with db.session() as session:
        rows = (await session.scalars(select(SecurityAudit).where(SecurityAudit.subject == "agent5")
                                      .order_by(SecurityAudit.id))).all()
    assert [(r.action, r.actor) for r in rows][-2:] == [("lock", None), ("unlock", "admin")]
    assert PAGE_ERRORS == []
