-- Discovery: a job's items found by walking GetResources over (account, region) pairs. One row
-- per pair records how far the walk got, so a crash or an expired pagination token resumes or
-- restarts that pair's walk; the UNIQUE (job, arn) of items makes a re-walk add nothing twice.

CREATE TABLE discoveries (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    partition   TEXT    NOT NULL DEFAULT 'aws',
    account     TEXT    NOT NULL,            -- '' = the caller's own account
    region      TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'done', 'failed')),
    owner       TEXT,
    token       TEXT,                        -- next page; valid 15 minutes after token_at
    token_at    REAL,
    pages       INTEGER NOT NULL DEFAULT 0,
    found       INTEGER NOT NULL DEFAULT 0,
    restarts    INTEGER NOT NULL DEFAULT 0,  -- walks begun again (expired token, crash)
    error       TEXT,
    updated_at  REAL,
    UNIQUE (job_id, account, region)
);

-- verify: when an item's tags were last re-read, and what differed.
ALTER TABLE items ADD COLUMN verified_at REAL;
ALTER TABLE items ADD COLUMN drift TEXT;
