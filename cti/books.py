"""Asterisk's own books of the calls: queue_log and the CDR CSV (Master.csv).

Asterisk writes both whatever the CTI is doing, so they are the truth for anything that happened while
the CTI was not following (its own outage, Redis or the database failing under it). Both files only grow
and are in time order, so the part since a moment is found by bisecting the file, never by reading a
year of calls. Their resolution is Asterisk's: whole seconds.

queue_log lines: ``epoch|callid|queue|agent|EVENT|data1|data2|...``; with ``log_membername_as_agent``
the agent is the member name, ``Display(username)``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.logrotate import rotated

# cdr_csv column order with loguniqueid and loguserfield (asterisk-conf/cdr.conf)
CDR_COLUMNS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
               "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield")
HOTLINE_CONTEXTS = ("from-carrier", "hotline-entry", "hotline-route", "hotline-queue", "hotline-voicemail",
                    "hotline-callback", "hotline-survey")
MEMBER_USERNAME = re.compile(r"\(([^()]+)\)$")
# Agent phones: desk extensions (8001) and browser phones (web<user id>, agent_desk.webphone); never the carrier.
PHONE_RE = re.compile(r"^PJSIP/(\d+|web\d+)(?:-|$)")
BISECT_UNTIL = 64 * 1024  # read linearly once the window is this small


def phone_of(interface: str | None) -> str | None:
    match = PHONE_RE.match(interface or "")
    return match.group(1) if match else None


def member_username(member: str | None) -> str | None:
    """``王丽(agent1)`` -> ``agent1`` (queue members are named so at log-in, cti.control.agent_login)."""
    match = MEMBER_USERNAME.search(member or "")
    return match.group(1) if match else None


def lines_since(path: Path, since: float, stamp: Callable[[str], float | None]) -> Iterator[str]:
    """Lines of an append-only, time-ordered book from about ``since`` (epoch) on; earlier ones may come
    too (callers filter), later ones are never skipped. A book rotated since then (core.logrotate:
    ``name.1`` newest) is read from its older files on, oldest first."""
    files = [path]
    while not _starts_by(files[-1], since, stamp) and rotated(path, len(files)).exists():
        files.append(rotated(path, len(files)))
    for book in reversed(files):
        yield from _file_lines_since(book, since, stamp)


def _starts_by(path: Path, since: float, stamp: Callable[[str], float | None]) -> bool:
    """The file's first dated line is at or before ``since`` (so no older file is needed)."""
    try:
        with path.open("rb") as handle:
            for raw in handle:
                when = stamp(raw.decode("utf-8", "replace"))
                if when is not None:
                    return when <= since
    except FileNotFoundError:
        pass
    return False


def _file_lines_since(path: Path, since: float, stamp: Callable[[str], float | None]) -> Iterator[str]:
    if not path.exists():
        return
    with path.open("rb") as handle:
        lo, hi = 0, handle.seek(0, 2)
        while hi - lo > BISECT_UNTIL:
            mid = (lo + hi) // 2
            handle.seek(mid)
            handle.readline()  # the rest of a line cut in two
            when = stamp(handle.readline().decode("utf-8", "replace"))
            if when is not None and when < since:
                lo = mid
            else:  # unreadable counts as late: read more rather than skip a call
                hi = mid
        handle.seek(lo)
        if lo:
            handle.readline()
        for raw in handle:
            yield raw.decode("utf-8", "replace")


# --- queue_log -------------------------------------------------------------------------------------

@dataclass
class QueueCall:
    """What queue_log says about one call (callid = the uniqueid of the channel in Queue())."""

    call_id: str
    queue: str | None = None
    entered: datetime | None = None
    connected: datetime | None = None   # first answer by an agent
    member: str | None = None           # who answered, "Display(username)"
    holdtime: float | None = None       # waited before that answer (whole seconds)
    ended: datetime | None = None       # the queue part ended: completed, transferred, abandoned, timed out
    calltime: float | None = None
    abandoned_wait: float | None = None
    timed_out: bool = False
    transfers: list[dict[str, Any]] = field(default_factory=list)
    # What the hotline's hang-up handler wrote for the citizen's leg (HANGUP_EVENT, hangup_facts): the cause,
    # the hotline, the recording, the IVR's findings; every call has it, queued or not.
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def username(self) -> str | None:
        return member_username(self.member)

    @property
    def hangup_cause(self) -> str | None:
        code = self.facts.get("cause")
        return CAUSES.get(code, "Unknown") if code else None


