"""Tickets: registration, risk grading, dispatch, workflow and deadlines."""
