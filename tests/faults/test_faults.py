"""The standing fault suite (issue 13): each part of the platform killed with calls in the IVR, waiting
and talking, briefly (SIGKILL, the supervisor restarts it) and for 15 s, at the worst moment for it; then
every call record is compared with Asterisk's queue_log and CDR and SIPp's own list of calls.

The scenarios share one stack and one pair of agents and run one after the other (about half a minute
each); the table of results is printed at the end of the run and written to the pytest temp folder.
"""

from __future__ import annotations

import pytest

from tests.faults.harness import Fault, record

pytestmark = pytest.mark.stack

FAULTS = [
    # The IVR matters while calls are inside it: they must fall through to the general queue.
    Fault("ivr", "kill", "ivr"),
    Fault("ivr", "outage", "ivr"),
    # The CTI: killed as an agent answers, as a citizen hangs up, and away while calls ring, are answered
    # and end (issue 13, defect 2: answers during the outage).
    Fault("cti", "kill", "answer"),
    Fault("cti", "kill", "hangup"),
    Fault("cti", "outage", "ring"),
    # Redis: agent lookups, pops and heartbeats (defect 1: the CTI stopped following calls after 15 s).
    Fault("redis", "kill", "ring"),
    Fault("redis", "outage", "ring"),
    # The desk: calls and records must not notice.
    Fault("agent_desk", "kill", "answer"),
    Fault("agent_desk", "outage", "ring"),
    # The recordings worker, as a call ends (its recording is due to be filed); kills while it compresses
    # are in test_recordings_worker.py.
    Fault("recordings", "kill", "hangup"),
    Fault("recordings", "outage", "hangup"),
    # Asterisk itself: every open record closed with its own cause, the citizens called back.
    Fault("asterisk", "kill", "answer"),
    Fault("asterisk", "outage", "answer"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name.replace(" @", "-").replace(" ", "-") for f in FAULTS])
async def test_fault_loses_no_call(fault_runner, fault_table, fault: Fault) -> None:
    outcome = await fault_runner.run(fault)
    record(outcome)
    assert outcome.clean, "\n".join(outcome.problems)
