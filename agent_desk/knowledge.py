"""The consultation knowledge base (config/knowledge.yaml) and the standard's service phrases.

knowledge.yaml is a list of entries with a question and an answer (``q``/``a``
or ``question``/``answer``, optional ``hotline`` and ``tags``). A missing or
malformed file leaves the knowledge base empty and says why; the desk keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.settings import CONFIG_DIR

KNOWLEDGE_FILE = CONFIG_DIR / "knowledge.yaml"
PHRASES_FILE = Path(__file__).with_name("phrases.yaml")


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


def _entry(item: Any) -> Entry | None:
    if not isinstance(item, dict):
        return None
    question = item.get("q") or item.get("question")
    answer = item.get("a") or item.get("answer")
    if not question or not answer:
        return None
    tags = item.get("tags") or ()
    return Entry(str(question), str(answer), str(item["hotline"]) if item.get("hotline") else None,
                 tuple(str(t) for t in tags) if isinstance(tags, list) else ())


def load_knowledge(path: Path = KNOWLEDGE_FILE) -> KnowledgeBase:
    if not path.exists():
        return KnowledgeBase(problem=f"知识库文件 {path.name} 尚未配置")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        return KnowledgeBase(problem=f"知识库文件格式错误：{exc}")
    if isinstance(raw, dict):  # {entries: [...]} or {hotline: [...]}
        items = raw.get("entries") or [dict(i, hotline=h) for h, lst in raw.items() if isinstance(lst, list)
                                       for i in lst if isinstance(i, dict)]
    else:
        items = raw or []
    entries = [e for e in (_entry(i) for i in items) if e]
    return KnowledgeBase(entries, None if entries else "知识库为空")


def load_phrases(path: Path = PHRASES_FILE) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))
