"""Menus as data: load and validate config/menus/<hotline>.yaml and config/knowledge.yaml.

A broken file is refused with its path, line and reason (in Chinese, for the
hotline administrator who edits it): unknown target, duplicate key, missing
prompt, a third menu level, an answer missing from the knowledge base, ...
Line numbers come from the YAML node tree (``core.policy.compose``), which also lets
us see duplicate keys that ``yaml.safe_load`` would silently drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yaml.nodes import MappingNode, Node, ScalarNode

from core import content, policy
from core.policy import PolicyError
from core.satisfaction import BASIC, DISSATISFIED, SATISFIED
from core.settings import CONFIG_DIR

MENU_DIR = CONFIG_DIR / "menus"
KNOWLEDGE_FILE = CONFIG_DIR / "knowledge.yaml"
RECORDED_PROMPTS = CONFIG_DIR / "prompts"

KEYS = "0123456789*#"
QUEUE_SKILLS = ("general", "consult", "complaint", "report")
BUSINESSES = ("consult", "complaint", "report", "progress", "agent")
SIMPLE_TARGETS = ("progress", "agent", "repeat")
TARGET_HELP = "menu:<菜单名>、queue:<general|consult|complaint|report>、answer:<知识库编号>、progress、agent、repeat"
MAX_RETRIES = 3
# 一次一评: the grades a citizen may key after a call.
SURVEY_GRADES = (SATISFIED, BASIC, DISSATISFIED)


# A menu or knowledge file is wrong: the platform's one policy error (file, line, reason).
MenuError = PolicyError


@dataclass(frozen=True)
class Prompt:
    """Something the caller hears: ``name`` is the sound file (no extension) in the prompts folder."""

    name: str
    text: str
    audio: str | None = None  # a recorded file in config/prompts/ that replaces the synthetic voice


@dataclass(frozen=True)
class Choice:
    key: str
    target: str
    business: str | None = None
    category: str | None = None
    label: str | None = None

    @property
    def kind(self) -> str:
        return self.target.split(":", 1)[0]

    @property
    def argument(self) -> str:
        return self.target.split(":", 1)[1] if ":" in self.target else ""


@dataclass(frozen=True)
class Menu:
    name: str
    prompt: Prompt
    choices: dict[str, Choice]
    timeout_seconds: float
    retries: int


@dataclass(frozen=True)
class Answer:
    id: str
    question: str
    prompt: Prompt


@dataclass(frozen=True)
class Survey:
    """The satisfaction survey a citizen hears when the agent hangs up first (issue 16 item 3)."""

    prompt: Prompt
    keys: dict[str, str]  # key -> grade (SURVEY_GRADES)
    thanks: Prompt
    timeout_seconds: float
    retries: int


@dataclass(frozen=True)
class HotlineMenu:
    hotline: str
    name: str
    greeting: Prompt
    menus: dict[str, Menu]
    answers: dict[str, Answer] = field(default_factory=dict)
    timeout_seconds: float = 5
    retries: int = MAX_RETRIES
    survey: Survey | None = None

    @property
    def main(self) -> Menu:
        return self.menus["main"]

    def prompts(self) -> list[Prompt]:
        """Every prompt of this hotline's menu (for generation and duration checks)."""
        survey = [self.survey.prompt, self.survey.thanks] if self.survey else []
        return [self.greeting, *(m.prompt for m in self.menus.values()), *(a.prompt for a in self.answers.values()),
                *survey]

    def category_label(self, code: str) -> str | None:
        """Chinese name of a complaint-object code (for the screen pop)."""
        for menu in self.menus.values():
            for choice in menu.choices.values():
                if choice.category == code:
                    return choice.label
        return None


# --- YAML nodes with line numbers ------------------------------------------

