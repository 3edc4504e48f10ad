"""Menu files are validated at start-up: a broken file is refused with its line and reason."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ivr.menu import MenuError, load_all_menus, load_knowledge, load_menu

GOOD = """\
hotline: "12301"
name: 测试热线
greeting:
  text: 这里是测试热线。
menus:
  main:
    prompt:
      text: 咨询请按1，投诉请按2。
    keys:
      "1": {target: "answer:faq"}
      "2": {target: "menu:object", business: complaint}
      "0": {target: agent}
  object:
    prompt:
      text: 景区请按1。
    keys:
      "1": {target: "queue:complaint", category: scenic-spot, label: 景区}
"""
KNOWLEDGE = """\
"12301":
  faq:
    question: 问题
    answer: 答案。
"""


def write(tmp_path: Path, text: str, name: str = "12301.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> object:
    knowledge = load_knowledge(write(tmp_path, KNOWLEDGE, "knowledge.yaml"))
    return load_menu(write(tmp_path, text), knowledge)


def refused(tmp_path: Path, text: str) -> MenuError:
    with pytest.raises(MenuError) as caught:
        load(tmp_path, text)
    return caught.value


def test_shipped_menus_of_both_hotlines_load():
    menus = load_all_menus()
    assert set(menus) == {"12301", "12365"}
    for menu in menus.values():
        assert set(menu.main.choices) == set("123409")
        assert menu.category_label("other") == "其他"


def test_a_good_file_loads_with_its_choices(tmp_path):
    menu = load(tmp_path, GOOD)
    assert menu.main.choices["2"].target == "menu:object"
    assert menu.menus["object"].choices["1"].category == "scenic-spot"
    assert menu.answers["faq"].prompt.text == "答案。"


def test_unknown_target_names_line_and_target(tmp_path):
    error = refused(tmp_path, GOOD.replace('"queue:complaint"', '"queue:complain"'))
    assert error.line == 17 and "complain" in error.reason
    error = refused(tmp_path, GOOD.replace("{target: agent}", "{target: operator}"))
    assert error.line == 12 and "未知的目标 'operator'" in error.reason


def test_duplicate_key_names_both_lines(tmp_path):
    text = GOOD.replace('      "0": {target: agent}\n', '      "0": {target: agent}\n      "1": {target: agent}\n')
    error = refused(tmp_path, text)
    assert error.line == 13
    assert "'1' 重复" in error.reason and "第 10 行" in error.reason


def test_missing_prompt_text_is_refused(tmp_path):
    error = refused(tmp_path, GOOD.replace("      text: 景区请按1。\n", "      audio: \n"))
    assert error.line == 15 and "缺少 'text'" in error.reason
    error = refused(tmp_path, GOOD.replace("greeting:\n  text: 这里是测试热线。\n", ""))
    assert "缺少提示音 'greeting'" in error.reason


def test_third_menu_level_is_refused(tmp_path):
    text = GOOD.replace('"1": {target: "queue:complaint", category: scenic-spot, label: 景区}',
                        '"1": {target: "menu:main"}')
    error = refused(tmp_path, text)
    assert error.line == 17 and "最多两级" in error.reason


def test_answer_missing_from_knowledge_base(tmp_path):
    error = refused(tmp_path, GOOD.replace("answer:faq", "answer:nothing"))
    assert error.line == 10 and "nothing" in error.reason


def test_zero_is_reserved_for_an_agent(tmp_path):
    error = refused(tmp_path, GOOD.replace("{target: agent}", "{target: repeat}"))
    assert error.line == 12 and "0 键保留给人工服务" in error.reason


def test_bad_key_retries_and_yaml_syntax(tmp_path):
    assert "无效" in refused(tmp_path, GOOD.replace('"0": {target: agent}', '"10": {target: agent}')).reason
    error = refused(tmp_path, GOOD.replace("name: 测试热线", "name: 测试热线\nretries: 5"))
    assert error.line == 3 and "超出范围" in error.reason
    error = refused(tmp_path, GOOD.replace("menus:", "menus: ["))
    assert error.line is not None and "YAML" in error.reason


def test_hotline_must_match_file_name(tmp_path):
    assert "不一致" in refused(tmp_path, GOOD.replace('"12301"', '"12365"', 1)).reason


def test_error_message_is_file_line_reason(tmp_path):
    error = refused(tmp_path, GOOD.replace("{target: agent}", "{target: operator}"))
    assert str(error).startswith(f"{tmp_path / '12301.yaml'} 第 12 行：菜单 'main' 按键 0：未知的目标 'operator'")


SURVEY = """\
survey:
  prompt:
    text: 满意请按1，基本满意请按2，不满意请按3。
  keys:
    "1": satisfied
    "2": basic
    "3": dissatisfied
  thanks:
    text: 感谢您的评价。
"""


def test_the_survey_is_data_with_every_grade_on_one_key(tmp_path):
    survey = load(tmp_path, GOOD + SURVEY).survey
    assert survey.keys == {"1": "satisfied", "2": "basic", "3": "dissatisfied"}
    assert {p.name for p in load(tmp_path, GOOD + SURVEY).prompts()} >= {"12301-survey", "12301-survey-thanks"}
    error = refused(tmp_path, GOOD + SURVEY.replace("dissatisfied", "angry"))
    assert error.line == 24 and "'angry' 无效" in error.reason
    error = refused(tmp_path, GOOD + SURVEY.replace('    "3": dissatisfied\n', ""))
    assert "缺少评价 dissatisfied" in error.reason
    error = refused(tmp_path, GOOD + SURVEY.replace('"3": dissatisfied', '"3": basic'))
    assert error.line == 24 and "多个按键" in error.reason
    error = refused(tmp_path, GOOD + SURVEY.replace('"1": satisfied', '"0": satisfied'))
    assert error.line == 22 and "'0' 无效" in error.reason
    assert "缺少提示音 'thanks'" in refused(tmp_path, GOOD + SURVEY.split("  thanks:")[0]).reason
