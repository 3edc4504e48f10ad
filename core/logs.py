"""Structured (JSON lines) logging for every Python service; the supervisor files them per service."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def setup_logging(service: str, level: int = logging.INFO, stream: TextIO | None = None) -> structlog.stdlib.BoundLogger:
    """JSON lines to ``stream`` (stdout by default; classic AGI must log to stderr: stdout is its channel)."""
    stream = stream or sys.stdout
    logging.basicConfig(stream=stream, level=level, format="%(message)s")
    for noisy in ("aiohttp.access", "panoramisk", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger(service=service)
