"""The application layer: what the CLI, the daemon, the dashboard, the demo and the tests ask
bulktag to do, as functions with typed parameters. `jobs.py` submits and describes jobs,
`runs.py` runs them to the end (signals, progress, settling, exports). Nothing here parses
arguments or prints; the front ends do that with what these functions return.
"""
