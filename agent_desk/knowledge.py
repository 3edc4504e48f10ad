"""The consultation knowledge base (config/knowledge.yaml, read by the IVR's own loader) and the
standard's service phrases. A missing or malformed file leaves the knowledge base empty and says
why; the desk keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ivr.menu import KNOWLEDGE_FILE, MenuError
from ivr.menu import load_knowledge as load_answers

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


def load_knowledge(path: Path | None = None) -> KnowledgeBase:
    """The IVR's knowledge base (ivr.menu.load_knowledge), or an empty one that says why."""
    path = path or KNOWLEDGE_FILE
    if not path.exists():
        return KnowledgeBase(problem=f"知识库文件 {path.name} 尚未配置")
    try:
        answers = load_answers(path)
    except MenuError as exc:
        return KnowledgeBase(problem=f"知识库文件有误：{exc}")
    entries = [Entry(a.question, a.prompt.text, hotline) for hotline, items in answers.items() for a in items.values()]
    return KnowledgeBase(entries, None if entries else "知识库为空")


def load_phrases(path: Path = PHRASES_FILE) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


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
