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
