"""The consultation knowledge base (config/knowledge.yaml, read by the IVR's own loader) and the
standard's service phrases. A missing or malformed file leaves the knowledge base empty and says
why; the desk keeps working.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from core import content, policy
from core.policy import fail
from core.settings import CONFIG_DIR
from ivr.menu import MenuError
from ivr.menu import load_knowledge as load_answers

PHRASES_FILE = CONFIG_DIR / "phrases.yaml"
PHRASE_FIELDS = ("region", "hotline", "agent_number")  # what render_phrases fills in


@dataclass(frozen=True)
class Entry:
    question: str
    answer: str
    hotline: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return " ".join((self.question, self.answer, *self.tags))


@dataclass
class KnowledgeBase:
    entries: list[Entry] = field(default_factory=list)
    problem: str | None = None  # why the base is empty, in Chinese

    def search(self, query: str, hotline: str | None = None, limit: int = 10) -> list[Entry]:
        """Entries ranked by how many of the query's words and character pairs they contain."""
        query = query.strip()
        pool = [e for e in self.entries if not hotline or not e.hotline or e.hotline == hotline]
        if not query:
            return pool[:limit]
        terms = set(query.split()) | {query[i:i + 2] for i in range(len(query) - 1) if " " not in query[i:i + 2]}
        scored = []
        for entry in pool:
            score = sum(3 if term in entry.question else 1 for term in terms if term in entry.text)
            if score:
                scored.append((score, entry))
        scored.sort(key=lambda pair: -pair[0])
        return [entry for _score, entry in scored[:limit]]


def load_knowledge(path: Path | None = None) -> KnowledgeBase:
    """The IVR's knowledge base (ivr.menu.load_knowledge), or an empty one that says why; read at each call,
    so an edit (core.content) shows at the next search."""
    path = path or content.config_path("knowledge.yaml")
    if not path.exists():
        return KnowledgeBase(problem=f"知识库文件 {path.name} 尚未配置")
    try:
        answers = load_answers(path)
    except MenuError as exc:
        return KnowledgeBase(problem=f"知识库文件有误：{exc}")
    entries = [Entry(a.question, a.prompt.text, hotline) for hotline, items in answers.items() for a in items.values()]
    return KnowledgeBase(entries, None if entries else "知识库为空")


def load_phrases(path: Path | None = None) -> list[dict[str, Any]]:
    """The phrase groups of config/phrases.yaml (or the instance's edited copy), checked: errors name the line
    and the reason."""
    groups = policy.read(path or content.config_path("phrases.yaml"), top=list)
    for i, group in enumerate(groups):
        if not isinstance(group, dict) or set(group) != {"group", "phrases"}:
            raise fail(groups, f"第 {i + 1} 组应为 {{group: 组名, phrases: [用语 …]}}", i)
        if not isinstance(group["group"], str) or not group["group"].strip():
            raise fail(group, "group（组名）应为非空文字", "group")
        phrases = group["phrases"]
        if not isinstance(phrases, list) or not phrases:
            raise fail(group, f"“{group['group']}”的 phrases 应为非空列表", "phrases")
        for j in range(len(phrases)):
            _check_phrase(phrases, j)
    return groups


def _check_phrase(phrases: list[Any], index: int) -> None:
    phrase = phrases[index]
    text = phrase.get("text") if isinstance(phrase, dict) else phrase
    if isinstance(phrase, dict):
        unknown = sorted(set(phrase) - {"text", "hotlines"})
        if unknown:
            raise fail(phrase, f"未知的键 {unknown[0]!r}（可用：text、hotlines）", unknown[0])
        only = phrase.get("hotlines")
        if only is not None and (not isinstance(only, list) or not all(isinstance(h, str) for h in only)):
            raise fail(phrase, "hotlines 应为热线号码的列表，例如 [\"12365\"]", "hotlines")
    if not isinstance(text, str) or not text.strip():
        raise fail(phrases, "用语应为非空文字（或 {text: 文字, hotlines: [热线]}）", index)
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise fail(phrases, f"用语中的花括号有误（{exc}）", index) from None
    if names - set(PHRASE_FIELDS):
        raise fail(phrases, f"未知的占位符 {sorted(names - set(PHRASE_FIELDS))}"
                   f"（可用：{'、'.join('{' + f + '}' for f in PHRASE_FIELDS)}）", index)


@cache
def phrases() -> list[dict[str, Any]]:
    return load_phrases()


policy.register("服务用语 config/phrases.yaml", lambda _settings: phrases())
content.register("phrases.yaml", "服务用语", "phrase", load_phrases, phrases.cache_clear)


def render_phrases(groups: list[dict[str, Any]], hotlines: list[str], region: str,
                   agent_number: str) -> list[dict[str, Any]]:
    """The phrases as spoken: region and seat number filled in, a phrase naming {hotline} once per hotline
    (of those it is limited to), so the panel never shows a placeholder (004 Appendix B)."""
    rendered = []
    for group in groups:
        lines = []
        for phrase in group["phrases"]:
            text, only = (phrase["text"], phrase.get("hotlines")) if isinstance(phrase, dict) else (phrase, None)
            for hotline in [h for h in hotlines if only is None or h in only] if "{hotline}" in text or only \
                    else [None]:
                lines.append(text.format(region=region, hotline=hotline or "", agent_number=agent_number))
        rendered.append({"group": group["group"], "phrases": lines})
    return rendered


# --- who changed which entry, and when (004 §6.1.4: the knowledge base is kept up to date) ---------

FIELD_LABELS = {"question": "问题", "answer": "答案", "audio": "录音"}


@dataclass(frozen=True)
class EntryChange:
    """One entry's change in one saved revision of the knowledge base (core.content)."""

    version: int
    at: Any  # datetime (UTC)
    user: str
    address: str
    hotline: str
    entry: str
    action: str  # 新增 | 修改 | 删除
    fields: tuple[str, ...]  # what changed, in Chinese
    question: str


def _entries(text: str | None) -> dict[tuple[str, str], dict[str, Any]]:
    data = yaml.safe_load(text or "") or {}
    return {(str(hotline), str(entry_id)): dict(entry) for hotline, entries in data.items()
            if isinstance(entries, dict) for entry_id, entry in entries.items() if isinstance(entry, dict)}


def knowledge_changes(revisions: list[content.Revision], shipped: str) -> list[EntryChange]:
    """Entry by entry, what each saved revision changed against the one before (the first: the shipped
    file); newest first."""
    changes: list[EntryChange] = []
    before = _entries(shipped)
    for revision in revisions:
        after = _entries(revision.text if revision.text is not None else shipped)
        for key in sorted(before.keys() | after.keys()):
            old, new = before.get(key), after.get(key)
            if old == new:
                continue
            action = "新增" if old is None else "删除" if new is None else "修改"
            fields = tuple(FIELD_LABELS.get(f, f) for f in sorted(set(old or {}) | set(new or {}))
                           if (old or {}).get(f) != (new or {}).get(f))
            changes.append(EntryChange(revision.version, revision.at, revision.user, revision.address, key[0],
                                       key[1], action, fields, str((new or old or {}).get("question", ""))))
        before = after
    return changes[::-1]
