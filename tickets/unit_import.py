"""Bulk import and export of handling units (core.bulk_import's third kind, issue 17 item 3).

The unit tree is config/units.yaml's (national → province → city → county under each hotline, edited live in
the admin area, core.content): an import is an edit of that file. Each row names its unit by code and its
parent (上级单位) by code or name; the level follows from the parent and the checks are the tree's own: a
county has no units below it, the call centre none at all, a code is used once, a unit's place (省/市/区县)
agrees with the places above it. A row with an existing code changes that unit (name, own place, 状态), so an
export can be edited and imported again; a unit is never moved or deleted (tickets and accounts name it:
停用 instead). The new file is published like an admin's edit of it (core.content.publish_in: checked by
every loader, the units table brought in line in the same transaction, the file's history and the audit
log), with one audit row per unit besides.

The notice contacts (通知电话, 短信手机, 邮箱) are notices.yaml's ``contacts``: a file whose rows carry those
columns sets them (all three empty: the unit has no contact), one without the columns leaves them as they
are. Only that block of notices.yaml is rewritten (its templates and comments stay as written), published
in the same transaction right after units.yaml; every contact is checked on its row first, so that second
file is never refused once the first is in place.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from core import content
from core.admin_audit import record_change
from core.bulk_import import Column, Report, status_of
from core.db import Database
from core.models import UnitLevel, User
from core.settings import Settings
from tickets.dispatch import CHILD_LEVEL, load_unit_config
from tickets.notices import MOBILE

FILE = "units.yaml"
NOTICES = "notices.yaml"
CONTACT_FIELDS = ("phone", "sms", "email")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
LEVEL_LABELS = {UnitLevel.NATIONAL: "国家级", UnitLevel.PROVINCE: "省级", UnitLevel.CITY: "市级",
                UnitLevel.COUNTY: "县级", UnitLevel.CALL_CENTRE: "呼叫中心"}
# The place a unit of each level names itself (units above it give the rest).
OWN_PLACE = {UnitLevel.PROVINCE: "province", UnitLevel.CITY: "city", UnitLevel.COUNTY: "county"}
PLACES = ("province", "city", "county")
PLACE_LABELS = {"province": "省", "city": "市", "county": "区县"}


@dataclass
class _Known:
    """A unit as checking sees it: from units.yaml, or a row above."""

    code: str
    name: str
    level: UnitLevel
    parent: str | None
    places: dict[str, str | None]
    disabled: bool  # its own flag (not the one it inherits)
    row: int | None = None  # the row that adds it, if new


@dataclass
class _Context:
    units: dict[str, _Known]
    centre: str
    contacts: dict[str, dict[str, str]]
    rows_by_code: dict[str, int] = field(default_factory=dict)

    def by_name(self, name: str) -> list[_Known]:
        return [unit for unit in self.units.values() if unit.name == name]


@dataclass(frozen=True)
class _Row:
    code: str
    name: str
    parent: str | None
    level: UnitLevel
    places: dict[str, str | None]
    disabled: bool
    new: bool
    contact: dict[str, str] | None = None  # None: the file has no contact columns (leave it as it is)


def _own_flags(raw: dict[str, Any]) -> dict[str, bool]:
    """code -> the unit's own ``disabled`` as written in the file."""
    flags: dict[str, bool] = {}

    def walk(node: dict[str, Any]) -> None:
        flags[str(node["code"])] = bool(node.get("disabled", False))
        for child in node.get("children") or []:
            walk(child)

    for node in (raw.get("hotlines") or {}).values():
        walk(node)
    return flags


def _current() -> tuple[str, dict[str, Any]]:
    text = content.text_of(FILE)
    return text, yaml.safe_load(text)


def _known_units() -> _Context:
    config = load_unit_config()
    flags = _own_flags(_current()[1])
    units = {spec.code: _Known(spec.code, spec.name, spec.level, spec.parent_code,
                               {p: getattr(spec, p) for p in PLACES}, flags.get(spec.code, False))
             for spec in config.units}
    return _Context(units, config.call_centre.code, _contacts())


def _contacts() -> dict[str, dict[str, str]]:
    """code -> {phone, sms, email} as notices.yaml's contacts has them."""
    raw = yaml.safe_load(content.text_of(NOTICES)) or {}
    return {str(code): {k: str(v) for k, v in (entry or {}).items()} for code, entry in
            (raw.get("contacts") or {}).items()}


def _contact(values: dict[str, str], problems: list[tuple[str, str]]) -> dict[str, str] | None:
    if not any(name in values for name in CONTACT_FIELDS):
        return None
    contact = {name: values.get(name, "").strip() for name in CONTACT_FIELDS}
    if contact["sms"] and not MOBILE.fullmatch(contact["sms"]):
        problems.append(("sms", f"短信手机应为 11 位手机号，实际为“{contact['sms']}”"))
    if contact["email"] and (len(contact["email"]) > 100 or not EMAIL.fullmatch(contact["email"])):
        problems.append(("email", f"邮箱格式不正确：“{contact['email']}”"))
    if len(contact["phone"]) > 32 or any(not ch.isprintable() for ch in contact["phone"]):
        problems.append(("phone", "通知电话最多 32 个字符，且不能含控制字符"))
    return {k: v for k, v in contact.items() if v}


