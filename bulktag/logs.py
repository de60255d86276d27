"""structlog set-up: key-value events to stderr, console-rendered on a terminal, JSON otherwise."""

from __future__ import annotations

import logging
import sys
import time
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
    _bridge_library_warnings()
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


class _LibraryWarnings(logging.Handler):
    """Libraries' own warnings (asyncpg's pool restoring its connection floor while the
    database restarts) as one structured event each, without a traceback, at most one a
    30 s per logger: a database restart is an event, not a traceback on the terminal."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._last: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now - self._last.get(record.name, -1e9) < 30:
            return
        self._last[record.name] = now
        exc = record.exc_info[1] if record.exc_info else None
        structlog.get_logger(record.name).warning(
            "store_unreachable" if record.name.startswith("asyncpg") else "library_warning",
            source=record.name, message=record.getMessage(),
            **({"error": f"{type(exc).__name__}: {exc}"} if exc is not None else {}),
            hint="retrying; nothing is lost")


def _bridge_library_warnings() -> None:
    for name in ("asyncpg",):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _LibraryWarnings) for h in logger.handlers):
            logger.addHandler(_LibraryWarnings())
        logger.propagate = False
