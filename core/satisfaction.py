"""一次一评 and 回访 satisfaction: the grades stored on call records and tickets, and their labels.

``call_records.satisfaction`` and ``tickets.call_satisfaction`` hold one of GRADES: a grade the citizen keyed
in the post-call survey, or ``unrated`` (未评价) for an answered call whose citizen hung up first or keyed
nothing. A call no agent answered has none (NULL): nobody served it, so there is nothing to rate.
"""

from __future__ import annotations

SATISFIED, BASIC, DISSATISFIED, UNRATED = "satisfied", "basic", "dissatisfied", "unrated"
GRADES = (SATISFIED, BASIC, DISSATISFIED, UNRATED)
LABELS = {SATISFIED: "满意", BASIC: "基本满意", DISSATISFIED: "不满意", UNRATED: "未评价"}
