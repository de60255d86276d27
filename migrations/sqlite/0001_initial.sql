-- bulktag store, first shape: jobs, items, tagsets, shards, and counters kept by triggers so that
-- `status` reads a handful of rows instead of counting millions of items.

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY,
    name          TEXT,
    operation     TEXT    NOT NULL CHECK (operation IN ('tag', 'untag')),
    state         TEXT    NOT NULL CHECK (state IN ('preparing', 'ready', 'active', 'paused',
                                                    'completed', 'failed', 'cancelled')),
    priority      INTEGER NOT NULL DEFAULT 0,
    options       TEXT    NOT NULL DEFAULT '{}',   -- JSON: tags/keys, thresholds, budgets
    owner         TEXT,                            -- process preparing the job, while it does
    created_at    REAL    NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    updated_at    REAL    NOT NULL,
    rate          REAL    NOT NULL DEFAULT 0,      -- items finished per second, smoothed
    reason        TEXT                             -- why the job failed or was cancelled
);

CREATE TABLE shards (
    id         INTEGER PRIMARY KEY,
    partition  TEXT NOT NULL,
    account    TEXT NOT NULL,
    region     TEXT NOT NULL,
    UNIQUE (partition, account, region)
);

CREATE TABLE tagsets (
    id      INTEGER PRIMARY KEY,
    digest  TEXT NOT NULL UNIQUE,     -- sha256 of body
    body    TEXT NOT NULL             -- JSON: {"k": "v"} for tag jobs, ["k", ...] for untag jobs
);

-- shard_id 0 and tagset_id 0 stand for "none": invalid items that never reach the API.
CREATE TABLE items (
    id               INTEGER PRIMARY KEY,
    job_id           INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    arn              TEXT    NOT NULL,
    shard_id         INTEGER NOT NULL,
    tagset_id        INTEGER NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'leased', 'succeeded', 'skipped',
                                                       'failed', 'invalid', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL    NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at REAL,
    error_code       TEXT,
    http_status      INTEGER,
    message          TEXT,
    finished_at      REAL,
    line             INTEGER,
    UNIQUE (job_id, arn)
);

-- Claims read only pending rows; a partial index shrinks as the job advances.
CREATE INDEX items_pending ON items (job_id, shard_id, tagset_id, next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX items_leased ON items (lease_owner, lease_expires_at) WHERE state = 'leased';
CREATE INDEX items_unsuccessful ON items (job_id, id) WHERE state IN ('failed', 'invalid');

CREATE TABLE counts (
    job_id    INTEGER NOT NULL,
    shard_id  INTEGER NOT NULL,
    state     TEXT    NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (job_id, shard_id, state)
) WITHOUT ROWID;

CREATE TABLE error_counts (
    job_id      INTEGER NOT NULL,
    error_code  TEXT    NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (job_id, error_code)
) WITHOUT ROWID;

-- Inserts are counted by Store.add_items, once per chunk from the rows it inserted (a trigger
-- firing per row cost a fifth of the enqueue time); updates and deletes by the triggers below.
-- Anything else that inserts items must add them to counts and error_counts itself.

CREATE TRIGGER items_count_update AFTER UPDATE OF state ON items
WHEN OLD.state <> NEW.state BEGIN
    UPDATE counts SET n = n - 1
        WHERE job_id = OLD.job_id AND shard_id = OLD.shard_id AND state = OLD.state;
    INSERT INTO counts (job_id, shard_id, state, n) VALUES (NEW.job_id, NEW.shard_id, NEW.state, 1)
        ON CONFLICT (job_id, shard_id, state) DO UPDATE SET n = n + 1;
    UPDATE error_counts SET n = n - 1
        WHERE OLD.state IN ('failed', 'invalid') AND job_id = OLD.job_id
          AND error_code = coalesce(OLD.error_code, 'Unknown');
    INSERT INTO error_counts (job_id, error_code, n)
        SELECT NEW.job_id, coalesce(NEW.error_code, 'Unknown'), 1 WHERE NEW.state IN ('failed', 'invalid')
        ON CONFLICT (job_id, error_code) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER items_count_delete AFTER DELETE ON items BEGIN
    UPDATE counts SET n = n - 1
        WHERE job_id = OLD.job_id AND shard_id = OLD.shard_id AND state = OLD.state;
    UPDATE error_counts SET n = n - 1
        WHERE OLD.state IN ('failed', 'invalid') AND job_id = OLD.job_id
          AND error_code = coalesce(OLD.error_code, 'Unknown');
END;

-- Processes that hold leases. A row whose process is gone (same host, pid dead) or whose
-- heartbeat is stale marks leases that can be returned to the queue.
CREATE TABLE owners (
    owner         TEXT PRIMARY KEY,
    host          TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    REAL    NOT NULL,
    heartbeat_at  REAL    NOT NULL
);