# The hang-up handler's line (dialplans/hotline.conf, hotline-hangup: QueueLog()), one per citizen leg:
# ``epoch|<call id>|NONE|NONE|HOTLINEEND|cause=16&hotline=12301&recording=...&path=...&business=...&category=...``
# Neither the CDR (its userfield is final before a hangup handler runs) nor queue_log's own lines say
# these; a call the CTI did not follow (its restart, an outage) is completed from it.
HANGUP_EVENT = "HOTLINEEND"
HANGUP_KEYS = ("cause", "hotline", "recording", "path", "business", "category")
# Asterisk's own names of the hang-up causes (Q.850 codes, ast_cause2str: what AMI's Hangup event says in
# Cause-txt; "Unknown" for any other code, 0 included), so a record closed from the books reads like one
# the CTI closed live.
CAUSES = {
    "1": "Unallocated (unassigned) number", "2": "No route to specified transmit network",
    "3": "No route to destination", "5": "Misdialed trunk prefix", "6": "Channel unacceptable",
    "7": "Call awarded and being delivered in an established channel", "8": "Pre-empted",
    "14": "Number ported elsewhere", "16": "Normal Clearing", "17": "User busy", "18": "No user responding",
    "19": "User alerting, no answer", "20": "Subscriber absent", "21": "Call Rejected", "22": "Number changed",
    "23": "Redirected to new destination", "26": "Answered elsewhere", "27": "Destination out of order",
    "28": "Invalid number format", "29": "Facility rejected", "30": "Response to STATus ENQuiry",
    "31": "Normal, unspecified", "34": "Circuit/channel congestion", "38": "Network out of order",
    "41": "Temporary failure", "42": "Switching equipment congestion", "43": "Access information discarded",
    "44": "Requested channel not available", "50": "Facility not subscribed", "52": "Outgoing call barred",
    "54": "Incoming call barred", "57": "Bearer capability not authorized",
    "58": "Bearer capability not available", "65": "Bearer capability not implemented",
    "66": "Channel not implemented", "69": "Facility not implemented", "81": "Invalid call reference value",
    "88": "Incompatible destination", "95": "Invalid message unspecified",
    "96": "Mandatory information element is missing", "97": "Message type nonexist.", "98": "Wrong message",
    "99": "Info. element nonexist or not implemented", "100": "Invalid information element contents",
    "101": "Message not compatible with call state", "102": "Recover on timer expiry",
    "103": "Mandatory IE length error", "111": "Protocol error, unspecified", "127": "Interworking, unspecified",
}


def hangup_facts(value: str) -> dict[str, str]:
    """``cause=16&hotline=12301&...`` -> its non-empty values."""
    facts = {}
    for part in value.split("&"):
        key, _, fact = part.partition("=")
        if key in HANGUP_KEYS and fact:
            facts[key] = fact
    return facts


def _epoch(value: str) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _queue_log_stamp(line: str) -> float | None:
    head = line.split("|", 1)[0]
    return float(head) if head.isdigit() else None


def _number(values: list[str], index: int) -> float | None:
    try:
        return float(values[index])
    except (IndexError, ValueError):
        return None


def read_queue_log(path: Path, since: datetime, call_ids: set[str] | None = None) -> dict[str, QueueCall]:
    """Calls with queue_log lines at or after ``since`` (optionally only ``call_ids``)."""
    calls: dict[str, QueueCall] = {}
    floor = since.timestamp()
    for line in lines_since(path, floor, _queue_log_stamp):
        fields = line.rstrip("\r\n").split("|")
        if len(fields) < 5 or fields[1] in ("NONE", "") or (call_ids is not None and fields[1] not in call_ids):
            continue
        when = _epoch(fields[0])
        if when is None or when.timestamp() < floor:
            continue
        apply_queue_log_line(calls.setdefault(fields[1], QueueCall(fields[1])), when, fields)
    return {uid: call for uid, call in calls.items() if call.entered or call.connected or call.ended or call.facts}


def apply_queue_log_line(call: QueueCall, when: datetime, fields: list[str]) -> None:
    queue, agent, event, data = fields[2], fields[3], fields[4], fields[5:]
    if event == "ENTERQUEUE":
        if call.entered is None:
            call.entered, call.queue = when, queue
    elif event == "CONNECT":
        if call.connected is None:
            call.connected, call.member, call.holdtime = when, agent, _number(data, 0)
            call.queue = call.queue or queue
    elif event in ("COMPLETECALLER", "COMPLETEAGENT"):
        call.ended, call.calltime = when, _number(data, 1)
    elif event in ("BLINDTRANSFER", "ATTENDEDTRANSFER"):
        kind = "blind" if event == "BLINDTRANSFER" else "attended"
        target = data[0] if kind == "blind" and data else (data[1] if len(data) > 1 else None)
        call.transfers.append({"kind": kind, "at": when.isoformat(), "result": "Success", "to": target,
                               "agent": agent})
        call.ended, call.calltime = when, _number(data, 3)
    elif event == "ABANDON":
        call.ended, call.abandoned_wait = when, _number(data, 2)
    elif event in ("EXITWITHTIMEOUT", "EXITEMPTY", "EXITWITHKEY"):
        call.ended, call.timed_out = when, True
    elif event == HANGUP_EVENT:
        call.facts = hangup_facts("|".join(data))


# --- CDR -------------------------------------------------------------------------------------------

@dataclass
class CdrCall:
    uniqueid: str
    caller: str
    did: str | None
    start: datetime
    end: datetime
    answered: bool
    agent_phone: str | None = None  # the agent phone that answered the queue call (dstchannel)


def _cdr_time(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) if value else None
    except ValueError:
        return None


def _cdr_stamp(line: str) -> float | None:
    rows = list(csv.reader([line]))
    if not rows or len(rows[0]) < len(CDR_COLUMNS):
        return None
    end = _cdr_time(rows[0][CDR_COLUMNS.index("end")])
    return end.timestamp() if end else None


def read_cdr_calls(path: Path, since: datetime) -> dict[str, CdrCall]:
    """Hotline calls in Master.csv that ended after ``since``, one per citizen leg (merged CDR rows)."""
    calls: dict[str, CdrCall] = {}
    for row in csv.reader(lines_since(path, since.timestamp(), _cdr_stamp)):
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
        phone = phone_of(cdr["dstchannel"]) if cdr["disposition"] == "ANSWERED" else None
        if known is None:
            calls[uid] = CdrCall(uid, cdr["src"], did, start, end, cdr["disposition"] == "ANSWERED", phone)
        else:
            known.start, known.end = min(known.start, start), max(known.end, end)
            known.did = known.did or did
            known.agent_phone = known.agent_phone or phone
    return calls
