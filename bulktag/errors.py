"""One error hierarchy: every error a user can meet is a `BulktagError` that carries the exit
code it maps to, and `cli.main` handles them in one place (`bulktag: error: <message>`, that
exit code). Anything else that escapes is a bug: its traceback is shown with EXIT_BUG.

This module imports nothing of bulktag, so every layer may raise these.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2  #: bad input or usage; nothing was enqueued
EXIT_FAILED = 3  #: some items failed (or the job failed its threshold, or was cancelled)
EXIT_EXPORT = 4  #: the report could not be written (bucket missing, access denied ...)
EXIT_BLOCKED = 5  #: `run --no-wait`: another live worker holds the job's leases
EXIT_BUG = 70  #: an unexpected error: a bug in bulktag (EX_SOFTWARE)
EXIT_INTERRUPTED = 130  #: Ctrl-C / SIGTERM: in-flight work finished, the rest released


class BulktagError(Exception):
    """An error bulktag reports as one line and an exit code (not a bug)."""

    exit_code = EXIT_USAGE


class UsageError(BulktagError):
    """Bad input or usage: printed as `bulktag: error: ...`, exit 2."""


class JobBusy(BulktagError):
    """A job's outcomes may still change (items in flight): exit 5, try again later."""

    exit_code = EXIT_BLOCKED
