"""Erlang C sizing, checked against pyworkforce's implementation on the same inputs."""

from __future__ import annotations

import pytest
from pyworkforce.queuing import ErlangC

from cti.sizing import agents_needed, average_speed_of_answer, erlang_c, service_level

CASES = [
    # calls per hour, average handling time (s), answer target (s), service level target
    (100, 180, 60, 0.8),
    (300, 240, 20, 0.8),
    (1200, 300, 60, 0.9),
    (40, 420, 60, 0.8),
]


@pytest.mark.parametrize(("calls", "aht", "target", "level"), CASES)
def test_agents_needed_matches_pyworkforce(calls, aht, target, level):
    reference = ErlangC(transactions=calls, asa=target / 60, aht=aht / 60, interval=60, shrinkage=0.0)
    expected = reference.required_positions(service_level=level, max_occupancy=0.85)
    ours = agents_needed(calls, aht, target_seconds=target, target_service_level=level, max_occupancy=0.85)
    assert ours.agents == expected["raw_positions"]
    assert ours.service_level == pytest.approx(expected["service_level"], abs=1e-6)
    assert ours.occupancy == pytest.approx(expected["occupancy"], abs=1e-6)


@pytest.mark.parametrize(("agents", "calls", "aht"), [(10, 100, 300), (55, 1200, 150), (3, 20, 240)])
def test_waiting_probability_and_service_level_match_pyworkforce(agents, calls, aht):
    traffic = calls * aht / 3600
    reference = ErlangC(transactions=calls, asa=1, aht=aht / 60, interval=60, shrinkage=0.0)
    assert erlang_c(agents, traffic) == pytest.approx(reference.waiting_probability(agents), rel=1e-9)
    assert service_level(agents, traffic, aht, 60) == pytest.approx(reference.service_level(agents), rel=1e-9)
    # Average speed of answer follows from the same waiting probability (Erlang C's ASA formula).
    assert average_speed_of_answer(agents, traffic, aht) == pytest.approx(
        reference.waiting_probability(agents) * aht / (agents - traffic), rel=1e-9)


def test_too_few_agents_never_meet_any_target():
    assert service_level(5, 6.0, 180, 60) == 0.0
    assert erlang_c(5, 6.0) == 1.0
