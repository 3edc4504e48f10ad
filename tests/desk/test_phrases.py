"""004 Appendix B (规范性附录, 服务用语) complete in the desk's phrase panel, every phrase rendered."""

from __future__ import annotations

import re

from agent_desk.knowledge import load_phrases, render_phrases

# Phrases per clause of Appendix B in the seed (004): B.1 两条接入语, B.2 七条, B.3.1 十条, B.3.2 五条, B.4 三条.
SEED_COUNTS = {"B.1": 2, "B.2": 7, "B.3.1": 10, "B.3.2": 5, "B.4": 3}
# Phrases the issue found missing (B.1 with the region, three of B.3.1, one of B.3.2), as the seed words them.
ONCE_MISSING = ("质量技术监督/出入境检验检疫12365举报处置指挥中心", "非常感谢您提出的宝贵意见",
                "对于您反映的问题已经进行了调查，结果是这样的", "应由XXX部门办理，请您拨打XXX",
                "鉴于国家行政资源所限，我们将挂断电话了")


def _clause(group: str) -> str:
    match = re.search(r"\((B\.[\d.]+)\)", group)
    assert match, group
    return match.group(1)


def test_appendix_b_every_clause_has_all_its_phrases():
    groups = load_phrases()
    assert {_clause(g["group"]): len(g["phrases"]) for g in groups} == SEED_COUNTS
    text = "\n".join(p["text"] if isinstance(p, dict) else p for g in groups for p in g["phrases"])
    for phrase in ONCE_MISSING:
        assert phrase in text


def test_appendix_b_every_phrase_renders_with_region_hotline_and_seat():
    rendered = render_phrases(load_phrases(), ["12301", "12365"], "浙江省", "8")
    phrases = [p for g in rendered for p in g["phrases"]]
    assert not [p for p in phrases if "{" in p or "}" in p]
    b1 = rendered[0]["phrases"]
    assert b1 == ["您好，这里是浙江省质量技术监督/出入境检验检疫12365举报处置指挥中心，请问您有什么问题需要帮助？",
                  "您好，这里是浙江省12301热线，坐席8号为您服务，请问您有什么问题需要帮助？",
                  "您好，这里是浙江省12365热线，坐席8号为您服务，请问您有什么问题需要帮助？"]
    assert len(phrases) == sum(SEED_COUNTS.values()) + 1  # the seat greeting once per hotline
