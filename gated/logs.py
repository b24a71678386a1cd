"""Structured logs: one JSON object per line on stdout (journald keeps them).

Keys never reach a log line: nothing in gated passes key bytes to a logger,
and `KeyRing`'s repr shows kids only.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", *, stream=None) -> None:
    stream = stream or sys.stdout
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=stream, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
