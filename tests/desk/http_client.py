"""A desk session over real HTTP, as the page's JavaScript uses it (cookie + CSRF header); for stack tests."""

from __future__ import annotations

import re
from typing import Any

import aiohttp


class Desk:
    """An agent's desk session over HTTP, as the page's JavaScript uses it (cookie + CSRF header)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies for 127.0.0.1
        self.csrf = ""

    async def login(self, username: str, password: str, next_url: str = "/desk") -> None:
        async with self.http.get(f"{self.base}/login") as resp:
            token = re.search(r'name="_csrf" value="([^"]+)"', await resp.text()).group(1)
        async with self.http.post(f"{self.base}/login", data={"_csrf": token, "username": username,
                                                              "password": password, "next": next_url}) as resp:
            page = await resp.text()
        match = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert match, f"log-in as {username} failed ({resp.status}): {page[:300]}"
        self.csrf = match.group(1)

    async def post(self, path: str, body: dict) -> tuple[int, Any]:
        async with self.http.post(f"{self.base}{path}", json=body, headers={"X-CSRF-Token": self.csrf}) as resp:
            return resp.status, await resp.json()

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with self.http.get(f"{self.base}{path}") as resp:
            return resp.status, await resp.json()

    async def close(self) -> None:
        await self.http.close()
