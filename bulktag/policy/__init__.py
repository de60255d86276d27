"""Pure rules, no I/O: what an AWS error means (`classify.py`), what to tell the user about it
(`advice.py`), which tags are valid (`tags.py`), and what a job changes on one resource
(`changes.py`: send or skip, before-images, guardrails, undo bodies). Change these freely:
their tests need no endpoint."""
