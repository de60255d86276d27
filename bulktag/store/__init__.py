"""The durable queue behind one interface: `Store` (the contract, `base.py`), its records
(`models.py`), the operations written once over named queries (`sqlstore.py`), and two backends
supplying the primitives they run on: SQLite (`sqlite.py`, the embedded default) and PostgreSQL
(`postgres.py`, a fleet on one queue). `await Store.open(url_or_path)` picks the backend."""

from bulktag.store.base import Store, is_postgres_url
from bulktag.store.models import (
    ITEM_STATES,
    JOB_DONE,
    TERMINAL,
    ChangedItem,
    Claimed,
    Counts,
    Discovery,
    ItemRecord,
    ItemState,
    Job,
    JobOptions,
    JobState,
    NewItem,
    NewSyncRule,
    Outcome,
    PausedAccount,
    QueueTotals,
    ReportRow,
    Runnable,
    StoreError,
    SucceededItem,
    SyncMember,
    SyncRule,
    Worker,
    new_owner_token,
    tagset_body,
)

__all__ = [
    "ITEM_STATES", "JOB_DONE", "TERMINAL", "ChangedItem", "Claimed", "Counts", "Discovery",
    "ItemRecord",
    "ItemState", "Job", "JobOptions", "JobState", "NewItem", "NewSyncRule", "Outcome",
    "PausedAccount", "QueueTotals", "ReportRow", "Runnable", "Store", "StoreError",
    "SucceededItem", "SyncMember", "SyncRule", "Worker", "is_postgres_url", "new_owner_token",
    "tagset_body",
]
