"""The call flow of both hotlines against a fake caller: every branch, wrong keys, silence, after hours."""

from __future__ import annotations

import pytest

from ivr.flow import CallerHungUp, CallFlow, QueueTimeoutFlow, SurveyFlow
from ivr.menu import load_all_menus
from tests.ivr.fakes import FakeChannel, FakePrompts, FakeTickets

MENUS = load_all_menus()
HOTLINES = sorted(MENUS)
TICKET = "2024100110001"
READBACK = "您的投诉工单 2 0 2 4 1 0 0 1 1 0 0 0 1，当前状态为受理中。"


async def call(hotline: str, *script: tuple[str, str], staffed: bool = True, tickets: FakeTickets | None = None,
               caller: str = "13912345678", **variables: str) -> FakeChannel:
    channel = FakeChannel(script=list(script), caller=caller, variables={"HOTLINE": hotline, **variables})
    route = await CallFlow(channel, MENUS[hotline], FakePrompts(), tickets or FakeTickets(), staffed=staffed).run()
    assert channel.route == route.route
    return channel


@pytest.mark.parametrize("hotline", HOTLINES)
@pytest.mark.parametrize("key, queue, business", [("3", "report", "report"), ("0", "general", "agent")])
async def test_main_menu_keys_that_queue_at_once(hotline, key, queue, business):
    channel = await call(hotline, ("menu-main", key))
    assert (channel.route, channel.queue) == ("queue", f"{hotline}-{queue}")
    assert channel.variables["BUSINESS"] == business
    assert channel.path == f"main:{key}"


@pytest.mark.parametrize("hotline", HOTLINES)
async def test_every_complaint_object_goes_to_the_complaint_queue_with_its_category(hotline):
    objects = MENUS[hotline].menus["complaint-object"].choices
    categories = {key: c.category for key, c in objects.items() if c.category}
    assert len(categories) == 5
    for key, category in categories.items():
        channel = await call(hotline, ("menu-main", "2"), ("complaint-object", key))
        assert (channel.route, channel.queue) == ("queue", f"{hotline}-complaint")
        assert channel.variables["BUSINESS"] == "complaint"
        assert channel.variables["CATEGORY"] == category
        assert channel.path == f"main:2>complaint-object:{key}"


@pytest.mark.parametrize("hotline", HOTLINES)
async def test_key_ahead_during_greeting_or_recording_notice(hotline):
    during_greeting = await call(hotline, ("greeting", "2"), ("complaint-object", "1"))
    assert during_greeting.heard[:2] == [f"{hotline}-greeting", f"{hotline}-menu-complaint-object"]
    assert during_greeting.queue == f"{hotline}-complaint"
    during_notice = await call(hotline, IVR_AHEAD="3")
    assert f"{hotline}-greeting" not in during_notice.heard
    assert during_notice.queue == f"{hotline}-report"


@pytest.mark.parametrize("hotline", HOTLINES)
async def test_consultation_reads_each_answer_then_offers_an_agent(hotline):
    consult = MENUS[hotline].menus["consult"]
    answers = {key: c.argument for key, c in consult.choices.items() if c.kind == "answer"}
    assert len(answers) == 3
    for key, answer_id in answers.items():
        channel = await call(hotline, ("menu-main", "1"), ("menu-consult", key), ("after-answer", "0"))
        assert f"{hotline}-answer-{answer_id}" in channel.heard
        assert (channel.route, channel.queue) == ("queue", f"{hotline}-consult")
        assert channel.variables["BUSINESS"] == "consult"
    again = await call(hotline, ("menu-main", "1"), ("menu-consult", "1"), ("after-answer", "9"),
                       ("menu-consult", "0"))
    assert again.heard.count(f"{hotline}-menu-consult") == 2
    assert again.queue == f"{hotline}-consult"


@pytest.mark.parametrize("hotline", HOTLINES)
async def test_repeat_plays_the_main_menu_again(hotline):
    channel = await call(hotline, ("menu-main", "9"), ("menu-main", "3"))
    assert channel.heard.count(f"{hotline}-menu-main") == 2
    assert channel.path == "main:9>main:3"


