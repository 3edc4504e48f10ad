"""The words of a ticket: its kinds, states, sources and review statuses with their Chinese labels.

Shared by the ticket services, the pages (agent_desk) and the reports; the tables in tickets/models.py
store these values. Plain enums and labels: importing them gives no way into the database.
"""

from __future__ import annotations

import enum


class Kind(enum.StrEnum):
    CONSULT = "consult"
    COMPLAINT = "complaint"
    REPORT = "report"
    UNCLASSIFIED = "unclassified"  # a voice message nobody has classified yet


KIND_LABELS = {Kind.CONSULT: "咨询", Kind.COMPLAINT: "投诉", Kind.REPORT: "举报", Kind.UNCLASSIFIED: "待分类"}


class State(enum.StrEnum):
    UNCLASSIFIED = "unclassified"                # 待分类 (voice message awaiting an agent)
    PENDING = "pending"                          # 待受理
    PENDING_TRANSFERRED = "pending_transferred"  # 待受理(转)
    ACCEPTED = "accepted"                        # 受理中
    PENDING_REVIEW = "pending_review"            # 待审核结案 (closing awaits the unit head)
    HANDED_OVER = "handed_over"                  # 已移交
    RETURNED = "returned"                        # 已退回 (back at the call centre)
    REJECTED = "rejected"                        # 不予受理
    SETTLED = "settled"                          # 自行和解
    MEDIATED = "mediated"                        # 调解成功
    MEDIATION_FAILED = "mediation_failed"        # 调解失败
    DEPOSIT_PAID = "deposit_paid"                # 启用质保金赔偿
    CONCLUDED = "concluded"                      # 已办结 (report)
    ANSWERED = "answered"                        # 已答复 (consultation)


STATE_LABELS = {
    State.UNCLASSIFIED: "待分类",
    State.PENDING: "待受理",
    State.PENDING_TRANSFERRED: "待受理(转)",
    State.ACCEPTED: "受理中",
    State.PENDING_REVIEW: "待审核结案",
    State.HANDED_OVER: "已移交",
    State.RETURNED: "已退回",
    State.REJECTED: "不予受理",
    State.SETTLED: "自行和解",
    State.MEDIATED: "调解成功",
    State.MEDIATION_FAILED: "调解失败",
    State.DEPOSIT_PAID: "启用质保金赔偿",
    State.CONCLUDED: "已办结",
    State.ANSWERED: "已答复",
}

# Final after review (or immediately for consultations): the case is closed and archived.
CLOSED_STATES = frozenset({
    State.REJECTED, State.SETTLED, State.MEDIATED, State.MEDIATION_FAILED,
    State.DEPOSIT_PAID, State.CONCLUDED, State.ANSWERED,
})
# No further handling in this system (closed, or handed to another authority).
FINAL_STATES = CLOSED_STATES | {State.HANDED_OVER}
OPEN_STATES = frozenset(State) - FINAL_STATES


class Source(enum.StrEnum):
    AGENT = "agent"
    VOICEMAIL = "voicemail"
    IVR = "ivr"
    # Registered by whoever took the case (001 §1.1 1) (1), 004 §6.1.2): a visit, a letter, a call to the unit.
    WALK_IN = "walk_in"
    LETTER = "letter"
    UNIT_PHONE = "unit_phone"
    # Transferred from another platform (12345, a province office, 110 …) with its own reply deadline
    # (001 §1.1 1) (2)-(3), §6.2).
    PLATFORM = "platform"


SOURCE_LABELS = {
    Source.AGENT: "热线来电", Source.VOICEMAIL: "录音留言", Source.IVR: "语音自助",
    Source.WALK_IN: "来访", Source.LETTER: "来信", Source.UNIT_PHONE: "单位来电",
    Source.PLATFORM: "其他平台转来",
}


class ReviewStatus(enum.StrEnum):
    NONE = "none"
    PENDING = "pending"
    APPROVED = "approved"
    SENT_BACK = "sent_back"
