"""The standing hostile-input suite (issue 12), against the real running platform over real HTTP.

Every route of the desk's route table (read from the application itself, so a new
route is covered without editing this file) gets malformed values: integers far
beyond 64 bits, ``1e100``, negative and zero ids, ``abc`` for ids, dates such as
``0001-01-01``, NUL and other control characters, lone surrogates and invalid
UTF-8, over-long text, JSON nested deeper than the parser's recursion, integers of
thousands of digits; every POST route also gets a form that fails CSRF; every
field of ticket registration, of every workflow action and of evidence uploads
gets the values it must refuse. Asserted: no 5xx anywhere (and no traceback in the
desk's log), nothing stored (tickets, actions, evidence counted in the database),
the ticket the requests were aimed at unchanged, the platform healthy afterwards
(/healthz and ``cli.stack.check_health``).

Then XSS payloads are stored through the API into every free-text field of
registration, actions and uploads (and, as the CTI would store a caller ID,
into call records and voice messages), and the ticket page, ticket list, desk
and wallboard are rendered in Chromium: no dialog opens, ``window.__xss`` stays
undefined, no Content-Security-Policy violation is reported (CSP would hide a
failed escape, so a violation counts as a failure too), and the payloads are
shown as text.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from playwright.async_api import Page, async_playwright
from sqlalchemy import delete, func, select
from yarl import URL

from cli.stack import check_health
from core.inputs import TEXT_MAX_LENGTH
from core.models import Unit
from cti.models import CallRecord
from recordings.models import Recording
from tests.desk.http_client import Desk
from tests.desk.test_browser import CHROMIUM_ARGS, DESKTOP, open_as
from tickets.models import Evidence, Ticket, TicketAction
from tickets.workflow import ACTIONS, REGISTRATION_FIELDS

pytestmark = pytest.mark.stack

HOME = {"agent1": "/desk", "lead1": "/wallboard", "th_handler": "/unit", "admin": "/wallboard"}
BIG = 10**30
# Query-string values, already percent-encoded: NUL, a lone surrogate and invalid UTF-8 written raw.
QUERY_VALUES = ["9" * 30, "-1", "0", "1e100", "abc", "%00", "a%00b", "%ED%A0%80", "%FF%FE", "0001-01-01",
                "9999-12-31", "2025-02-30", quote("长" * 30), quote("<script>window.__xss=1</script>"),
                "99999999999999999999999-0", "1-1%0A"]
QUERY_NAMES = ["page", "page_size", "from", "to", "last_id", "format", "hotline", "province", "city", "county",
               "phone", "number", "state", "kind", "expiry", "supervised", "complaint_object", "event_category",
               "q", "download", "next", "done"]
# Parameters handlers parse (numbers, dates, ids, choices), tried one at a time with the nastiest values.
PARSED_NAMES = ["page", "page_size", "from", "to", "last_id", "format", "download", "supervised", "expiry",
                "state", "phone", "kind"]
NASTIEST = ["9" * 30, "%00", "%ED%A0%80", "0001-01-01", "1e100", "99999999999999999999999-0", quote("长" * 300)]
FORM_FIELDS = ["username", "password", "next", "kind", "subject", "remark", "phone"]
FORM_VALUES = ["%00", "a%00b", "%ED%A0%80", "%FF%FE", quote("长" * 3000), "account", "9" * 40, "%1B%5B31m"]
# JSON values for any key.
JSON_VALUES: list[Any] = [BIG, -BIG, 2**31, 2**63, 1e100, -1, 0, 1.5, True, None, "abc", "1e100", "9" * 40, "\x00",
                          "王\x00丽", "\x1b[31m", "\ud800", "长" * 30_000, "0001-01-01", "9999-12-31", [BIG],
                          {"a": BIG}, [], {}, ["\x00"]]
RAW_BODIES = ["[" * 100_000 + "]" * 100_000, '{"a": ' + "[" * 50 + "]" * 50 + "}", '{"a": ' + "9" * 5000 + "}",
              '{"a": "\\ud800"}', '{"\\udfff": 1}', '{"a": 1e999}', "null", "[]", '"text"', "{", ""]
RAW_BYTES = [b'{"a": "\xff\xfe"}', b"\x00" * 64]
# Values each kind of workflow field must refuse, whatever the other fields hold.
TEXT_REFUSED: list[Any] = ["王\x00丽", "a\x1bb", "\ud800", "长" * (TEXT_MAX_LENGTH + 1), BIG, ["x"], {"a": 1}]
REFUSED_BY_KIND: dict[str, list[Any]] = {
    "text": TEXT_REFUSED,
    "amount": [1e100, "1e100", "1e15", -1, "-0.01", "NaN", "Infinity", True, [1]],
    "date": ["0001-01-01", "9999-12-31", "2025-02-30", BIG, "1e100", ["2025-01-01"]],
    "unit": [BIG, 2**31, -1, 0, "abc", 1.5, True, [1]],
    "ids": [[BIG], [2**31], BIG, ["1"], [True], list(range(1, 200))],
    "call": ["x" * 65, "a\x00b", "\ud800", [1], {"a": 1}],
    "level": ["\x00", "长" * 100, "\ud800"],
    "clauses": [["\x00"], "x", [BIG], ["长" * 300]],
    "authority": [*TEXT_REFUSED, "随便写的单位"],
}
VALID_BY_KIND: dict[str, Any] = {"text": "好", "amount": "10", "date": "2025-06-20", "ids": [], "call": "none",
                                 "level": "III", "clauses": [],
                                 "authority": "公安机关"}


def registration(th_unit: int, **overrides: Any) -> dict[str, Any]:
    data = {"kind": "complaint", "hotline": "12301", "complainant_name": "呼忠富", "complainant_phone": "13505456680",
            "respondent_name": "康辉旅行社天河分公司", "complaint_object": "旅行社及导游领队",
            "event_category": "强迫或变相强迫购物", "province": "广东省", "city": "广州市", "county": "天河区",
            "amount": "3200", "description": "跟团游被导游强制带入购物店，不买不让走。", "unit_id": th_unit}
    data.update(overrides)
    return data


def desk_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route the desk serves, from its own route table."""
    from agent_desk.app import build_app
    from core.settings import load_settings

    app = build_app(load_settings(), with_ami=False)
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if path and route.method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            routes.add((route.method, path))
    return sorted(routes)


