"""Log levels: aiosmtpd's per-connection and per-command lines belong to DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from app.config import Settings
from app.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    loggers = {name: logging.getLogger(name).level for name in ("mail.log", "arq", "")}
    handlers = list(logging.getLogger().handlers)
    yield
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().handlers[:] = handlers
    structlog.reset_defaults()


@pytest.mark.parametrize(
    ("level", "aiosmtpd_level"),
    [("DEBUG", logging.DEBUG), ("INFO", logging.WARNING), ("WARNING", logging.WARNING)],
)
def test_aiosmtpd_command_lines_only_at_debug(restore_logging, level, aiosmtpd_level) -> None:
    configure_logging(Settings(log_level=level, _env_file=None))  # type: ignore[call-arg]
    mail_log = logging.getLogger("mail.log")
    assert mail_log.getEffectiveLevel() == aiosmtpd_level
    assert not mail_log.isEnabledFor(logging.INFO) or level == "DEBUG"
    assert mail_log.isEnabledFor(logging.WARNING)  # its warnings (bogus commands) stay


def test_error_level_keeps_aiosmtpd_at_error(restore_logging) -> None:
    configure_logging(Settings(log_level="ERROR", _env_file=None))  # type: ignore[call-arg]
    assert logging.getLogger("mail.log").getEffectiveLevel() == logging.ERROR
