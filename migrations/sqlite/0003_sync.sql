-- Tag-sync rules, after AWS Resource Groups tag-sync tasks: resources matching a tag (or a
-- resource query) get the rule's tags; resources that stop matching lose them again. The
-- daemon evaluates each rule when next_run_at passes; claiming an evaluation moves
-- next_run_at forward in one UPDATE, so two daemons on one store never evaluate a rule twice.

CREATE TABLE sync_rules (
    id                INTEGER PRIMARY KEY,
    name              TEXT    NOT NULL UNIQUE,
    tag_key           TEXT,                       -- either tag_key + tag_value ...
    tag_value         TEXT,
    resource_query    TEXT,                       -- ... or a ResourceQuery (JSON, as given)
    apply_tags        TEXT    NOT NULL,           -- JSON {"k": "v"}: the tags the rule applies
    regions           TEXT    NOT NULL DEFAULT '[]',  -- JSON list; [] = every enabled region
    accounts          TEXT    NOT NULL DEFAULT '[""]', -- JSON list; "" = the caller's account
    interval_seconds  REAL    NOT NULL DEFAULT 300,
    status            TEXT    NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'ERROR')),
    error             TEXT,                       -- why the last evaluation failed (ERROR)
    created_at        REAL    NOT NULL,
    last_run_at       REAL,
    next_run_at       REAL    NOT NULL DEFAULT 0,
    members           INTEGER NOT NULL DEFAULT 0, -- resources matching at the last evaluation
    last_added        INTEGER NOT NULL DEFAULT 0, -- new or drifted: sent to a tag job
    last_removed      INTEGER NOT NULL DEFAULT 0, -- stopped matching: sent to an untag job
    last_jobs         TEXT    NOT NULL DEFAULT '[]' -- JSON: job ids the last evaluation made
);

CREATE TABLE sync_members (
    rule_id       INTEGER NOT NULL REFERENCES sync_rules (id) ON DELETE CASCADE,
    arn           TEXT    NOT NULL,
    applied       TEXT    NOT NULL,               -- JSON of the tags applied
    digest        TEXT    NOT NULL,               -- sha256 of applied
    last_seen_at  REAL    NOT NULL,
    PRIMARY KEY (rule_id, arn)
) WITHOUT ROWID;
