"""The CTI's consumer and Asterisk's books as pure logic (the stack tests are tests/cti/test_cti_outages.py).

A handler that raises must not stop consumption; what failed is remembered for repair and the
watermark never passes it; a dead or stuck consumer is reported and, when stuck for long, must end the
process. queue_log is read from the gap on, also from the middle of a large file.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from cti import consumer as consumer_module
from cti.books import read_queue_log
from cti.consumer import Consumer, Handler, Watermark


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def exception(self, event: str, **kw) -> None:
        self.lines.append((event, kw))

    warning = info = exception


def _event(name: str, stamp: float) -> dict:
    return {"Event": name, "Timestamp": f"{stamp:.6f}"}


async def test_a_failing_handler_does_not_stop_consumption_and_holds_the_watermark(tmp_path: Path):
    handled: list[str] = []

    async def calls(event: dict) -> bool:
        if event["Event"] == "AgentConnect":
            return False  # e.g. the database refused the write
        handled.append(event["Event"])
        return True

    async def agents(event: dict) -> None:
        if event["Event"] == "AgentComplete":
            raise ConnectionError("Redis is away")

    queue: asyncio.Queue = asyncio.Queue()
    watermark = Watermark(tmp_path / "watermark")
    consumer = Consumer(queue, [Handler("calls", calls, "records"), Handler("agents", agents, "agents")],
                        watermark, Log())
    for name, stamp in (("QueueCallerJoin", 100.5), ("AgentConnect", 101.25), ("AgentComplete", 130.0),
                        ("Hangup", 131.0)):
        queue.put_nowait(_event(name, stamp))
    task = consumer.start()
    while consumer.handled < 4:
        await asyncio.sleep(0.01)
    assert not task.done() and consumer.problem() is None
    assert handled == ["QueueCallerJoin", "AgentComplete", "Hangup"]
    assert consumer.agents_failed
    assert consumer.records_failed_from == 101.25 and consumer.last_handled == 131.0
    consumer.persist(force=True)
    assert watermark.load() == 101.25  # not past the event whose record work still needs repair
    consumer.records_repaired()
    assert watermark.load() == 131.0
    task.cancel()


async def test_a_dead_or_stuck_consumer_is_a_problem_and_a_long_stall_must_end_the_process(tmp_path: Path):
    now = [1000.0]
    release = asyncio.Event()

    async def stuck(_event: dict) -> None:
        await release.wait()

    queue: asyncio.Queue = asyncio.Queue()
    consumer = Consumer(queue, [Handler("calls", stuck, "records")], Watermark(tmp_path / "w"), Log(),
                        clock=lambda: now[0])
    task = consumer.start()
    queue.put_nowait(_event("Hangup", 5.0))
    await asyncio.sleep(0.05)
    assert consumer.problem() is None
    now[0] += consumer_module.STALL_SECONDS + 1
    assert "卡住" in consumer.problem() and consumer.must_exit() is None
    now[0] += consumer_module.STALL_EXIT_SECONDS
    assert consumer.must_exit()
    release.set()
    await asyncio.sleep(0.05)
    assert consumer.problem() is None and consumer.handled == 1
    task.cancel()
    await asyncio.sleep(0)
    assert "停止" in consumer.problem() and consumer.must_exit()


async def test_a_slow_call_does_not_hold_up_other_calls_and_each_call_keeps_its_order(tmp_path: Path):
    """Issue 14 item 8: events of different calls are applied side by side, one call's in order, and the
    watermark never passes an event still waiting in its lane."""
    release = asyncio.Event()
    applied: list[tuple[str, str]] = []

    async def calls(event: dict) -> None:
        if event["CallId"] == "slow" and event["Event"] == "AgentCalled":
            await release.wait()  # e.g. a write waiting for a busy database
        applied.append((event["CallId"], event["Event"]))

    queue: asyncio.Queue = asyncio.Queue()
    consumer = Consumer(queue, [Handler("calls", calls, "records")], Watermark(tmp_path / "w"), Log(),
                        key=lambda event: event["CallId"])
    names = ("QueueCallerJoin", "AgentCalled", "AgentConnect", "Hangup")
    for offset, name in enumerate(names):
        for call, base in (("slow", 100.0), ("quick", 100.5)):
            queue.put_nowait({**_event(name, base + offset), "CallId": call})
    task = consumer.start()
    while consumer.handled < 5:
        await asyncio.sleep(0.01)
    assert [e for c, e in applied if c == "quick"] == list(names)  # all of it while "slow" still waits
    assert [e for c, e in applied if c == "slow"] == ["QueueCallerJoin"]
    assert consumer.mark() == 101.0  # slow's AgentCalled is not handled yet: the watermark stays before it
    release.set()
    while consumer.handled < 8:
        await asyncio.sleep(0.01)
    assert [e for c, e in applied if c == "slow"] == list(names)
    assert consumer.mark() == 103.5
    task.cancel()


async def test_no_call_waits_for_another_however_many_calls_there_are(tmp_path: Path):
    """Issue 14 item 8: one lane per call, not a fixed set shared by hash: with 64 calls and one of them
    stuck in a write, every other call is applied to its end (a lane shared with the stuck call would
    hold its events back)."""
    release = asyncio.Event()
    applied: dict[str, list[str]] = {}

    async def calls(event: dict) -> None:
        if event["CallId"] == "call-0" and event["Event"] == "AgentCalled":
            await release.wait()
        applied.setdefault(event["CallId"], []).append(event["Event"])

    queue: asyncio.Queue = asyncio.Queue()
    consumer = Consumer(queue, [Handler("calls", calls, "records")], Watermark(tmp_path / "w"), Log(),
                        key=lambda event: event["CallId"])
    names = ("QueueCallerJoin", "AgentCalled", "Hangup")
    for offset, name in enumerate(names):
        for n in range(64):
            queue.put_nowait({**_event(name, 100.0 + offset + n / 100), "CallId": f"call-{n}"})
    task = consumer.start()
    while consumer.handled < 64 * 3 - 2:
        await asyncio.sleep(0.01)
    assert all(applied[f"call-{n}"] == list(names) for n in range(1, 64))
    assert applied["call-0"] == ["QueueCallerJoin"]
    assert consumer.mark() == 101.0  # the stuck event's stamp: the watermark does not pass it
    release.set()
    while consumer.handled < 64 * 3:
        await asyncio.sleep(0.01)
    assert applied["call-0"] == list(names) and consumer.problem() is None
    assert not consumer._workers and not consumer._lanes  # a call's task ends with its last event
    task.cancel()


QUEUE_LOG = """\
{t0}|NONE|NONE|NONE|QUEUESTART|
{t1}|hl-1|12301-complaint|NONE|ENTERQUEUE||13700000001|1
{t2}|hl-1|12301-complaint|王丽(agent1)|RINGNOANSWER|1000
{t3}|hl-1|12301-complaint|张敏(agent3)|CONNECT|7|1796000000.12|1
{t4}|hl-1|12301-complaint|张敏(agent3)|BLINDTRANSFER|12365-report|desk-transfer|7|20|1
{t5}|hl-2|12301-general|NONE|ENTERQUEUE||13700000002|1
{t6}|hl-2|12301-general|NONE|ABANDON|1|1|9
"""


def test_queue_log_gives_answer_agent_wait_transfer_and_abandonment(tmp_path: Path):
    path = tmp_path / "queue_log"
    # Thousands of older calls first, so the reader has to find the gap in the middle of the file.
    filler = "".join(f"{1_700_000_000 + i}|old-{i}|12301-general|NONE|ENTERQUEUE||1|1\n" for i in range(5000))
    base = 1_800_000_000
    path.write_text(filler + QUEUE_LOG.format(**{f"t{i}": base + 10 * i for i in range(7)}))
    calls = read_queue_log(path, datetime.fromtimestamp(base, UTC))
    assert set(calls) == {"hl-1", "hl-2"}
    first, second = calls["hl-1"], calls["hl-2"]
    assert first.queue == "12301-complaint" and first.entered.timestamp() == base + 10
    assert first.connected.timestamp() == base + 30 and first.username == "agent3" and first.holdtime == 7
    assert first.transfers == [{"kind": "blind", "at": datetime.fromtimestamp(base + 40, UTC).isoformat(),
                                "result": "Success", "to": "12365-report", "agent": "张敏(agent3)"}]
    assert first.calltime == 20
    assert second.connected is None and second.abandoned_wait == 9
    assert set(read_queue_log(path, datetime.fromtimestamp(base, UTC), {"hl-2"})) == {"hl-2"}


def test_an_answer_in_queue_log_overrules_an_abandoned_guess():
    from cti.books import QueueCall
    from cti.models import CallRecord, CallState
    from cti.reconcile import apply_queue_facts

    at = lambda s: datetime.fromtimestamp(1_800_000_000 + s, UTC)  # noqa: E731
    record = CallRecord(call_id="hl-9", started_at=at(0), queued_at=at(10.4), ended_at=at(60.7), abandoned=True,
                        wait_seconds=50.3, state=CallState.ENDED, hold_seconds=0.0, transfers=[])
    queue = QueueCall("hl-9", queue="12301-complaint", entered=at(10), connected=at(22), member="王丽(agent1)",
                      holdtime=12, ended=at(60), calltime=38)
    assert apply_queue_facts(record, queue, 7, "8001")
    assert record.answered_at == at(22) and not record.abandoned and record.wait_seconds == 12
    assert record.agent_id == 7 and record.agent_extension == "8001" and record.state == CallState.ENDED
    assert abs(record.talk_seconds - 38.7) < 1e-6
    assert record.queued_at == at(10.4)  # the live, finer value is kept
    assert not apply_queue_facts(record, queue, 7, "8001")  # nothing more to repair


def test_the_breaker_skips_a_failed_part_for_a_while_and_a_success_closes_it():
    from cti.consumer import Breaker

    now = [0.0]
    breaker = Breaker(pause=5, clock=lambda: now[0])
    assert not breaker.tripped
    breaker.failed()
    now[0] = 4.9
    assert breaker.tripped
    now[0] = 5.1
    assert not breaker.tripped
    breaker.failed()
    breaker.succeeded()
    assert not breaker.tripped


async def test_the_tracker_gate_lets_handlers_run_together_and_a_repair_run_alone():
    from cti.tracker import Gate

    gate, order = Gate(), []
    first_in, let_go = asyncio.Event(), asyncio.Event()

    async def handler(name: str) -> None:
        async with gate.shared():
            order.append(f"{name} in")
            first_in.set()
            await let_go.wait()
            order.append(f"{name} out")

    async def repair() -> None:
        async with gate.exclusive():
            order.append("repair")

    one, two = asyncio.create_task(handler("a")), asyncio.create_task(handler("b"))
    await first_in.wait()
    await asyncio.sleep(0.01)
    fixing = asyncio.create_task(repair())
    await asyncio.sleep(0.01)
    late = asyncio.create_task(handler("c"))  # arrives while the repair waits: kept out until it is done
    await asyncio.sleep(0.01)
    assert order == ["a in", "b in"]  # both handlers at once; the repair waits for them
    let_go.set()
    await asyncio.gather(one, two, fixing, late)
    assert order.index("repair") > max(order.index("a out"), order.index("b out"))
    assert order.index("c in") > order.index("repair")


async def test_no_handler_slips_in_between_two_repairs_run_back_to_back():
    """After every AMI login the CTI repairs twice in a row (crash recovery, then reconciliation), the
    gate closed for each. Handlers waiting at the gate were woken by the first repair's end and ran
    alongside the second: on a restarted CTI the first events of a call created its record while
    reconciliation wrote the same calls (a record without its caller's number, or reconciliation
    failing on a duplicate call id)."""
    from cti.tracker import Gate

    gate, order = Gate(), []

    async def handler() -> None:
        async with gate.shared():
            order.append("handler")

    async def repairs() -> None:
        async with gate.exclusive():
            order.append("crash recovery")
            await asyncio.sleep(0.01)
        async with gate.exclusive():  # no await between the two: as in cti.service.resynchronise
            order.append("reconcile in")
            await asyncio.sleep(0.01)
            order.append("reconcile out")

    repairing = asyncio.create_task(repairs())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(handler())  # an event that arrived while the crash recovery ran
    await asyncio.gather(repairing, waiting)
    assert order == ["crash recovery", "reconcile in", "reconcile out", "handler"]