@pytest.mark.parametrize("hotline", HOTLINES)
async def test_silence_gets_three_tries_then_an_agent(hotline):
    channel = await call(hotline)
    assert channel.heard.count(f"{hotline}-menu-main") == 3
    assert channel.heard.count("no-input") == 2
    assert channel.heard[-1] == "to-agent"
    assert (channel.route, channel.queue) == ("queue", f"{hotline}-general")
    assert channel.variables["BUSINESS"] == "agent"
    assert channel.path == "main:no-choice"


@pytest.mark.parametrize("hotline", HOTLINES)
async def test_wrong_keys_get_a_short_reprompt_and_a_right_key_still_counts(hotline):
    channel = await call(hotline, ("menu-main", "7"), ("menu-main", "*"), ("menu-main", "3"))
    assert channel.heard.count("invalid-key") == 2
    assert channel.queue == f"{hotline}-report"
    three_wrong = await call(hotline, ("menu-main", "7"), ("menu-main", "8"), ("menu-main", "#"))
    assert three_wrong.queue == f"{hotline}-general" and three_wrong.path == "main:no-choice"


@pytest.mark.parametrize("hotline", HOTLINES)
async def test_wrong_keys_in_the_submenu_also_end_at_an_agent_keeping_the_business(hotline):
    channel = await call(hotline, ("menu-main", "2"), ("complaint-object", "8"), ("complaint-object", "8"),
                         ("complaint-object", "8"))
    assert channel.queue == f"{hotline}-general"
    assert channel.variables["BUSINESS"] == "complaint"
    assert channel.path == "main:2>complaint-object:no-choice"


@pytest.mark.parametrize("hotline", HOTLINES)
@pytest.mark.parametrize("script", [
    [("greeting", "0")],
    [("menu-main", "2"), ("complaint-object", "0")],
    [("menu-main", "4"), ("ticket-entry", "0")],
    [("menu-main", "4"), ("ticket-entry", "123"), ("ticket-malformed", "0")],
    [("menu-main", "4"), ("ticket-entry", TICKET), ("after-readback", "0")],
    [("menu-main", "7"), ("invalid-key", "0")],
])
async def test_zero_at_any_prompt_reaches_an_agent_at_once(hotline, script):
    channel = await call(hotline, *script, tickets=FakeTickets({TICKET: READBACK}))
    assert (channel.route, channel.queue) == ("queue", f"{hotline}-general")
    assert channel.heard[-1] == "to-agent"


@pytest.mark.parametrize("hotline", HOTLINES)
async def test_progress_reads_back_a_keyed_ticket(hotline):
    prompts = FakePrompts()
    channel = FakeChannel(script=[("menu-main", "4"), ("ticket-entry", TICKET), ("after-readback", "1"),
                                  ("after-readback", "0")], variables={"HOTLINE": hotline})
    await CallFlow(channel, MENUS[hotline], prompts, FakeTickets({TICKET: READBACK})).run()
    assert prompts.dynamic_texts == [READBACK]
    assert channel.heard.count("dyn-1") == 2  # read, then read again on 1
    assert channel.variables["LOOKUP_TICKET"] == TICKET
    assert channel.variables["BUSINESS"] == "progress"
    assert channel.path.startswith(f"main:4>ticket:{TICKET}")


@pytest.mark.parametrize("hotline", HOTLINES)
async def test_progress_malformed_and_unknown_numbers_get_a_clear_message_and_a_retry(hotline):
    channel = await call(hotline, ("menu-main", "4"), ("ticket-entry", "12345"), ("ticket-entry", "2024100199999"),
                         ("ticket-entry", TICKET), ("after-readback", "0"), tickets=FakeTickets({TICKET: READBACK}))
    assert "ticket-malformed" in channel.heard and "ticket-unknown" in channel.heard
    assert channel.variables["LOOKUP_TICKET"] == TICKET
    assert channel.path == f"main:4>ticket:ticket-malformed>ticket:ticket-unknown>ticket:{TICKET}>readback:0"


