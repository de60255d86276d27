"""Front end over HTTP: the daemon (`daemon.py`: /healthz, /metrics, the sync-rule loop) and the
dashboard it serves (`dashboard/`). Like the CLI, they call the application layer for work."""
