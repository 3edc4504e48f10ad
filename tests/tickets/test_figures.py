"""The scheduler's metrics (tickets/figures.py) on SQLite and PostgreSQL: ticket steps counted by action
from the moment the counter starts, each step once; notices by channel and state."""

from __future__ import annotations

from ticket_helpers import act, register

from core import metrics
from tickets.figures import TicketActionCounter, notice_figures
from tickets.notify_models import Notice, NoticeState


def _counted(action: str) -> float:
    return metrics.TICKET_ACTIONS.labels(action)._value.get()


async def test_ticket_steps_are_counted_once_each_from_the_start_and_notices_by_state(db, users):
    await register(db, users["agent"])  # before the counter starts: not counted
    counter = TicketActionCounter(db)
    await counter()
    registered, accepted = _counted("登记"), _counted("受理")
    ticket = await register(db, users["agent"])
    await act(db, ticket.number, "受理", {"note": "受理"}, users["th_handler"])
    await counter()
    await counter()  # a second scrape adds nothing
    assert _counted("登记") - registered == 1 and _counted("受理") - accepted == 1

    async with db.transaction() as session:
        for i, state in enumerate((NoticeState.PENDING, NoticeState.PENDING, NoticeState.FAILED)):
            session.add(Notice(dedupe_key=f"metrics-test:{i}", channel="sms", recipient="13800000000",
                               audience="citizen", template="t", body="b", state=state))
    await notice_figures(db)
    shown = {tuple(s.labels.values()): s.value for m in metrics.NOTICES.collect() for s in m.samples}
    assert shown[("sms", "pending")] >= 2 and shown[("sms", "failed")] >= 1
    assert shown[("email", "uncertain")] == 0  # every state is shown, 0 too
