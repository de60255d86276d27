"""Free TCP ports on 127.0.0.1 for servers a test starts in another process (the daemon, moto).

The port is free when asked for; a server started right after takes it. Servers started in this
process bind port 0 themselves instead."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A 127.0.0.1 port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
