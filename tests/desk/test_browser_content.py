"""The admin's content editor in Chromium against the real stack (issue 17 items 1-2): a menu edit with a typo
is refused with the line and the reason and the cursor put on that line; a knowledge-base answer corrected
in the admin area is what an agent's desk finds next, and the page says who changed which entry and when."""

from __future__ import annotations

from playwright.async_api import async_playwright, expect
from test_browser import CHROMIUM_ARGS, DESKTOP, PAGE_ERRORS, open_as, screenshots_dir

from core import content
from core.settings import CONFIG_DIR

OLD_ANSWER = "受理后一般在六十日内作出处理决定。"
NEW_ANSWER = "受理后一般在六十日内作出处理决定，情况复杂的可延长三十日。"


async def test_menu_typo_is_refused_on_its_line_and_a_corrected_answer_reaches_the_desk(stack):
    base, secrets = stack.settings.web_url, stack.settings.secrets
    folder = stack.settings.var_dir / content.FOLDER
    menu = (CONFIG_DIR / "menus/12301.yaml").read_text(encoding="utf-8")
    knowledge = (CONFIG_DIR / "knowledge.yaml").read_text(encoding="utf-8")
    typo_line = next(n for n, line in enumerate(menu.splitlines(), 1) if '"queue:report"' in line)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        admin = None
        try:
            admin = await open_as(browser, base, "admin", secrets["admin_password"], DESKTOP)
            await admin.click(".mainnav >> text=系统管理")
            await admin.click(".admin-nav >> text=语音菜单")
            await admin.click("#content-files tr:has-text('menus/12301.yaml') >> text=编辑")
            await expect(admin.locator("#content-preview")).to_contain_text("咨询请按1")  # what callers hear
            # ... and how it sounds: Chromium loads the main menu's prompt in the IVR's voice (8 kHz WAV).
            seconds = await admin.locator("#content-preview audio[data-prompt$='main']").first.evaluate(
                "a => new Promise((ok, no) => { a.onloadedmetadata = () => ok(a.duration); a.onerror = () =>"
                " no(new Error('audio error ' + (a.error && a.error.code))); a.load(); })")
            assert seconds > 2, seconds  # 咨询请按1，投诉请按2，… is several seconds of speech
            await admin.fill("#content-text", menu.replace('"queue:report"', '"queue:reprot"'))
            await admin.click("button[value=save]")
            error = admin.locator("#content-error")
            await expect(error).to_contain_text(f"config/menus/12301.yaml 第 {typo_line} 行")
            await expect(error).to_contain_text("未知的队列 'reprot'")
            selected = await admin.evaluate("(() => { const a = document.getElementById('content-text');"
                                            " return a.value.slice(a.selectionStart, a.selectionEnd); })()")
            assert "queue:reprot" in selected, selected  # the cursor is on the line named
            await admin.screenshot(path=screenshots_dir() / "admin-menu-refused.png")
            assert not (folder / "menus" / "12301.yaml").exists()

            await admin.click(".admin-nav >> text=知识库")
            await admin.click("#content-files >> text=编辑")
            await admin.fill("#content-text", knowledge.replace(OLD_ANSWER, NEW_ANSWER, 1))
            await admin.click("button[value=save]")
            await expect(admin.locator("#content-saved")).to_contain_text("已保存并生效")
            change = admin.locator("#knowledge-changes tbody tr").first
            for words in ("admin", "12301", "投诉处理时限", "修改", "答案"):
                await expect(change).to_contain_text(words)
            await expect(admin.locator("#content-history tbody tr").first).to_contain_text("admin")
            await admin.screenshot(path=screenshots_dir() / "admin-knowledge-history.png")

            desk = await open_as(browser, base, "agent1", secrets["demo_password"], DESKTOP)
            await desk.fill("#kb-q", "情况复杂")
            await desk.click("#kb-form button")
            await expect(desk.locator("#kb-results")).to_contain_text("可延长三十日")
        finally:
            if admin is not None and (folder / "knowledge.yaml").exists():
                await admin.goto(f"{base}/admin/knowledge/edit?file=knowledge.yaml")
                await admin.click("#content-revert button")
                await expect(admin.locator("#content-saved")).to_be_visible()
            await browser.close()
    assert not (folder / "knowledge.yaml").exists()
    assert PAGE_ERRORS == []