def _contacts_block(text: str, contacts: dict[str, dict[str, str]]) -> str:
    """notices.yaml with its ``contacts:`` block replaced by ``contacts`` (one flow mapping per unit)."""
    lines = [f"  {json.dumps(code, ensure_ascii=False)}: {json.dumps(entry, ensure_ascii=False)}"
             for code, entry in contacts.items()]
    block = ["contacts:" + ("" if lines else " {}"), *lines]
    old = text.splitlines()
    start = next((i for i, line in enumerate(old) if line.rstrip() == "contacts:" or line.startswith("contacts: ")),
                 None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + "\n".join(block) + "\n"
    end = start + 1
    while end < len(old) and old[end].startswith((" ", "\t")):
        end += 1
    return "\n".join([*old[:start], *block, *old[end:]]) + "\n"


class Units:
    """处理单位: one row per unit, new or changed (see the module docstring)."""

    name = "units"
    title = "处理单位"
    password_header = ("", "", "")
    password_note = ""
    columns = (
        Column("code", "单位编码", True, "12301-GD-FS", "字母、数字、- 或 _，最多 32 位；已有的编码表示修改该单位"),
        Column("name", "单位名称", True, "佛山市文化广电旅游体育局"),
        Column("parent", "上级单位", False, "12301-GD",
               "上级单位的编码或名称（新单位必填）：国家级下为省级，省级下为市级，市级下为区县级"),
        Column("level", "级别", False, "市级", "可不填，由上级单位决定；填写时须与之一致"),
        Column("province", "省", False, "广东省", "省级单位须填写本省；下级单位可不填（沿用上级），填写时须与上级一致"),
        Column("city", "市", False, "佛山市", "市级单位须填写本市"),
        Column("county", "区县", False, "", "区县级单位须填写本区县"),
        Column("status", "状态", False, "启用", "启用 或 停用；停用后不再派单给它及其下级（单位不能删除）"),
        Column("phone", "通知电话", False, "0757-12301", "告知市民的承办单位电话"),
        Column("sms", "短信手机", False, "13900000021", "接收短信通知的手机号"),
        Column("email", "邮箱", False, "fs12301@example.cn", "接收邮件通知的地址"),
    )

    async def context(self, session: AsyncSession, settings: Settings) -> _Context:
        return _known_units()

    def check(self, values: dict[str, str], context: _Context, row: int) -> tuple[Any | None, list]:
        problems: list[tuple[str, str]] = []
        code, name = values.get("code", "").strip(), values.get("name", "").strip()
        if not code:
            problems.append(("code", "请填写单位编码"))
        elif not CODE.fullmatch(code):
            problems.append(("code", "单位编码应为字母、数字、- 或 _，最多 32 位"))
        elif code in context.rows_by_code:
            problems.append(("code", f"单位编码 {code} 与第 {context.rows_by_code[code]} 行重复"))
        elif code == context.centre:
            problems.append(("code", "呼叫中心不在单位树中，不能导入"))
        if not name:
            problems.append(("name", "请填写单位名称"))
        elif len(name) > 100 or any(not ch.isprintable() for ch in name):
            problems.append(("name", "单位名称最多 100 个字，且不能含控制字符"))
        disabled = not status_of(values, problems)
        existing = context.units.get(code)
        parent = self._parent(values.get("parent", "").strip(), existing, context, problems)
        level = existing.level if existing else (CHILD_LEVEL.get(parent.level) if parent else None)
        raw_level = values.get("level", "").strip()
        if raw_level and level and raw_level not in (LEVEL_LABELS[level], level.value):
            problems.append(("level", f"级别应为{LEVEL_LABELS[level]}（由上级单位决定），实际为“{raw_level}”"))
        places = self._places(values, level, parent, existing, problems)
        contact = _contact(values, problems)
        if code and CODE.fullmatch(code):
            context.rows_by_code.setdefault(code, row)
        if problems or level is None:
            return None, problems
        if existing is None:  # later rows may name it as their parent
            context.units[code] = _Known(code, name, level, parent.code if parent else None, places, disabled, row)
        return _Row(code, name, parent.code if parent else None, level, places, disabled, existing is None,
                    contact), []

    @staticmethod
    def _parent(raw: str, existing: _Known | None, context: _Context,
                problems: list[tuple[str, str]]) -> _Known | None:
        if not raw:
            if existing is None:
                problems.append(("parent", "新单位须填写上级单位（编码或名称）"))
            return context.units.get(existing.parent) if existing and existing.parent else None
        parent = context.units.get(raw)
        if parent is None:
            named = context.by_name(raw)
            if len(named) > 1:
                problems.append(("parent", f"有 {len(named)} 个名为“{raw}”的单位，请填写上级单位的编码"))
                return None
            parent = named[0] if named else None
        if parent is None:
            problems.append(("parent", f"没有编码或名称为“{raw}”的单位"))
        elif existing is not None and parent.code != existing.parent:
            above = context.units.get(existing.parent or "")
            problems.append(("parent", f"单位不能调整上级（现为{above.name if above else '无'}）；"
                                       "如需调整请停用此单位并新建"))
        elif existing is None and parent.code == context.centre:
            problems.append(("parent", "呼叫中心下不能有单位：请填写国家级、省级或市级单位"))
        elif existing is None and parent.level not in CHILD_LEVEL:
            problems.append(("parent", f"{parent.name}是区县级单位，不能再有下级"))
        else:
            return parent
        return None

    @staticmethod
    def _places(values: dict[str, str], level: UnitLevel | None, parent: _Known | None, existing: _Known | None,
                problems: list[tuple[str, str]]) -> dict[str, str | None]:
        own = OWN_PLACE.get(level) if level else None
        inherited = parent.places if parent else {p: None for p in PLACES}
        places: dict[str, str | None] = {}
        for place in PLACES:
            raw = values.get(place, "").strip() or None
            if raw is not None and len(raw) > 32:
                problems.append((place, f"{PLACE_LABELS[place]}最多 32 个字"))
            if place == own:
                value = raw or (existing.places.get(place) if existing else None)
                if value is None:
                    problems.append((place, f"{LEVEL_LABELS[level]}单位须填写{PLACE_LABELS[place]}"))
                places[place] = value
            elif raw is not None and raw != inherited.get(place) and level is not None:
                problems.append((place, f"{PLACE_LABELS[place]}应与上级单位一致（{inherited.get(place) or '空'}）"))
            else:
                places[place] = inherited.get(place)
        return places

    async def write(self, session: AsyncSession, settings: Settings, actor: User | None, address: str | None,
                    items: list[Any], report: Report) -> None:
        text, raw = _current()
        nodes: dict[str, dict[str, Any]] = {}

        def index(node: dict[str, Any]) -> None:
            nodes[str(node["code"])] = node
            for child in node.get("children") or []:
                index(child)

        for node in (raw.get("hotlines") or {}).values():
            index(node)
        contacts = _contacts()
        before = {code: {**_plain(node), "contact": contacts.get(code)} for code, node in nodes.items()}
        for item in items:
            node = nodes.get(item.code)
            if node is None:
                node = nodes[item.code] = {"code": item.code}
                nodes[item.parent].setdefault("children", []).append(node)
            node["name"] = item.name
            own = OWN_PLACE.get(item.level)
            if own:
                node[own] = item.places[own]
            if item.disabled:
                node["disabled"] = True
            else:
                node.pop("disabled", None)
            # Children last, as people write the file.
            if "children" in node:
                node["children"] = node.pop("children")
            if item.contact is not None:
                if item.contact:
                    contacts[item.code] = item.contact
                else:
                    contacts.pop(item.code, None)
            old, after = before.get(item.code), {**_plain(node), "contact": contacts.get(item.code)}
            if old is None:
                record_change(session, actor, address, "unit", item.code, "create", None, after)
            elif old != after:
                was = bool(old.get("disabled"))
                action = "update" if was == item.disabled else ("disable" if item.disabled else "enable")
                record_change(session, actor, address, "unit", item.code, action, old, after)
        await content.publish_in(session, actor, address, FILE, _leading_comments(text) + yaml.safe_dump(
            raw, allow_unicode=True, sort_keys=False, width=120))
        if contacts != _contacts():
            await content.publish_in(session, actor, address, NOTICES,
                                     _contacts_block(content.text_of(NOTICES), contacts))
        report.written = len(items)

    async def export(self, db: Database) -> list[list[Any]]:
        context = _known_units()
        rows = []
        for unit in context.units.values():
            if unit.code == context.centre:
                continue
            contact = context.contacts.get(unit.code, {})
            rows.append([unit.code, unit.name, unit.parent or "", LEVEL_LABELS[unit.level],
                         *(unit.places[p] or "" for p in PLACES), "停用" if unit.disabled else "启用",
                         *(contact.get(name, "") for name in CONTACT_FIELDS)])
        return rows


def _plain(node: dict[str, Any]) -> dict[str, Any]:
    """A unit's own fields for the audit log (its children are their own rows)."""
    return {k: v for k, v in node.items() if k != "children"}


def _leading_comments(text: str) -> str:
    """The file's opening comment lines, kept above the rewritten tree."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line + "\n")
    return "".join(lines)


UNITS = Units()
