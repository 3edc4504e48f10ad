"""Linking calls to tickets (issue 12 item 1): only people who may already see the call, by a reference
nobody can guess, with one answer for unknown and forbidden; playback re-checks every stored link."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from ticket_helpers import act, register

from cti.models import CallRecord
from recordings.access import may_listen
from recordings.models import Recording
from tickets.models import TicketCall
from tickets.queries import find_by_number
from tickets.workflow import CALL_REFUSED, WorkflowError

CITIZEN = "13505456680"  # the complainant of ticket_helpers.complaint()
SICHUAN = {"province": "四川省", "city": "成都市", "county": "武侯区", "complainant_phone": "13900000009"}


async def _call(db, call_id: str, agent=None, caller: str = CITIZEN, hotline: str = "12301",
                rung: list | None = None) -> CallRecord:
    async with db.transaction() as session:
        record = CallRecord(call_id=call_id, caller_number=caller, hotline=hotline,
                            agent_id=agent.id if agent else None, agents_rung=rung or [])
        session.add(record)
        session.add(Recording(call_id=call_id, kind="call", path=f"calls/{call_id}.opus", format="opus"))
    return record


async def _recording(db, call_id: str) -> Recording:
    async with db.session() as session:
        return await session.scalar(select(Recording).where(Recording.call_id == call_id))


async def _links(db, number: str) -> list[TicketCall]:
    async with db.session() as session:
        ticket = await find_by_number(session, number)
        return list((await session.scalars(select(TicketCall).where(TicketCall.ticket_id == ticket.id))).all())


async def _refused(db, number: str, call_id: str, user) -> WorkflowError:
    with pytest.raises(WorkflowError) as err:
        await act(db, number, "关联来电", {"call_id": call_id}, user)
    return err.value


async def test_calls_get_random_unique_references_unrelated_to_the_asterisk_uniqueid(db):
    calls = [await _call(db, f"1764590000.{n}") for n in range(50)]
    refs = [c.ref for c in calls]
    assert len(set(refs)) == 50 and all(len(r) == 16 for r in refs)
    assert not any(c.call_id in c.ref or c.ref in c.call_id for c in calls)


async def test_another_provinces_unit_cannot_link_a_call_and_cannot_tell_unknown_from_forbidden(db, users):
    call = await _call(db, "1764590001.7", agent=users["agent"])
    theirs = await register(db, users["agent"], **SICHUAN)  # a ticket of 四川, which sc_handler handles
    by_ref = await _refused(db, theirs.number, call.ref, users["sc_handler"])
    by_uniqueid = await _refused(db, theirs.number, call.call_id, users["sc_handler"])
    unknown = await _refused(db, theirs.number, "1764590001.8", users["sc_handler"])
    guessed = await _refused(db, theirs.number, "AAAAAAAAAAAAAAAA", users["sc_handler"])
    odd = await _refused(db, theirs.number, "' OR 1=1 --", users["sc_handler"])  # not a reference's alphabet
    assert {(e.message, e.field, e.status) for e in (by_ref, by_uniqueid, unknown, guessed, odd)} == \
        {(CALL_REFUSED, "call_id", 400)}
    assert call.call_id not in by_uniqueid.message
    junk = await _refused(db, theirs.number, "x\x00" * 4, users["sc_handler"])  # a 400, never PostgreSQL's error
    assert (junk.field, junk.status) == ("call_id", 400)
    assert await _links(db, theirs.number) == []
    # Even the complainant's own number does not help a unit the ticket is not dispatched to.
    ours = await register(db, users["agent"])  # 广州天河; 广东 (gd_handler) sees it from above
    assert (await _refused(db, ours.number, call.ref, users["gd_handler"])).message == CALL_REFUSED


async def test_the_agent_the_lead_and_the_dispatched_unit_for_the_complainants_call_may_link(db, users):
    ticket = await register(db, users["agent"])  # dispatched to 天河区 (th_handler)
    taken = await _call(db, "1764590002.1", agent=users["agent"], caller="13700000000")
    rung = await _call(db, "1764590002.2", caller="13700000001", rung=[{"phone": "8001", "agent_id": users["agent"].id}])
    other = await _call(db, "1764590002.3", caller="13700000002")
    again = await _call(db, "1764590002.4", caller="+86 135-0545-6680")  # the citizen calls about the case
    other_line = await _call(db, "1764590002.5", caller=CITIZEN, hotline="12365")
    await act(db, ticket.number, "关联来电", {"call_id": taken.ref}, users["agent"])
    await act(db, ticket.number, "关联来电", {"call_id": rung.ref}, users["agent"])
    assert (await _refused(db, ticket.number, other.ref, users["agent"])).message == CALL_REFUSED
    await act(db, ticket.number, "关联来电", {"call_id": other.ref}, users["lead"])
    assert (await _refused(db, ticket.number, other_line.ref, users["th_handler"])).message == CALL_REFUSED
    await act(db, ticket.number, "关联来电", {"call_id": again.ref}, users["th_handler"])
    links = {link.call_id: link.linked_by_id for link in await _links(db, ticket.number)}
    assert links == {taken.call_id: users["agent"].id, rung.call_id: users["agent"].id,
                     other.call_id: users["lead"].id, again.call_id: users["th_handler"].id}


async def test_registration_links_only_the_agents_own_calls_by_reference(db, users):
    mine = await _call(db, "1764590003.1", agent=users["agent"])
    someone_elses = await _call(db, "1764590003.2", caller="13700000003")
    ticket = await register(db, users["agent"], call_ids=[mine.ref])
    assert [(link.call_id, link.linked_by_id) for link in await _links(db, ticket.number)] == \
        [(mine.call_id, users["agent"].id)]
    for refs in ([someone_elses.ref], [mine.call_id], [mine.ref, "nope"]):
        with pytest.raises(WorkflowError) as err:
            await register(db, users["agent"], call_ids=refs)
        assert (err.value.message, err.value.field) == (CALL_REFUSED, "call_ids")


async def test_a_stored_link_does_not_grant_the_recording_by_itself(db, users):
    """Links made before the rule (anyone viewing the ticket could) must not keep playing."""
    stolen = await _call(db, "1764590004.1", agent=users["agent"], caller="13700000004")
    theirs = await register(db, users["agent"], **SICHUAN)
    async with db.transaction() as session:  # as the old 关联来电 stored it for sc_handler
        session.add(TicketCall(ticket_id=theirs.id, call_id=stolen.call_id))
    async with db.session() as session:
        assert not await may_listen(session, users["sc_handler"], await _recording(db, stolen.call_id))
    async with db.transaction() as session:  # a link claimed by sc_handler is no better
        link = await session.scalar(select(TicketCall).where(TicketCall.ticket_id == theirs.id))
        link.linked_by_id = users["sc_handler"].id
    async with db.session() as session:
        assert not await may_listen(session, users["sc_handler"], await _recording(db, stolen.call_id))

    # Sound links play: the agent's own registration, the lead's link, the citizen's own call.
    own = await _call(db, "1764590004.2", agent=users["agent"], caller="13700000005")
    ticket = await register(db, users["agent"], call_ids=[own.ref])
    lead_linked = await _call(db, "1764590004.3", caller="13700000006")
    await act(db, ticket.number, "关联来电", {"call_id": lead_linked.ref}, users["lead"])
    legacy = await _call(db, "1764590004.4", caller=CITIZEN)
    async with db.transaction() as session:  # an unattributed old link of the citizen's own call
        session.add(TicketCall(ticket_id=ticket.id, call_id=legacy.call_id, added_at=dt.datetime.now(dt.UTC)))
    async with db.session() as session:
        for call in (own, lead_linked, legacy):
            assert await may_listen(session, users["th_handler"], await _recording(db, call.call_id)), call.call_id
        assert not await may_listen(session, users["sc_handler"], await _recording(db, own.call_id))
