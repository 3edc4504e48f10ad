"""Reconcile call records after the CTI was away (AMI outage or service restart).

Events during an outage are gone, so calls that began or ended meanwhile are
rebuilt from Asterisk's own books: live channels (CoreShowChannels) and the
CDR CSV (Master.csv) that Asterisk writes whatever the CTI is doing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.db import Database
from cti.models import CallRecord, CallState

# cdr_csv column order with loguniqueid and loguserfield (asterisk-conf/cdr.conf)
CDR_COLUMNS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
               "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield")
HOTLINE_CONTEXTS = ("from-carrier", "hotline-entry", "hotline-route", "hotline-queue", "hotline-voicemail",
                    "hotline-callback")


@dataclass
class CdrCall:
    uniqueid: str
    caller: str
    did: str | None
    start: datetime
    end: datetime
    answered: bool


def _cdr_time(value: str) -> datetime | None:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) if value else None


def read_cdr_calls(path: Path, since: datetime) -> dict[str, CdrCall]:
    """Hotline calls in Master.csv that ended after ``since``, one per citizen leg (merged CDR rows)."""
    calls: dict[str, CdrCall] = {}
    if not path.exists():
        return calls
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        for row in csv.reader(handle):
            if len(row) < len(CDR_COLUMNS):
                continue
            cdr = dict(zip(CDR_COLUMNS, row, strict=False))
            end = _cdr_time(cdr["end"])
            start = _cdr_time(cdr["start"])
            if not end or not start or end < since or cdr["dcontext"] not in HOTLINE_CONTEXTS:
                continue
            uid = cdr["uniqueid"]
            known = calls.get(uid)
            did = cdr["dst"] if cdr["dst"].startswith("123") else None
            if known is None:
                calls[uid] = CdrCall(uid, cdr["src"], did, start, end, cdr["disposition"] == "ANSWERED")
            else:
                known.start, known.end = min(known.start, start), max(known.end, end)
                known.did = known.did or did
    return calls


def _hms_seconds(value: str) -> int:
    total = 0
    for part in value.split(":"):
        total = total * 60 + int(part or 0)
    return total


async def live_call_ids(ami) -> dict[str, dict[str, Any]]:
    reply = await ami.action({"Action": "CoreShowChannels"}, as_list=True, timeout=10)
    live = {}
    for message in reply if isinstance(reply, list) else []:
        if message.get("Event") == "CoreShowChannel":
            live[message.get("Uniqueid")] = dict(message)
    return live


async def reconcile(db: Database, ami, cdr_csv: Path, since: datetime, log) -> dict[str, int]:
    """Close records whose calls ended while away; add calls that came and went unseen."""
    live = await live_call_ids(ami)
    cdr_calls = read_cdr_calls(cdr_csv, since - timedelta(minutes=1))
    closed = added = 0
    async with db.transaction() as session:
        open_records = (await session.scalars(select(CallRecord).where(CallRecord.ended_at.is_(None)))).all()
        for record in open_records:
            if record.call_id in live:
                continue
            cdr = cdr_calls.get(record.call_id)
            record.ended_at = cdr.end if cdr else datetime.now(UTC)
            record.state = CallState.ENDED
            record.source = "reconciled"
            if record.answered_at is None and record.queued_at is not None and not record.voicemail_file:
                record.abandoned = True
            if record.answered_at and record.talk_seconds is None:
                record.talk_seconds = max(0.0, (record.ended_at - record.answered_at).total_seconds()
                                          - (record.hold_seconds or 0))
            closed += 1
        known = set((await session.scalars(
            select(CallRecord.call_id).where(CallRecord.call_id.in_(list(cdr_calls))))).all())
        for uid, cdr in cdr_calls.items():
            if uid in known or uid in live or uid.startswith("cz-"):
                continue  # cz-: the test citizen's own half of a Local channel
            session.add(CallRecord(
                call_id=uid, caller_number=cdr.caller, did=cdr.did, hotline=cdr.did, started_at=cdr.start,
                ended_at=cdr.end, state=CallState.ENDED, source="reconciled", direction="inbound",
            ))
            added += 1
        # Calls still up that started while away: open a record so they are followed from now on.
        for uid, channel in live.items():
            if not (channel.get("Context") or "").startswith("hotline") or uid in known:
                continue
            exists = await session.scalar(select(CallRecord.id).where(CallRecord.call_id == uid))
            if exists is None:
                seconds = _hms_seconds(channel.get("Duration") or "0")
                session.add(CallRecord(call_id=uid, caller_number=channel.get("CallerIDNum"),
                                       started_at=datetime.now(UTC) - timedelta(seconds=seconds),
                                       state=CallState.IVR, source="reconciled"))
                added += 1
    log.info("reconciled", closed=closed, added=added, live=len(live))
    return {"closed": closed, "added": added, "live": len(live)}
