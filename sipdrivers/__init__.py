"""Simulated far ends of the platform, shared by the tests and bench/: SIPp agent phones (``phones``),
citizens calling from the carrier trunk and the carrier answering outbound calls (``carrier``), their SIPp
scenarios (``scenarios/``) and the speech they send and read back from recordings (``audio``).

Not service code: nothing in the platform's own packages imports it (import-linter contract in pyproject.toml).
"""
