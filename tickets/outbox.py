"""Sending the outbox: SMS through Kannel's HTTP ``sendsms`` interface, e-mail over SMTP (aiosmtplib).

Each attempt is two transactions around the network call: the notice is first marked ``sending``
(committed), then ``sent`` or back to ``pending`` with the next attempt after a back-off. So:

* never twice: a notice is handed to a gateway only from ``pending``, and a process that dies between
  the two transactions leaves it ``sending``; at start-up such notices become ``uncertain`` (shown on the
  ticket for a person to check) instead of being sent again;
* a gateway that is down (connection refused, an error answer) is retried after 2, 4, 8 … seconds,
  at most ``[notify] max_backoff_seconds`` apart, ``max_attempts`` times; the action that queued the
  notice was committed long before and is never affected.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from email.message import EmailMessage
from typing import Any

import aiohttp
import aiosmtplib
from sqlalchemy import select, update

from core.db import Database
from core.logs import setup_logging
from core.settings import Settings
from tickets.notices import Contact, notice_config
from tickets.notify_models import Notice, NoticeState

BATCH = 50
TIMEOUT_SECONDS = 10


class GatewayError(RuntimeError):
    """The gateway did not take the notice (refused, unreachable, error answer): safe to retry."""


class Transports:
    """The configured gateways (``[notify]`` settings)."""

    def __init__(self, settings: Settings) -> None:
        self.cfg = settings.notify
        self.password = settings.secrets.get("kannel_password", "")
        self.http: aiohttp.ClientSession | None = None

    def sendsms_url(self) -> str:
        url = self.cfg.kannel_sendsms_url
        return url or f"http://127.0.0.1:{self.cfg.kannel_sendsms_port}/cgi-bin/sendsms"

    async def sms(self, to: str, text: str) -> None:
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS))
        params = {"username": self.cfg.kannel_username, "password": self.cfg.kannel_password or self.password,
                  "to": to, "text": text, "charset": "UTF-8", "coding": "2"}
        sender = notice_config().sender
        if sender:
            params["from"] = sender
        try:
            async with self.http.get(self.sendsms_url(), params=params) as resp:
                answer = (await resp.text())[:200]
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise GatewayError(f"短信网关不可用：{exc.__class__.__name__} {exc}") from None
        # Kannel: 202 "0: Accepted for delivery" or "3: Queued for later delivery" (its own store keeps it).
        if resp.status not in (200, 202):
            raise GatewayError(f"短信网关拒绝：HTTP {resp.status} {answer}")

    async def email(self, to: str, subject: str, body: str) -> None:
        host = self.cfg.smtp_host
        if not host:
            raise GatewayError("未配置邮件服务器（[notify] smtp_host）")
        message = EmailMessage()
        message["From"] = self.cfg.smtp_sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            await aiosmtplib.send(message, hostname=host, port=int(self.cfg.smtp_port),
                                  username=self.cfg.smtp_username or None,
                                  password=self.cfg.smtp_password or None,
                                  start_tls=bool(self.cfg.smtp_starttls), timeout=TIMEOUT_SECONDS)
        except (aiosmtplib.SMTPException, TimeoutError, OSError) as exc:
            raise GatewayError(f"邮件服务器不可用：{exc.__class__.__name__} {exc}") from None

    async def send(self, notice: Notice) -> None:
        if notice.channel == "sms":
            await self.sms(notice.recipient, notice.body)
        else:
            await self.email(notice.recipient, notice.subject, notice.body)

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()


def backoff(attempts: int, cap: float) -> dt.timedelta:
    return dt.timedelta(seconds=min(cap, 2.0 ** attempts))


async def mark_interrupted(db: Database) -> int:
    """At start-up: a notice left ``sending`` may have reached the handset; never send it again."""
    async with db.transaction() as session:
        result = await session.execute(update(Notice).where(Notice.state == NoticeState.SENDING).values(
            state=NoticeState.UNCERTAIN, last_error="发送过程中服务重启，是否送达不明，未重发"))
        return result.rowcount or 0


async def send_due(db: Database, transports: Transports, now: dt.datetime, settings: Settings) -> int:
    """One pass over the notices due now; returns how many were sent."""
    log = setup_logging("scheduler")
    cfg = settings.notify
    async with db.transaction() as session:
        due = (await session.scalars(select(Notice.id).where(
            Notice.state == NoticeState.PENDING, Notice.next_attempt_at <= now)
            .order_by(Notice.next_attempt_at, Notice.id).limit(BATCH))).all()
    sent = 0
    for notice_id in due:
        async with db.transaction() as session:  # claim: only from pending, so only one sender ever has it
            claimed = await session.execute(update(Notice).where(
                Notice.id == notice_id, Notice.state == NoticeState.PENDING).values(
                state=NoticeState.SENDING, attempts=Notice.attempts + 1))
            if not claimed.rowcount:
                continue
            notice = await session.get(Notice, notice_id)
        assert notice is not None
        error: str | None = None
        try:
            await transports.send(notice)
        except GatewayError as exc:
            error = str(exc)[:500]
        async with db.transaction() as session:
            row = await session.get(Notice, notice_id)
            assert row is not None
            if error is None:
                row.state, row.sent_at, row.last_error = NoticeState.SENT, now, None
                sent += 1
                log.info("notice_sent", notice=notice_id, channel=row.channel, template=row.template)
            else:
                give_up = row.attempts >= int(cfg.max_attempts)
                row.state = NoticeState.FAILED if give_up else NoticeState.PENDING
                row.last_error = error
                row.next_attempt_at = now + backoff(row.attempts, float(cfg.max_backoff_seconds))
                log.warning("notice_failed", notice=notice_id, attempts=row.attempts, error=error, final=give_up)
    return sent


async def notices_for(session: Any, ticket_id: int) -> list[Notice]:
    return list((await session.scalars(select(Notice).where(Notice.ticket_id == ticket_id)
                                       .order_by(Notice.id))).all())


async def wait_idle(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


def unit_contacts() -> dict[str, Contact]:
    """Unit code -> where its notices go (config/notices.yaml ``contacts``), for the admin's unit tree."""
    return dict(notice_config().contacts)
