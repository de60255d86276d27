"""Front end: the `bulktag` command. `main.py` parses arguments and dispatches; `service.py`
holds the daemon, sync-rule and store commands; `output.py` prints (tables, `--json`);
`lease_holders.py` words for leases another worker holds; `demo.py` the quick start's demo.
The commands do no work themselves: they call the application layer (`bulktag.app`)."""

from bulktag.cli.main import main

__all__ = ["main"]
