"""The `bulktag` command in subprocesses: what a user or an operator runs."""
