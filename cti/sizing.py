"""Staffing by Erlang C: how many agents a call volume needs for a service target.

Used by the team lead's sizing view and by bench/ to state what one machine
serves. Checked in tests against pyworkforce's implementation on the same inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def erlang_c(agents: int, traffic_erlangs: float) -> float:
    """Probability that a call waits (all agents busy), computed stably in log space."""
    if agents <= traffic_erlangs:
        return 1.0
    # Sum_{k<N} A^k/k!  and  A^N/N! * N/(N-A), via a running term to avoid overflow.
    term, total = 1.0, 1.0
    for k in range(1, agents):
        term *= traffic_erlangs / k
        total += term
    top = term * traffic_erlangs / agents * agents / (agents - traffic_erlangs)
    return top / (total + top)


def service_level(agents: int, traffic_erlangs: float, aht_seconds: float, target_seconds: float) -> float:
    """Share of calls answered within ``target_seconds``."""
    if agents <= traffic_erlangs:
        return 0.0
    wait_probability = erlang_c(agents, traffic_erlangs)
    return 1.0 - wait_probability * math.exp(-(agents - traffic_erlangs) * target_seconds / aht_seconds)


def average_speed_of_answer(agents: int, traffic_erlangs: float, aht_seconds: float) -> float:
    if agents <= traffic_erlangs:
        return math.inf
    return erlang_c(agents, traffic_erlangs) * aht_seconds / (agents - traffic_erlangs)


@dataclass(frozen=True)
class Staffing:
    agents: int
    traffic_erlangs: float
    service_level: float
    wait_probability: float
    average_speed_of_answer: float
    occupancy: float


def agents_needed(calls_per_hour: float, aht_seconds: float, target_seconds: float = 60,
                  target_service_level: float = 0.8, max_occupancy: float = 0.85) -> Staffing:
    """Smallest number of agents meeting the service level (e.g. 80 % within 60 s) and occupancy cap."""
    traffic = calls_per_hour * aht_seconds / 3600.0
    agents = max(1, math.ceil(traffic))
    while True:
        level = service_level(agents, traffic, aht_seconds, target_seconds)
        if level >= target_service_level and traffic / agents <= max_occupancy:
            return Staffing(agents, traffic, level, erlang_c(agents, traffic),
                            average_speed_of_answer(agents, traffic, aht_seconds), traffic / agents)
        agents += 1
