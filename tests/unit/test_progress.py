"""The progress bar on a terminal and log lines together: an event logged while the bar is drawn
is written on a clean line and the bar drawn again below it; after close, plain lines."""

from __future__ import annotations

import json


def test_log_lines_do_not_land_in_the_progress_bar() -> None:
    import io

    import structlog

    from bulktag.logs import configure_logging
    from bulktag.progress import CLEAR_LINE, Progress
    from bulktag.store import Counts

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    configure_logging("json", "info", stream=stream)
    try:
        bar = Progress(7, stream=stream)
        bar.update(Counts({"pending": 5, "succeeded": 5}))
        structlog.get_logger("t").info("shard_slowed", rate=2.5)
        bar.close()
        text = stream.getvalue()
        # the bar is cleared, the event written on a clean line, the bar drawn again below
        first, after = text.split("\n", 1)
        bar_part, event = first.rsplit(CLEAR_LINE, 1)
        assert bar_part.startswith(CLEAR_LINE + "job 7 [") and "5/10" in bar_part
        assert json.loads(event)["event"] == "shard_slowed"
        assert after.startswith("job 7 [") and "5/10" in after
        structlog.get_logger("t").info("after_close")  # no bar: a plain line
        assert stream.getvalue().endswith("\n") and \
            CLEAR_LINE not in stream.getvalue().rsplit("\n", 2)[-2]
    finally:
        configure_logging("json", "info")


def test_asyncpgs_own_warning_is_one_event_without_a_traceback() -> None:
    """asyncpg's pool logs "Failed to restore the pool connection floor" with the exception
    while the database restarts: one structured event, no traceback, at most one in 30 s."""
    import io
    import json
    import logging

    import bulktag.store.postgres  # noqa: F401  (installs the bridge)
    from bulktag.logs import configure_logging

    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    try:
        pool = logging.getLogger("asyncpg.pool")
        for _ in range(3):
            try:
                raise ConnectionError("the database system is shutting down")
            except ConnectionError:
                pool.warning("Failed to restore the pool connection floor; retrying",
                             exc_info=True)
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1, lines
        event = json.loads(lines[0])
        assert event["event"] == "store_unreachable"
        assert event["error"] == "ConnectionError: the database system is shutting down"
        assert "Traceback" not in stream.getvalue()
    finally:
        configure_logging("json", "info")
