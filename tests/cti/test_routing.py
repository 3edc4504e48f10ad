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


def test_a_callers_position_counts_the_earlier_callers_of_its_queue_on_every_node() -> None:
    from cti.announce import position

    waiting = {"node1/a": Waiting("q", "node1", joined=1), "node1/b": Waiting("q", "node1", joined=2),
               "node2/c": Waiting("q", "node2", joined=3), "node2/d": Waiting("other", "node2", joined=0),
               "node1/e": Waiting("q", "node1", joined=4, offered=True)}
    # c, on node2, is behind a and b on node1 (app_queue on node2 would say 1); d's queue does not count.
    assert [position(waiting.items(), key) for key in ("node1/a", "node1/b", "node2/c", "node2/d", "node1/e")] \
        == [1, 2, 3, 1, 4]


def test_the_expected_wait_is_app_queues_average_over_every_nodes_answers_less_the_wait_so_far() -> None:
    from cti.announce import expected_wait, next_holdtime, spoken_wait

    average = None
    for holdtime in (40, 80):  # e.g. one answered on node1, then one on node2
        average = next_holdtime(average, holdtime)
    assert average == 50
    assert expected_wait(average, 12.4) == 38 and expected_wait(average, 70) == 0 and expected_wait(None, 1) == 0
    assert spoken_wait(38) == (0, 30) and spoken_wait(125) == (2, 0) and spoken_wait(7) == (0, 0)
