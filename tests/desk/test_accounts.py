"""Users and agents through the user service (issue 17 items 1 and 4): SQLite and PostgreSQL for the service,
the desk in process for the pages (admin's forms, the forced password change, disabled users' sessions)."""

from __future__ import annotations

import re

import aiohttp
import pytest
from sqlalchemy import select

from core import accounts
from core.admin_audit import REDACTED, AdminChange
from core.db import Database
from core.models import Role, User
from core.web import DB_KEY

PREFIX = "svc"


AGENT = {"username": f"{PREFIX}9", "display_name": "孙悦", "role": "坐席员", "unit": "callcentre",
         "agent_number": "909", "skills": "12301-general:0；12301-complaint:2", "default_extension": "8003"}


async def _audit(database: Database) -> list[AdminChange]:
    async with database.session() as session:
        return list((await session.scalars(select(AdminChange).order_by(AdminChange.id))).all())


async def test_an_agent_is_created_changed_disabled_and_reset_each_audited(service_db, file_settings):
    async with service_db.session() as session:
        admin = await session.scalar(select(User).where(User.username == f"{PREFIX}_admin"))
    user, password = await accounts.create_user(service_db, file_settings, admin, "10.1.1.1", AGENT)
    assert accounts.password_problems(file_settings.passwords, password, user.username) == []
    assert user.check_password(password) and user.must_change_password and user.active
    assert user.skills == {"12301-general": 0, "12301-complaint": 2} and user.skill_list[0] == "12301-general"
    assert (user.role, user.agent_number, user.default_extension) == (Role.AGENT, "909", "8003")

    with pytest.raises(accounts.AccountError) as taken:
        await accounts.create_user(service_db, file_settings, admin, None, {**AGENT, "username": f"{PREFIX}10"})
    assert taken.value.problems == [("agent_number", "工号 909 已被其他用户使用")]

    changed = {**AGENT, "skills": "12301-general:1; 12365-general:0"}
    _user, before, after = await accounts.update_user(service_db, file_settings, admin, "10.1.1.1", user.id, changed)
    assert before["skills"] == {"12301-general": 0, "12301-complaint": 2}
    assert after["skills"] == {"12301-general": 1, "12365-general": 0}
    await accounts.set_active(service_db, admin, "10.1.1.1", user.id, False)
    with pytest.raises(accounts.AccountError, match="不能停用自己的账号"):
        await accounts.set_active(service_db, admin, None, admin.id, False)
    _user, new_password = await accounts.reset_password(service_db, file_settings, admin, "10.1.1.2", user.id)
    assert new_password != password

    rows = await _audit(service_db)
    assert [(r.action, r.entity, r.entity_id, r.actor, r.address) for r in rows] == [
        ("create", "user", f"{PREFIX}9", f"{PREFIX}_admin", "10.1.1.1"),
        ("update", "user", f"{PREFIX}9", f"{PREFIX}_admin", "10.1.1.1"),
        ("disable", "user", f"{PREFIX}9", f"{PREFIX}_admin", "10.1.1.1"),
        ("reset_password", "user", f"{PREFIX}9", f"{PREFIX}_admin", "10.1.1.2")]
    assert rows[0].after["password"] == rows[3].after["password"] == REDACTED
    assert all(password not in str((r.before, r.after)) and new_password not in str((r.before, r.after))
               for r in rows)
    assert (rows[2].before["active"], rows[2].after["active"]) == (True, False)


async def test_a_user_sets_their_own_password_by_the_rules(service_db, file_settings):
    user, password = await accounts.create_user(service_db, file_settings, None, None, {**AGENT, "username": f"{PREFIX}11",
                                                                                   "agent_number": "911"})
    with pytest.raises(accounts.AccountError) as weak:
        await accounts.change_own_password(service_db, file_settings, user.id, password, f"{PREFIX}11ab", None)
    assert [reason for _f, reason in weak.value.problems] == [
        "密码至少 10 位", "密码须包含小写字母、大写字母、数字、其他字符中的至少 3 类", "密码不能包含用户名"]
    with pytest.raises(accounts.AccountError, match="当前密码不正确"):
        await accounts.change_own_password(service_db, file_settings, user.id, "wrong", "Good-Pass-2026", None)
    await accounts.change_own_password(service_db, file_settings, user.id, password, "Good-Pass-2026", "10.2.2.2")
    changed = await accounts.get_user(service_db, user.id)
    assert changed.check_password("Good-Pass-2026") and not changed.must_change_password
    assert changed.password_changed_at is not None
    last = (await _audit(service_db))[-1]
    assert (last.action, last.actor, last.address) == ("change_password", f"{PREFIX}11", "10.2.2.2")
    assert "Good-Pass" not in str((last.before, last.after))


