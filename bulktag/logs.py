"""structlog set-up: key-value events to stderr, console-rendered on a terminal, JSON otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog


class BarAwareLogger:
    """structlog's PrintLogger, but a line never lands inside the progress bar's line: the
    bar is cleared, the event written, the bar drawn again (progress.write_log_line)."""

    def __init__(self, file: TextIO | None = None) -> None:
        self._file = file

    def msg(self, message: str) -> None:
        from bulktag.progress import write_log_line

        write_log_line(self._file or sys.stderr, message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def _bar_aware_factory(file: TextIO | None) -> Any:
    def factory(*_args: Any) -> BarAwareLogger:
        return BarAwareLogger(file)

    return factory


def configure_logging(fmt: str = "auto", level: str = "info",
                      stream: TextIO | None = None) -> None:
    """`fmt` is auto (console on a terminal, JSON elsewhere), console or json. `stream`:
    where events go (default: sys.stderr as it is at each write)."""
    if fmt == "auto":
        fmt = "console" if (stream or sys.stderr).isatty() else "json"
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=(stream or sys.stderr).isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=_bar_aware_factory(stream),
        cache_logger_on_first_use=False,
    )

