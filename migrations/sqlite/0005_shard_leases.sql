-- Shard leases: the quota belongs to an (account, region), so one owner at a time drives a
-- shard. A lease is renewed with its owner's heartbeat and ends with it (released at exit,
-- or expired when the owner is gone).

CREATE TABLE shard_leases (
    shard_id    INTEGER PRIMARY KEY,
    owner       TEXT    NOT NULL,
    expires_at  REAL    NOT NULL
);
CREATE INDEX shard_leases_owner ON shard_leases (owner);