def test_every_problem_of_a_user_is_reported_at_once():
    known = accounts.Catalog(queues=("12301-general", "12365-general"), extensions=("8001",),
                             units={"callcentre": 1}, usernames={"agent1": 7}, agent_numbers={"101": 7})
    fields, problems = accounts.check_fields({"username": "Agent1", "display_name": "", "role": "坐席员",
                                              "unit": "nowhere", "agent_number": "101",
                                              "skills": "12301-general:x, 12399-general, 12365-general:3",
                                              "default_extension": "9999"}, known)
    assert fields is None
    assert problems == [
        ("username", "用户名 agent1 已存在"), ("display_name", "请填写姓名"), ("unit", "没有编码为 nowhere 的单位"),
        ("skills", "队列 12301-general 的优先级应为 0 到 99 的整数"), ("skills", "没有队列 12399-general"),
        ("default_extension", "没有分机 9999（可用：8001）"), ("agent_number", "工号 101 已被其他用户使用")]
    fields, problems = accounts.check_fields({"username": "agent1", "display_name": "王丽", "role": "agent",
                                              "agent_number": "101", "skills": "12365-general"}, known, user_id=7)
    assert problems == [] and fields.skills == {"12365-general": 0}
    fields, _ = accounts.check_fields({"username": "lead9", "display_name": "班长", "role": "team_lead",
                                       "skills": "12365-general", "agent_number": "5"}, known)
    assert (fields.skills, fields.agent_number) == ({}, None)  # only agents answer queues


# --- pages, in process -----------------------------------------------------------------------------

async def _logout(desk) -> None:
    await desk.client.post("/logout", data={"_csrf": desk.csrf}, allow_redirects=False)


async def test_admin_creates_an_agent_who_must_set_a_password_and_is_shut_out_when_disabled(desk):
    admin_password = desk.settings.secrets["admin_password"]
    await desk.login("admin", admin_password)
    assert "不能修改自己的角色" not in await desk.page("/admin/users/new")  # only on the admin's own page
    form = {"_csrf": desk.csrf, "username": "newagent", "display_name": "钱多", "role": "agent", "unit": "callcentre",
            "agent_number": "", "skill": ["12301-general", "12301-consult"], "penalty_12301-general": "0",
            "penalty_12301-consult": "x", "default_extension": "8002"}
    refused = await desk.client.post("/admin/users", data=form)
    page = await refused.text()
    assert refused.status == 400 and "坐席须填写工号" in page and "12301-consult 的优先级应为" in page
    assert 'value="钱多"' in page  # nothing typed is lost

    form.update({"agent_number": "321", "penalty_12301-consult": "3"})
    created = await desk.client.post("/admin/users", data=form)
    page = await created.text()
    password = re.search(r'id="one-time-password">([^<]+)<', page).group(1)
    assert created.status == 200 and "只显示这一次" in page
    listing = await desk.page("/admin/users?text=newagent")
    assert "12301-general:0; 12301-consult:3" in listing and "待改密码" in listing
    assert password not in listing
    await _logout(desk)

    response = await desk.login("newagent", password)
    assert response.headers["Location"] == "/account/password"
    assert (await desk.client.get("/desk", allow_redirects=False)).headers["Location"] == "/account/password"
    assert (await desk.client.get("/api/desk/state")).status == 403
    weak = await desk.client.post("/account/password", data={"_csrf": desk.csrf, "current": password,
                                                              "new": "short", "again": "short"})
    assert weak.status == 400 and "密码至少 10 位" in await weak.text()
    done = await desk.client.post("/account/password", data={"_csrf": desk.csrf, "current": password,
                                                              "new": "Qian-Duo-2026", "again": "Qian-Duo-2026"},
                                  allow_redirects=False)
    assert done.status == 303 and done.headers["Location"] == "/desk"
    desk_page = await desk.page("/desk")
    assert '<option value="8002" selected>' in desk_page  # the default extension is preselected
    agent_token = desk.client.session.cookie_jar.filter_cookies(desk.client.make_url("/"))["hotline_session"].value

    async def as_agent(path: str) -> aiohttp.ClientResponse:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as browser:
            async with browser.get(desk.client.make_url(path), headers={"Cookie": f"hotline_session={agent_token}"},
                                   allow_redirects=False) as response:
                return response

    assert (await as_agent("/desk")).status == 200

    # The admin disables the agent (in the admin's own session), and enables them again: the agent's
    # session ended with the disabling, so even after the re-enabling the old cookie is refused.
    await desk.login("admin", admin_password)
    async with desk.app[DB_KEY].session() as session:
        new_id = await session.scalar(select(User.id).where(User.username == "newagent"))
    await desk.page(f"/admin/users/{new_id}")
    disabled = await desk.client.post(f"/admin/users/{new_id}/active", data={"_csrf": desk.csrf, "active": "0"},
                                      allow_redirects=False)
    assert disabled.status == 303 and "已停用" in await desk.page(disabled.headers["Location"])
    assert (await desk.client.post(f"/admin/users/{new_id}/active", data={"_csrf": desk.csrf, "active": "1"},
                                   allow_redirects=False)).status == 303
    audit = await desk.page("/admin/audit?text=newagent")
    for action in ("新建", "修改密码", "停用", "启用"):
        assert action in audit
    again = await as_agent("/desk")
    assert again.status == 302 and again.headers["Location"].startswith("/login")
    assert (await desk.client.post(f"/admin/users/{new_id}/active", data={"_csrf": desk.csrf, "active": "0"},
                                   allow_redirects=False)).status == 303
    await _logout(desk)
    assert (await desk.login("newagent", "Qian-Duo-2026")).status == 401  # disabled: refused at log-in too
