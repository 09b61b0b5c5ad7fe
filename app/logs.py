"""structlog set-up: key-value lines in development, JSON in production. Secrets never logged:
settings are pydantic SecretStr, tokens are stored and logged only as hashes.
"""

from __future__ import annotations

import logging

import structlog

from app.config import Settings


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level)
    logging.basicConfig(level=level, format="%(message)s")
    # arq logs every job start/finish at INFO (every sweep, every few seconds): keep it for DEBUG
    logging.getLogger("arq").setLevel(level if level <= logging.DEBUG else logging.WARNING)
    # aiosmtpd logs every connection and every SMTP command at INFO (5-6 lines per message, ~15%
    # of the MX's throughput): per-command lines belong to DEBUG. The MX writes one structured
    # line per message itself (app.mx.handler); aiosmtpd's warnings stay.
    logging.getLogger("mail.log").setLevel(
        level if level <= logging.DEBUG else max(level, logging.WARNING)
    )
    renderer = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
