"""The cluster ACD's matching of free agents to waiting callers (cti.routing.assign), pure logic."""

from __future__ import annotations

from cti.routing import FreeAgent, Waiting, assign, home_node


def _agent(agent_id: int, node: str, queues: list[str], since: float = 0) -> FreeAgent:
    return FreeAgent(agent_id, f"80{agent_id:02d}", node, queues, since)


def test_the_oldest_caller_across_nodes_gets_the_free_agent_wherever_it_sits() -> None:
    callers = [("node1/a", Waiting("q", "node1", joined=20)), ("node2/b", Waiting("q", "node2", joined=10))]
    assert assign(callers, [_agent(1, "node1", ["q"])]) == {1: "node2"}


def test_a_caller_already_offered_to_an_agent_takes_nobody_else() -> None:
    callers = [("node2/b", Waiting("q", "node2", joined=10, offered=True)),
               ("node1/a", Waiting("q", "node1", joined=20))]
    assert assign(callers, [_agent(1, "node2", ["q"])]) == {1: "node1"}


def test_skills_decide_and_an_agent_on_the_callers_node_goes_first() -> None:
    callers = [("node1/a", Waiting("other", "node1", joined=5)), ("node2/b", Waiting("q", "node2", joined=10)),
               ("node1/c", Waiting("q", "node1", joined=11))]
    free = [_agent(1, "node1", ["q"], since=1), _agent(2, "node2", ["q"], since=2)]
    # b (node2) takes agent 2 already there, c (node1) agent 1; nobody has the skill of a.
    assert assign(callers, free) == {2: "node2", 1: "node1"}
    # Nobody waiting for them: agents are not moved.
    assert assign([], free) == {}


def test_home_nodes_take_turns() -> None:
    assert [home_node(["node1", "node2"], agent_id) for agent_id in (1, 2, 3)] == ["node2", "node1", "node2"]
