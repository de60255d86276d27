"""The application layer: what the CLI, the daemon, the dashboard, the demo and the tests ask
bulktag to do, as functions with typed parameters. Submitting (`submit.py`, `jobs.py`), running
to the end (`runs.py`), steering (`steering.py`: pause, resume, cancel, priority), planning and
dry runs (`plan.py`), checking (`verify.py`, `preflight.py`), reading (`inventory.py`,
`report.py`, `export.py`), undo (`undo.py`), tag-sync rules (`sync_rules.py`), moving a store
(`store_copy.py`) and the fleet's workers (`workers.py`). Nothing here parses arguments or
prints; the front ends do that with what these functions return.
"""
