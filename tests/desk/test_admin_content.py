"""The admin's content pages in process (aiohttp test client): a refused edit answers 400 with the file, line
and reason and keeps what was typed; a saved knowledge-base answer is what the desk's search finds at the
next request, with who changed which entry and when."""

from __future__ import annotations

import io
import re
import shutil
import wave
from urllib.parse import unquote

import pytest

from core import content
from core.settings import CONFIG_DIR


@pytest.fixture
async def admin(desk):
    await desk.login("admin", desk.settings.secrets["admin_password"])
    yield desk
    shutil.rmtree(desk.settings.var_dir / content.FOLDER, ignore_errors=True)  # the session's other desk tests
    content.use(None)


SECTION = {"knowledge.yaml": "knowledge", "menus/12301.yaml": "menus"}


async def _post(desk, file: str, text: str, action: str = "save"):
    return await desk.client.post(f"/admin/{SECTION.get(file, 'policies')}/edit", data={"_csrf": desk.csrf, "file": file, "text": text,
                                                               "action": action}, allow_redirects=False)


async def test_a_broken_edit_is_refused_with_line_and_reason_and_a_good_one_reaches_the_search(admin):
    listing = await admin.page("/admin/menus")
    assert "menus/12301.yaml" in listing and "menus/12365.yaml" in listing and "knowledge.yaml" not in listing
    assert "calendar.yaml" in await admin.page("/admin/hours")
    await admin.page("/admin/knowledge/edit?file=knowledge.yaml")
    shipped = (CONFIG_DIR / "knowledge.yaml").read_text(encoding="utf-8")
    folder = admin.settings.var_dir / content.FOLDER

    broken = shipped.replace("    question: 投诉处理时限\n", "    question: [投诉处理时限\n", 1)
    refused = await _post(admin, "knowledge.yaml", broken)
    page = await refused.text()
    assert refused.status == 400
    assert re.search(r"config/knowledge.yaml 第 \d+ 行：YAML 格式错误", page), page
    assert "question: [投诉处理时限" in page  # the text as typed, not lost
    assert not (folder / "knowledge.yaml").exists()

    checked = await _post(admin, "menus/12301.yaml", content.text_of("menus/12301.yaml")
                          .replace("人工服务请随时按0。", "您好，人工服务请随时按0。"), action="check")
    assert checked.status == 200 and "检查通过" in (page := await checked.text()) and "您好，人工服务请随时按0。" in page
    assert not (folder / "menus" / "12301.yaml").exists()  # checked, not saved

    edited = shipped.replace("受理后一般在六十日内作出处理决定。", "受理后一般在六十日内作出处理决定，复杂案件可延长三十日。", 1)
    saved = await _post(admin, "knowledge.yaml", edited)
    assert saved.status == 303, await saved.text()
    found = await (await admin.client.get("/api/knowledge", params={"q": "复杂案件", "hotline": "12301"})).json()
    assert [item["question"] for item in found["items"]] == ["投诉处理时限"]

    history = await admin.page("/admin/knowledge/edit?file=knowledge.yaml")
    row = re.search(r'id="knowledge-changes".*?<tbody><tr>(.*?)</tr>', history, re.S).group(1)
    assert "admin" in row and "投诉处理时限" in row and "修改" in row and "答案" in row and "12301" in row
    assert (CONFIG_DIR / "knowledge.yaml").read_text(encoding="utf-8") == shipped
    audit = await admin.page("/admin/audit")  # the admin audit log: one row, for the saved change only
    rows = re.findall(r"<tr>(?:(?!</tr>).)*knowledge\.yaml(?:(?!</tr>).)*</tr>", audit, re.S)
    assert len(rows) == 1 and "知识库" in rows[0] and "admin" in rows[0], rows


async def test_only_editable_files_can_be_named(admin):
    await admin.page("/admin/policies")
    for name in ("../hotline.toml", "hotline.toml", ".version", "rules.yaml", "menus/12301.yaml"):
        response = await admin.client.post("/admin/policies/edit", data={"_csrf": admin.csrf, "file": name,
                                                                          "text": "x: 1", "action": "save"})
        assert response.status in (400, 404) and "不能编辑的文件" in await response.text()


async def test_the_unit_tree_is_listed_and_searched_with_its_contacts(admin):
    page = await admin.page("/admin/units")
    assert 'data-code="12301-GD-GZ-TH"' in page and 'data-code="12365-NAT"' in page
    assert "units.yaml" in page and "notices.yaml" in page
    found = await admin.page("/admin/units?q=" + "天河")
    rows = re.findall(r'<tr data-code="([^"]+)"', found)
    assert rows == ["12301-GD-GZ-TH"], rows
    assert "广州市文化广电旅游局质监所" in found  # the units above the hit
    assert "020-12303" in found and "13900000004" in found  # where its notices go (notices.yaml contacts)


async def test_menu_prompts_are_heard_before_saving_in_the_ivrs_voice(admin):
    """Issue 17 item 1: a preview of the prompts. The edit page's players fetch each prompt as the IVR says it
    (its TTS voice, 8 kHz mono WAV as Asterisk plays it), also for a text only checked, not saved."""
    page = await admin.page("/admin/menus/edit?file=menus/12301.yaml")
    sources = dict(re.findall(r'<audio controls preload="none" data-prompt="([^"]+)" src="([^"]+)"', page))
    assert any(name.endswith("main") for name in sources), sources

    async def heard(src: str) -> float:
        response = await admin.client.get(src.replace("&amp;", "&"))
        assert response.status == 200 and response.content_type == "audio/wav", await response.text()
        with wave.open(io.BytesIO(await response.read())) as audio:
            assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (8000, 1, 2)
            return audio.getnframes() / 8000

    main = next(src for name, src in sources.items() if name.endswith("main"))
    assert "咨询请按1" in unquote(main)
    assert await heard(main) > 2  # several seconds of speech, not an empty file

    checked = await _post(admin, "menus/12301.yaml", content.text_of("menus/12301.yaml")
                          .replace("人工服务请随时按0。", "您好，欢迎致电，人工服务请随时按0。"), action="check")
    page = await checked.text()
    greeting = re.search(r'data-prompt="[^"]*greeting" src="([^"]+)"', page).group(1)
    assert "您好，欢迎致电" in unquote(greeting) and await heard(greeting) > 1

    empty = await admin.client.get("/admin/menus/listen")
    assert empty.status == 400 and "请给出要试听的提示音文字" in await empty.text()
    escaping = await admin.client.get("/admin/menus/listen", params={"recording": "../hotline.toml"})
    assert escaping.status == 404 and "录音文件不存在" in await escaping.text()
    too_long = await admin.client.get("/admin/menus/listen", params={"text": "请" * 501})
    assert too_long.status == 400 and "不能超过 500 个字符" in await too_long.text()