class _Doc:
    """Helpers bound to one file, so every error names it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, node: Node | None, reason: str) -> MenuError:
        return MenuError(self.path, node.start_mark.line + 1 if node is not None else None, reason)

    def compose(self) -> Node:
        return policy.compose(self.path)

    def mapping(self, node: Node, what: str, allowed: tuple[str, ...] | None = None) -> dict[str, tuple[Node, Node]]:
        """Keys -> (key node, value node); refuses duplicates and (if ``allowed``) unknown keys."""
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} 应为“名称: 值”的映射")
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in out:
                first = out[key][0].start_mark.line + 1
                raise self.fail(key_node, f"{what} 中的键 '{key}' 重复（第 {first} 行已定义）")
            if allowed is not None and key not in allowed:
                raise self.fail(key_node, f"{what} 中有未知的字段 '{key}'（可用：{', '.join(allowed)}）")
            out[key] = (key_node, value_node)
        return out

    def text(self, fields: dict[str, tuple[Node, Node]], key: str, what: str, parent: Node,
             required: bool = True) -> str | None:
        if key not in fields:
            if required:
                raise self.fail(parent, f"{what} 缺少 '{key}'")
            return None
        node = fields[key][1]
        if not isinstance(node, ScalarNode) or (required and not str(node.value).strip()):
            raise self.fail(node, f"{what} 的 '{key}' 应为非空文字")
        value = str(node.value).strip()
        return value or None

    def number(self, fields: dict[str, tuple[Node, Node]], key: str, what: str, default: float,
               low: float, high: float) -> float:
        if key not in fields:
            return default
        node = fields[key][1]
        try:
            value = float(node.value)
        except (TypeError, ValueError):
            raise self.fail(node, f"{what} 的 '{key}' 应为数字") from None
        if not low <= value <= high:
            raise self.fail(node, f"{what} 的 '{key}' = {node.value} 超出范围 {low:g}–{high:g}")
        return value


# --- knowledge base ----------------------------------------------------------

def load_knowledge(path: Path | None = None) -> dict[str, dict[str, Answer]]:
    """hotline -> answer id -> Answer (default: the instance's knowledge base, core.content)."""
    doc = _Doc(path or content.config_path("knowledge.yaml"))
    root = doc.compose()
    result: dict[str, dict[str, Answer]] = {}
    for hotline, (_key, entries) in doc.mapping(root, "知识库").items():
        answers: dict[str, Answer] = {}
        for answer_id, (id_node, entry) in doc.mapping(entries, f"热线 {hotline} 的知识库").items():
            what = f"知识库条目 '{answer_id}'"
            fields = doc.mapping(entry, what, ("question", "answer", "audio"))
            question = doc.text(fields, "question", what, id_node)
            text = doc.text(fields, "answer", what, id_node)
            audio = _audio(doc, fields, what)
            answers[answer_id] = Answer(answer_id, question, Prompt(f"{hotline}-answer-{answer_id}", text, audio))
        result[hotline] = answers
    return result


def _audio(doc: _Doc, fields: dict[str, tuple[Node, Node]], what: str) -> str | None:
    if "audio" not in fields or not str(fields["audio"][1].value or "").strip():
        return None
    node = fields["audio"][1]
    name = str(node.value).strip()
    if not (RECORDED_PROMPTS / name).is_file():
        raise doc.fail(node, f"{what} 的录音文件 '{name}' 不存在（应放在 {RECORDED_PROMPTS}/ 下）")
    return name


def _prompt(doc: _Doc, fields: dict[str, tuple[Node, Node]], key: str, what: str, parent: Node,
            name: str) -> Prompt:
    if key not in fields:
        raise doc.fail(parent, f"{what} 缺少提示音 '{key}'")
    node = fields[key][1]
    prompt_fields = doc.mapping(node, f"{what} 的提示音", ("text", "audio"))
    if "text" not in prompt_fields:
        raise doc.fail(node, f"{what} 的提示音缺少 'text'（播报的文字）")
    text = doc.text(prompt_fields, "text", f"{what} 的提示音", node)
    return Prompt(name, text, _audio(doc, prompt_fields, f"{what} 的提示音"))


# --- menu files --------------------------------------------------------------

TOP_FIELDS = ("hotline", "name", "timeout_seconds", "retries", "greeting", "menus", "survey")
SURVEY_FIELDS = ("prompt", "keys", "thanks", "timeout_seconds", "retries")
MENU_FIELDS = ("prompt", "keys", "timeout_seconds", "retries")
CHOICE_FIELDS = ("target", "business", "category", "label")


def load_menu(path: Path, knowledge: dict[str, dict[str, Answer]] | None = None) -> HotlineMenu:
    """Load and validate one hotline's menu file; raises :class:`MenuError` with line and reason."""
    doc = _Doc(path)
    root = doc.compose()
    top = doc.mapping(root, "菜单文件", TOP_FIELDS)
    hotline = doc.text(top, "hotline", "菜单文件", root)
    if hotline != path.stem:
        raise doc.fail(top["hotline"][1], f"hotline '{hotline}' 与文件名 {path.name} 不一致")
    name = doc.text(top, "name", "菜单文件", root)
    timeout = doc.number(top, "timeout_seconds", "菜单文件", 5, 1, 30)
    retries = int(doc.number(top, "retries", "菜单文件", MAX_RETRIES, 1, MAX_RETRIES))
    greeting = _prompt(doc, top, "greeting", "菜单文件", root, f"{hotline}-greeting")
    answers = (knowledge if knowledge is not None else load_knowledge()).get(hotline, {})

    if "menus" not in top:
        raise doc.fail(root, "缺少 'menus'")
    menus_node = top["menus"][1]
    raw_menus = doc.mapping(menus_node, "menus")
    if "main" not in raw_menus:
        raise doc.fail(menus_node, "缺少主菜单 'main'")
    menus: dict[str, Menu] = {}
    for menu_name, (name_node, menu_node) in raw_menus.items():
        what = f"菜单 '{menu_name}'"
        fields = doc.mapping(menu_node, what, MENU_FIELDS)
        prompt = _prompt(doc, fields, "prompt", what, name_node, f"{hotline}-menu-{menu_name}")
        if "keys" not in fields:
            raise doc.fail(name_node, f"{what} 缺少按键 'keys'")
        choices: dict[str, Choice] = {}
        for key, (key_node, choice_node) in doc.mapping(fields["keys"][1], f"{what} 的按键").items():
            choices[key] = _choice(doc, key, key_node, choice_node, what, menu_name, raw_menus, answers)
        if not choices:
            raise doc.fail(fields["keys"][1], f"{what} 没有任何按键")
        menus[menu_name] = Menu(
            menu_name, prompt, choices,
            doc.number(fields, "timeout_seconds", what, timeout, 1, 30),
            int(doc.number(fields, "retries", what, retries, 1, MAX_RETRIES)),
        )
    used = {c.argument for m in menus.values() for c in m.choices.values() if c.kind == "answer"}
    survey = _survey(doc, top["survey"], hotline, timeout) if "survey" in top else None
    return HotlineMenu(hotline, name, greeting, menus, {k: v for k, v in answers.items() if k in used},
                       timeout, retries, survey)


def _survey(doc: _Doc, nodes: tuple[Node, Node], hotline: str, timeout: float) -> Survey:
    """``survey:``: prompt, thanks, and every grade of SURVEY_GRADES on exactly one key."""
    key_node, node = nodes
    what = "满意度评价 survey"
    fields = doc.mapping(node, what, SURVEY_FIELDS)
    prompt = _prompt(doc, fields, "prompt", what, key_node, f"{hotline}-survey")
    thanks = _prompt(doc, fields, "thanks", what, key_node, f"{hotline}-survey-thanks")
    if "keys" not in fields:
        raise doc.fail(key_node, f"{what} 缺少按键 'keys'")
    keys: dict[str, str] = {}
    for key, (knode, value) in doc.mapping(fields["keys"][1], f"{what} 的按键").items():
        if len(key) != 1 or key not in "123456789":
            raise doc.fail(knode, f"{what} 的按键 '{key}' 无效：应为 1–9 中的一个")
        grade = str(value.value).strip() if isinstance(value, ScalarNode) else ""
        if grade not in SURVEY_GRADES:
            raise doc.fail(value, f"{what} 按键 {key} 的评价 '{grade}' 无效（可用：{', '.join(SURVEY_GRADES)}）")
        if grade in keys.values():
            raise doc.fail(value, f"{what} 的评价 '{grade}' 对应了多个按键")
        keys[key] = grade
    missing = [g for g in SURVEY_GRADES if g not in keys.values()]
    if missing:
        raise doc.fail(fields["keys"][1], f"{what} 缺少评价 {', '.join(missing)} 的按键")
    return Survey(prompt, keys, thanks, doc.number(fields, "timeout_seconds", what, timeout, 1, 30),
                  int(doc.number(fields, "retries", what, 2, 1, MAX_RETRIES)))


def _choice(doc: _Doc, key: str, key_node: Node, node: Node, what: str, menu_name: str,
            menus: dict[str, tuple[Node, Node]], answers: dict[str, Answer]) -> Choice:
    if len(key) != 1 or key not in KEYS:
        raise doc.fail(key_node, f"{what} 的按键 '{key}' 无效：应为 0–9、* 或 # 中的一个")
    where = f"{what} 按键 {key}"
    if isinstance(node, ScalarNode):
        fields = {"target": (key_node, node)}
    else:
        fields = doc.mapping(node, where, CHOICE_FIELDS)
    target = doc.text(fields, "target", where, key_node)
    target_node = fields["target"][1]
    kind, _, argument = target.partition(":")
    if kind == "menu":
        if argument not in menus:
            raise doc.fail(target_node, f"{where}：目标菜单 '{argument}' 不存在")
        if argument == "main" or menu_name != "main":
            raise doc.fail(target_node, f"{where}：菜单最多两级，只有主菜单可以进入下一级菜单（返回主菜单请用 repeat 或 0）")
    elif kind == "queue":
        if argument not in QUEUE_SKILLS:
            raise doc.fail(target_node, f"{where}：未知的队列 '{argument}'（可用：{', '.join(QUEUE_SKILLS)}）")
    elif kind == "answer":
        if argument not in answers:
            raise doc.fail(target_node, f"{where}：知识库 (knowledge.yaml) 中没有答案 '{argument}'")
    elif target not in SIMPLE_TARGETS:
        raise doc.fail(target_node, f"{where}：未知的目标 '{target}'（可用：{TARGET_HELP}）")
    if key == "0" and kind not in ("agent", "queue"):
        raise doc.fail(target_node, f"{where}：0 键保留给人工服务，目标只能是 agent 或 queue:<队列>")
    business = doc.text(fields, "business", where, key_node, required=False)
    if business is not None and business not in BUSINESSES:
        raise doc.fail(fields["business"][1], f"{where}：未知的业务类型 '{business}'（可用：{', '.join(BUSINESSES)}）")
    category = doc.text(fields, "category", where, key_node, required=False)
    label = doc.text(fields, "label", where, key_node, required=False)
    return Choice(key, target, business, category, label)


def load_all_menus(menu_dir: Path | None = None, knowledge_file: Path | None = None) -> dict[str, HotlineMenu]:
    """Every hotline's menu, validated; raises :class:`MenuError` on the first problem.

    Default: the instance's menus and knowledge base (edited copies over config/, core.content)."""
    knowledge = load_knowledge(knowledge_file)
    files = sorted(menu_dir.glob("*.yaml")) if menu_dir is not None else content.config_glob("menus")
    if not files:
        raise MenuError(menu_dir or MENU_DIR, None, "没有任何菜单文件 (<热线号码>.yaml)")
    return {menu.hotline: menu for menu in (load_menu(path, knowledge) for path in files)}


def check_menus(_settings: object = None) -> None:
    """Start-up check: the knowledge base, then every menu file on its own (each broken one is named)."""
    knowledge = load_knowledge()
    errors: list[PolicyError] = []
    for path in content.config_glob("menus"):
        try:
            load_menu(path, knowledge)
        except PolicyError as exc:
            errors.append(exc)
    if errors:
        raise policy.PolicyErrors(errors)
    load_all_menus()  # what the services load: also refuses a folder without any menu


policy.register("语音菜单 config/menus/*.yaml（含满意度评价）与知识库 config/knowledge.yaml", check_menus)
content.register("menus/*.yaml", "语音导航菜单", "menu", check_menus)
content.register("knowledge.yaml", "知识库", "knowledge", check_menus)
