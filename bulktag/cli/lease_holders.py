"""Words for leases held by another owner that still looks alive (`bulktag run --no-wait`)."""

from __future__ import annotations

import time

from bulktag.engine.dispatcher import LeaseHolders
from bulktag.store.models import owner_host_pid


def describe_owner(owner: str) -> str:
    """`worker vm:2909:7d3f (pid 2909 on vm)` from an owner token."""
    host, pid = owner_host_pid(owner)
    if not pid:
        return owner
    return f"{owner} (pid {pid} on {host})"


def describe_blocked(holders: LeaseHolders) -> str:
    """One line: how many items, whose, and until when they stay theirs at most."""
    whose = ", ".join(describe_owner(o) for o in holders.owners) or \
        "an owner no longer registered"
    until = time.strftime("%H:%M:%S", time.localtime(holders.stale_at))
    left = max(0, round(holders.stale_at - time.time()))
    return (f"{holders.items} open item(s) wait on leases of another worker that still looks "
            f"alive: "
            f"{whose}; they come back when it finishes, or when its heartbeat is stale "
            f"(at {until}, in ~{left} s, unless it beats again); `bulktag run` without "
            f"--no-wait waits for them")