@pytest.mark.parametrize("hotline", HOTLINES)
async def test_progress_three_bad_numbers_then_an_agent(hotline):
    channel = await call(hotline, ("menu-main", "4"), ("ticket-entry", "1"), ("ticket-entry", "2"),
                         ("ticket-entry", "3"))
    assert channel.heard.count("ticket-entry") == 3
    assert (channel.route, channel.queue) == ("queue", f"{hotline}-general")
    assert channel.path.endswith("ticket:no-choice")


@pytest.mark.parametrize("hotline", HOTLINES)
async def test_callers_with_open_tickets_are_offered_them_first(hotline):
    other = "2024100210002"
    tickets = FakeTickets({TICKET: READBACK, other: "另一件"}, {"13912345678": [TICKET, other]})
    prompts = FakePrompts()
    channel = FakeChannel(script=[("menu-main", "4"), ("dyn-1", "2"), ("after-readback", "0")],
                          variables={"HOTLINE": hotline})
    await CallFlow(channel, MENUS[hotline], prompts, tickets).run()
    offer = prompts.dynamic_texts[0]
    assert "您有2件正在办理的工单" in offer and "尾号0001" in offer and "尾号0002" in offer
    assert prompts.dynamic_texts[1] == "另一件"
    assert channel.variables["LOOKUP_TICKET"] == other
    assert "ticket-entry" not in channel.heard
    # 9 = another number: the caller keys it as usual
    typed = await call(hotline, ("menu-main", "4"), ("dyn-1", "9"), ("ticket-entry", TICKET), ("after-readback", "0"),
                       tickets=tickets)
    assert typed.variables["LOOKUP_TICKET"] == TICKET


@pytest.mark.parametrize("hotline", HOTLINES)
async def test_after_hours_says_the_hours_and_takes_a_message(hotline):
    channel = await call(hotline, ("greeting", "2"), staffed=False)
    assert channel.heard == [f"{hotline}-greeting", "after-hours"]
    assert channel.route == "voicemail" and "TARGET_QUEUE" not in channel.variables
    assert channel.path == "after-hours"


async def test_a_caller_who_hangs_up_stops_the_flow():
    channel = FakeChannel(hang_up_after=1, variables={"HOTLINE": "12301"})
    with pytest.raises(CallerHungUp):
        await CallFlow(channel, MENUS["12301"], FakePrompts(), FakeTickets()).run()
    assert "IVR_ROUTE" not in channel.variables


@pytest.mark.parametrize("key, route", [("1", "voicemail"), ("2", "callback"), ("", "voicemail"), ("5", "voicemail")])
async def test_queue_timeout_offers_voicemail_or_a_callback(key, route):
    channel = FakeChannel(script=[("queue-timeout", key)] if key else [], variables={"IVR_PATH": "main:3"})
    result = await QueueTimeoutFlow(channel, FakePrompts()).run()
    assert result.route == route == channel.route
    assert channel.path == f"main:3>queue-timeout:{key or 'timeout'}"
    assert channel.variables.get("CALLBACK_NUMBER") == ("13912345678" if route == "callback" else None)


async def test_queue_timeout_callback_without_a_caller_id_takes_a_message():
    channel = FakeChannel(script=[("queue-timeout", "2")], caller="")
    assert (await QueueTimeoutFlow(channel, FakePrompts()).run()).route == "voicemail"
    assert "no-callback-number" in channel.heard and "CALLBACK_NUMBER" not in channel.variables


@pytest.mark.parametrize("hotline", ["12301", "12365"])
@pytest.mark.parametrize(("script", "grade", "thanked"), [
    ([("survey", "1")], "satisfied", True),
    ([("survey", "2")], "basic", True),
    ([("survey", "3")], "dissatisfied", True),
    ([("survey", "7"), ("survey", "3")], "dissatisfied", True),  # no grade on 7: asked again
    ([], "unrated", False),  # silence on every try: 未评价
])
async def test_the_survey_turns_a_key_into_a_grade(hotline, script, grade, thanked):
    survey = MENUS[hotline].survey
    channel = FakeChannel(script=list(script))
    assert await SurveyFlow(channel, survey, FakePrompts()).run() == grade
    assert channel.variables["SURVEY_RESULT"] == grade
    assert (f"{hotline}-survey-thanks" in channel.heard) is thanked
    assert channel.heard.count(f"{hotline}-survey") == (len(script) if script else survey.retries)
