"""修改密码: a user sets their own password; a new user, or one whose password an admin reset, is sent here
by the auth middleware before anything else (agent_desk/auth.py PASSWORD_PAGE)."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from agent_desk import login_guard
from agent_desk.auth import PASSWORD_PAGE, home_for
from core import accounts
from core.web import DB_KEY, SETTINGS_KEY, USER_KEY


def _page(request: web.Request, problems: list[str], status: int = 200) -> web.Response:
    rules = request.app[SETTINGS_KEY].passwords
    response = aiohttp_jinja2.render_template("account_password.html", request, {
        "problems": problems, "forced": request[USER_KEY].must_change_password, "rules": rules})
    response.set_status(status)
    return response


async def password_page(request: web.Request) -> web.Response:
    return _page(request, [])


async def password_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    current, new, again = (str(form.get(name, "")) for name in ("current", "new", "again"))
    if new != again:
        return _page(request, ["两次输入的新密码不一致"], 400)
    user = request[USER_KEY]
    try:
        await accounts.change_own_password(request.app[DB_KEY], request.app[SETTINGS_KEY], user.id, current, new,
                                           login_guard.source_address(request))
    except accounts.AccountError as exc:
        return _page(request, [reason for _field, reason in exc.problems], 400)
    raise web.HTTPSeeOther(home_for(user))


def add_routes(app: web.Application) -> None:
    app.router.add_get(PASSWORD_PAGE, password_page)
    app.router.add_post(PASSWORD_PAGE, password_submit)