def fill(template: str, number: str) -> list[str]:
    """Concrete paths for a route template: real and hostile values for each parameter."""
    if "{" not in template:
        return [template]
    # A real id ("1") reaches deeper into a handler; not on the admin's pages, where id 1 is agent1's
    # account and a well-formed POST (lock, reset, disable) is the admin's legitimate action, which would
    # lock the session's agent1 out of every later test.
    real_ids = [] if template.startswith("/admin/") else ["1"]
    values = {"number": [number, "9" * 20, "00000000"], "op": ["hangup", "callback", "abc"],
              "id": ["9" * 25, "0", *real_ids], "evidence_id": ["9" * 18, "0"]}
    paths = [template]
    for name in re.findall(r"{(\w+)", template):
        paths = [re.sub(r"{" + name + r"(:[^}]*)?}", value, p, count=1) for p in paths
                 for value in values.get(name, ["9" * 25, "abc"])]
    return paths


class Probe:
    """Sends requests and remembers every answer of 500 or more."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.sent = 0

    async def send(self, desk: Desk, method: str, path: str, what: str, **kwargs: Any) -> int:
        self.sent += 1
        kwargs.setdefault("allow_redirects", False)
        try:
            async with desk.http.request(method, URL(desk.base + path, encoded=True), **kwargs) as resp:
                if resp.content_type != "text/event-stream":
                    await resp.read()
                if resp.status >= 500:
                    self.failures.append(f"{resp.status} {method} {path[:120]} {what[:80]}")
                return resp.status
        except aiohttp.ClientError as exc:  # e.g. an answer the client cannot parse
            self.failures.append(f"{exc!r:.200} {method} {path[:120]} {what[:80]}")
            return 599

    async def json(self, desk: Desk, path: str, body: Any, what: str = "") -> int:
        payload = json.dumps(body)  # ensure_ascii: lone surrogates travel as \ud800 escapes, as a client may send
        return await self.send(desk, "POST", path, what or payload[:80], data=payload,
                               headers={"Content-Type": "application/json", "X-CSRF-Token": desk.csrf})


async def _snapshot(desk: Desk, number: str) -> Any:
    _, ticket = await desk.get_json(f"/api/tickets/{number}")
    _, log = await desk.get_json(f"/api/tickets/{number}/log")
    _, evidence = await desk.get_json(f"/api/tickets/{number}/evidence")
    return ticket, log, evidence


async def _counts(db) -> tuple[int, int, int]:
    async with db.session() as session:
        return tuple([await session.scalar(select(func.count()).select_from(model))  # type: ignore[return-value]
                      for model in (Ticket, TicketAction, Evidence)])


async def _sessions(stack) -> dict[str, Desk]:
    password = stack.settings.secrets["demo_password"]
    desks = {"anonymous": Desk(stack.settings.web_url)}
    try:
        for username, home in HOME.items():
            desks[username] = Desk(stack.settings.web_url)
            secret = stack.settings.secrets["admin_password"] if username == "admin" else password
            await desks[username].login(username, secret, home)
    except BaseException:
        for desk in desks.values():
            await desk.close()
        raise
    return desks


async def _th_unit_id(db) -> int:
    async with db.session() as session:
        return await session.scalar(select(Unit.id).where(Unit.code == "12301-GD-GZ-TH"))


def _multipart(filename: str, remark: bytes) -> bytes:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    return (b'--hostile\r\nContent-Disposition: form-data; name="remark"\r\n\r\n' + remark + b"\r\n"
            + f'--hostile\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode()
            + b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--hostile--\r\n")


async def test_hostile_input_to_every_route_answers_4xx_and_changes_nothing(stack, db):
    desks = await _sessions(stack)
    admin, agent, unit = desks["admin"], desks["agent1"], desks["th_handler"]
    probe = Probe()
    log_start = len(stack.log("agent_desk"))
    try:
        status, body = await agent.post("/api/tickets", registration(await _th_unit_id(db)))
        assert status == 201, body
        number = body["number"]
        before = await _snapshot(admin, number)
        counts = await _counts(db)
        routes = desk_routes()
        assert ("POST", "/api/tickets") in routes and ("GET", "/events") in routes  # the table was read
        gets = [(m, p) for m, p in routes if m == "GET" and not p.startswith("/static")]
        posts = [(m, p) for m, p in routes if m != "GET"]

        # GET: every hostile value in every known parameter at once, as every role; then one parameter at a
        # time as admin (who reaches every handler), so an early refusal cannot hide a later parameter.
        for _, template in gets:
            for path in fill(template, number):
                for value in QUERY_VALUES:
                    query = "&".join(f"{name}={value}" for name in QUERY_NAMES)
                    await asyncio.gather(*(probe.send(d, "GET", f"{path}?{query}", who)
                                           for who, d in desks.items()))
                for name in PARSED_NAMES:
                    await asyncio.gather(*(probe.send(admin, "GET", f"{path}?{name}={value}", "admin")
                                           for value in NASTIEST))

        # POST: raw bodies, and every key the handlers read set to each hostile value, as each role.
        keys = {"action", "inputs", "agent_id", "mode", "phone", "reason", "level", "remark", "number", "target",
                "callback_id", "hotline", "kind", "username", "password", "next", "subject",
                *(f.key for f in REGISTRATION_FIELDS), "group_size", "call_ids"}
        for _, template in posts:
            for path in fill(template, number):
                for who, d in desks.items():
                    # Any form POST that fails CSRF gets the Chinese error page.
                    for form in ({"_csrf": "wrong", "username": "\x00"}, {}, {"_csrf": "%ED%A0%80"}):
                        status = await probe.send(d, "POST", path, f"{who} form {form}", data=form)
                        if who != "anonymous" and path != "/login":
                            assert status == 403, (who, path, status)
                    if path == "/logout":
                        continue  # with a valid token it would log the probe out
                    # Forms with the right token and hostile fields (written raw: NUL, surrogates, bad UTF-8).
                    for value in FORM_VALUES:
                        form = "&".join(f"{k}={value}" for k in FORM_FIELDS) + f"&_csrf={quote(d.csrf)}"
                        await probe.send(d, "POST", path, f"{who} form={value[:20]}", data=form.encode(),
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
                    for raw in RAW_BODIES:
                        await probe.send(d, "POST", path, f"raw {raw[:30]!r}", data=raw,
                                         headers={"Content-Type": "application/json", "X-CSRF-Token": d.csrf})
                    for raw_bytes in RAW_BYTES:
                        await probe.send(d, "POST", path, "raw bytes", data=raw_bytes,
                                         headers={"Content-Type": "application/json", "X-CSRF-Token": d.csrf})
                    await asyncio.gather(*(probe.json(d, path, {k: value for k in keys}, f"{who} all={value!r}")
                                           for value in JSON_VALUES))

        # Registration: each field with each value it must refuse, all other fields valid.
        unit_id = await _th_unit_id(db)
        columns = Ticket.__table__.c
        for f in REGISTRATION_FIELDS:
            refused = list(REFUSED_BY_KIND[f.kind])
            length = getattr(columns[f.key].type, "length", None) if f.key in columns else None
            if f.kind == "text" and length:
                refused.append("长" * (length + 1))
            for value in refused:
                assert await probe.json(agent, "/api/tickets", registration(unit_id, **{f.key: value})) in (400, 413)
        for key, values in {"group_size": [BIG, 0, -1, "2", 1.5, True], "call_ids": [["x" * 65], [BIG], "abc",
                                                                                       ["\x00"], ["a"] * 500]}.items():
            for value in values:
                assert await probe.json(agent, "/api/tickets", registration(unit_id, **{key: value})) in (400, 413)

        # Every workflow action on the target ticket: each field refusing each bad value, the others valid.
        for name, spec in ACTIONS.items():
            valid = {f.key: VALID_BY_KIND.get(f.kind, unit_id) for f in spec.fields}
            for f in spec.fields:
                for value in REFUSED_BY_KIND[f.kind]:
                    inputs = {**valid, f.key: value}
                    for d in (admin, unit):
                        status = await probe.json(d, f"/api/tickets/{number}/actions",
                                                  {"action": name, "inputs": inputs}, f"{name}.{f.key}={value!r}"[:80])
                        assert 400 <= status < 500, (name, f.key, value, status)
        for value in TEXT_REFUSED:
            assert await probe.json(admin, f"/api/tickets/{number}/risk", {"level": "III", "remark": value}) >= 400

        # Evidence uploads: names and remarks that must be refused.
        for filename, remark in (("a%00.png", b"x"), ("长" * 300 + ".png", b"x"), ("a.png", b"\x00"),
                                 ("a.png", "长".encode() * 600), ("a.png", b"\xff\xfe"), ("a\x1b.png", b"x")):
            status = await probe.send(unit, "POST", f"/api/tickets/{number}/evidence", filename[:20],
                                      data=_multipart(filename, remark),
                                      headers={"Content-Type": "multipart/form-data; boundary=hostile",
                                               "X-CSRF-Token": unit.csrf})
            assert status == 400, (filename[:20], remark[:20], status)

        # Log-in form: a few hostile attempts with a valid form token (each counts as a failed log-in).
        anonymous = desks["anonymous"]
        for username in ("\x00admin", "长" * 10_000, "\ud800".encode("utf-8", "surrogatepass").decode("latin-1")):
            async with anonymous.http.get(f"{anonymous.base}/login") as resp:
                token = re.search(r'name="_csrf" value="([^"]+)"', await resp.text()).group(1)
            await probe.send(anonymous, "POST", "/login", "login", data={"_csrf": token, "username": username,
                                                                         "password": "\x00", "next": "/\x00"})

        assert probe.sent > 5000
        assert probe.failures == [], f"{len(probe.failures)} answers of 5xx, e.g.\n" + "\n".join(probe.failures[:30])
        assert await _counts(db) == counts, "hostile input was stored"
        assert await _snapshot(admin, number) == before
        log = stack.log("agent_desk")[log_start:]
        first = min((i for i in (log.find("Error handling request"), log.find("Traceback")) if i >= 0), default=-1)
        assert first < 0, f"the desk logged an error:\n{log[max(0, first - 300):first + 3000]}"
        async with aiohttp.ClientSession() as http, http.get(f"{stack.settings.web_url}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["ok"] is True
        unhealthy = [h for h in check_health(stack.settings, stack.runtime) if not h.ok]
        assert unhealthy == []
    finally:
        for desk in desks.values():
            await desk.close()


XSS = {
    "img": '<img src=x onerror="window.__xss=1;alert(1)">',
    "script": "<script>window.__xss=1;alert(1)</script>",
    "svg": '"><svg onload=window.__xss=1>',
    "quote": "'-alert(1)-'\"><b onmouseover=alert(1)>b",
    "href": "javascript:window.__xss=1",
    "textarea": "</textarea><img src=x onerror=alert(1)>",
}
SHORT = '"><svg onload=alert(1)>'  # for the 32-character columns


async def _guard(page: Page, dialogs: list[str]) -> None:
    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    await page.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation',"
        " (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


async def _assert_no_script_ran(page: Page, dialogs: list[str], where: str) -> None:
    await page.wait_for_timeout(300)  # handlers such as onerror fire after the image fails to load
    assert dialogs == [], (where, dialogs)
    assert await page.evaluate("typeof window.__xss") == "undefined", where
    assert await page.evaluate("window.__csp || []") == [], where
    injected = await page.evaluate(
        "document.querySelectorAll('main [onerror], main [onload], main [onmouseover], main svg, main img[src=x],"
        " main script:not([type=\"application/json\"])').length")
    assert injected == 0, where


async def test_stored_xss_payloads_run_no_script_in_chromium(stack, db):
    password = stack.settings.secrets["demo_password"]
    agent, lead, unit = Desk(stack.settings.web_url), Desk(stack.settings.web_url), Desk(stack.settings.web_url)
    call_id = f"xss-{uuid.uuid4().hex[:12]}"
    try:
        await agent.login("agent1", password)
        await lead.login("lead1", password, "/wallboard")
        await unit.login("th_handler", password, "/unit")
        unit_id = await _th_unit_id(db)
        text_fields = {"complainant_name": XSS["img"], "complainant_org": XSS["svg"], "respondent_name": XSS["script"],
                       "respondent_phone": SHORT, "description": " ".join(XSS.values()), "transcript": XSS["textarea"]}
        status, complaint = await agent.post("/api/tickets", registration(unit_id, **text_fields))
        assert status == 201, complaint
        number = complaint["number"]
        status, body = await agent.post("/api/tickets", {
            "kind": "consult", "hotline": "12301", "complainant_phone": SHORT, "complainant_name": XSS["quote"],
            "description": XSS["href"], "answer": XSS["img"], "source": "voicemail"})
        assert status == 201, body
        for desk, action, inputs in ((unit, "受理", {"note": XSS["img"]}), (lead, "督办", {"note": XSS["svg"]}),
                                     (lead, "调整风险等级", {"level": "II", "remark": XSS["script"]})):
            status, body = await desk.post(f"/api/tickets/{number}/actions", {"action": action, "inputs": inputs})
            assert status == 200, (action, body)
        form = aiohttp.FormData()
        form.add_field("file", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, filename='<img src=x onerror=alert(1)>.png',
                       content_type="image/png")
        form.add_field("remark", XSS["textarea"])
        async with unit.http.post(f"{unit.base}/api/tickets/{number}/evidence", data=form,
                                  headers={"X-CSRF-Token": unit.csrf}) as resp:
            assert resp.status == 201, await resp.text()
        # A caller ID is whatever the carrier sends: stored as the CTI would store it.
        now = datetime.now(UTC)
        async with db.transaction() as session:
            session.add(CallRecord(call_id=call_id, caller_number=SHORT, hotline="12301", queue="12301-general",
                                   started_at=now, queued_at=now, abandoned=True, wait_seconds=5))
            session.add(Recording(call_id=call_id, kind="voicemail", caller_number=SHORT, hotline="12301",
                                  path=f"hostile/{call_id}.ogg", format="opus", transcript=XSS["img"],
                                  transcript_status="done", started_at=now))

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                for username, paths, shown in (
                    ("th_handler", [f"/tickets/{number}", "/tickets", "/unit"], XSS["img"]),
                    ("lead1", ["/wallboard", f"/tickets/{number}", "/tickets"], SHORT),
                    ("agent1", ["/desk", "/tickets", f"/tickets/{number}"], SHORT),
                ):
                    dialogs: list[str] = []
                    page = await open_as(browser, stack.settings.web_url, username, password, DESKTOP)
                    await _guard(page, dialogs)
                    for path in paths:
                        await page.goto(f"{stack.settings.web_url}{path}")
                        await page.wait_for_load_state("networkidle")
                        if path == "/wallboard":  # drawn by JavaScript from /api/wallboard
                            await page.wait_for_function(
                                "(t) => document.querySelector('#abandoned').textContent.includes(t)", arg=SHORT,
                                timeout=30_000)
                        if path == f"/tickets/{number}" or path in ("/wallboard", "/desk"):
                            assert shown in (await page.text_content("main") or ""), (username, path)
                        await _assert_no_script_ran(page, dialogs, f"{username} {path}")
                    await page.context.close()
            finally:
                await browser.close()
    finally:
        async with db.transaction() as session:  # other tests count calls and check recordings on disk
            await session.execute(delete(Recording).where(Recording.call_id == call_id))
            await session.execute(delete(CallRecord).where(CallRecord.call_id == call_id))
        for desk in (agent, lead, unit):
            await desk.close()
