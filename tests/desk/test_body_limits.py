"""Request body limits per route (issue 12 item 7): forms and JSON a few hundred KB, refused with a Chinese
413 before the body is read; evidence uploads streamed to disk with their own cap, nothing kept when refused."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from aiohttp import FormData
from sqlalchemy import func, select
from test_pages import register

from core.web import DB_KEY
from tickets.models import Evidence

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
TOO_LARGE = "提交的内容过大"


async def raw_request(desk, head: str, body_start: bytes) -> tuple[str, str]:
    """Send the headers and only the start of the body; return (status line, rest) of the answer."""
    url = desk.client.make_url("/")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(head.encode() + b"\r\n" + body_start)
        await writer.drain()
        # The other 19 MB are never sent: an answer proves the desk did not wait for (or buffer) them.
        answer = await asyncio.wait_for(reader.read(65536), timeout=30)
    finally:
        writer.close()
    status, _, rest = answer.decode("utf-8", "replace").partition("\r\n")
    return status, rest


async def test_an_oversized_login_form_is_refused_in_chinese_before_its_body_is_read(desk):
    size = 19 * 1024 * 1024
    head = ("POST /login HTTP/1.1\r\nHost: desk\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {size}\r\n")
    status, rest = await raw_request(desk, head, b"username=agent1&password=" + b"x" * 1000)
    assert status.startswith("HTTP/1.1 413"), status
    assert TOO_LARGE in rest and "text/html" in rest  # the error page, for a form
    # The desk still serves (and the login page still works) afterwards.
    assert (await desk.login("agent1")).status == 302


async def test_oversized_json_is_refused_with_a_chinese_413(desk):
    await desk.login("agent1")
    big = {"kind": "complaint", "description": "投诉" * 300_000}  # ~1.8 MB
    response = await desk.post_json("/api/tickets", big)
    assert response.status == 413 and TOO_LARGE in (await response.json())["error"]

    async def chunks():  # no Content-Length: stopped by the app's limit while reading
        body = json.dumps(big).encode()
        for i in range(0, len(body), 64 * 1024):
            yield body[i:i + 64 * 1024]

    response = await desk.client.post("/api/tickets", data=chunks(), headers={
        "X-CSRF-Token": desk.csrf, "Content-Type": "application/json"})
    assert response.status == 413 and TOO_LARGE in (await response.json())["error"]
    # A normal JSON body still goes through.
    assert (await register(desk))["number"]


def multipart(content: bytes, boundary: str = "hotline-test-boundary") -> tuple[bytes, str]:
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def evidence_count(desk) -> int:
    async with desk.app[DB_KEY].session() as db:
        return await db.scalar(select(func.count()).select_from(Evidence))


def stored_files(desk) -> list[str]:
    root = desk.settings.var_dir / "evidence"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_evidence_over_its_cap_is_refused_and_nothing_is_stored_within_it_works(desk, monkeypatch):
    monkeypatch.setattr(desk.settings, "web", replace(desk.settings.web, evidence_max_mb=1))
    number = (await register(desk))["number"]
    rows, files = await evidence_count(desk), stored_files(desk)

    def form(content: bytes) -> FormData:
        data = FormData()
        data.add_field("file", content, filename="发票.png", content_type="image/png")
        data.add_field("remark", "发票照片")
        return data

    url = f"/api/tickets/{number}/evidence"
    over = PNG + b"\x00" * (1024 * 1024)
    response = await desk.client.post(url, data=form(over), headers={"X-CSRF-Token": desk.csrf})
    assert response.status == 413 and "文件超过 1 MB 上限" in (await response.json())["error"]

    body, content_type = multipart(PNG + b"\x00" * (3 * 1024 * 1024))

    async def stream():  # no Content-Length: the cap is applied while streaming to disk
        for i in range(0, len(body), 64 * 1024):
            yield body[i:i + 64 * 1024]

    response = await desk.client.post(url, data=stream(), headers={"X-CSRF-Token": desk.csrf,
                                                                   "Content-Type": content_type})
    assert response.status == 413 and "上限" in (await response.json())["error"]
    # With a Content-Length far over the cap it is refused before anything is read.
    response = await desk.client.post(url, data=body, headers={"X-CSRF-Token": desk.csrf,
                                                               "Content-Type": content_type})
    assert response.status == 413 and "文件超过 1 MB 上限" in (await response.json())["error"]
    assert await evidence_count(desk) == rows and stored_files(desk) == files

    response = await desk.client.post(url, data=form(PNG), headers={"X-CSRF-Token": desk.csrf})
    assert response.status == 201, await response.text()
    assert await evidence_count(desk) == rows + 1
    [new] = [f for f in stored_files(desk) if f not in files]
    assert new.startswith(f"{number}/") and (desk.settings.var_dir / "evidence" / new).read_bytes() == PNG
