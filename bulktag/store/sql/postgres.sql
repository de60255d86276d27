-- Every statement the PostgreSQL store runs, by name (`-- name: x` starts a query). Parameters
-- are positional ($1, $2 …); the Python side passes them in the order the comment above each
-- query gives when it is not obvious. Many rows travel as arrays bound once and read back
-- with unnest(), not as one statement per row.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations
    (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL);

-- name: migrate_lock
-- One fixed key ('bulktag!' as a bigint): ten workers opening a new store migrate it once.
SELECT pg_advisory_lock(7094695996761925409);

-- name: migrate_unlock
SELECT pg_advisory_unlock(7094695996761925409);

-- name: migrations_applied
SELECT version FROM schema_migrations ORDER BY version;

-- name: migration_applied
SELECT 1 FROM schema_migrations WHERE version = $1;

-- name: migration_done
INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3);

-- name: metrics_ping
SELECT 1;

-- name: create_job
-- $1 name, $2 operation, $3 priority, $4 options (JSON text), $5 owner, $6 now
INSERT INTO jobs (name, operation, state, priority, options, owner, created_at, updated_at)
VALUES ($1, $2, 'preparing', $3, $4::jsonb, $5, $6, $6)
RETURNING id;

-- name: get_job
SELECT id, name, operation, state, priority, options::text AS options, owner, created_at,
       started_at, finished_at, updated_at, rate, reason, loading, loaded, loading_at,
       loaded_digests
FROM jobs WHERE id = $1;

-- name: list_jobs
SELECT id, name, operation, state, priority, options::text AS options, owner, created_at,
       started_at, finished_at, updated_at, rate, reason, loading, loaded, loading_at,
       loaded_digests
FROM jobs ORDER BY id;

-- name: set_job_state
-- $1 state, $2 now, $3 reason, $4 job id
UPDATE jobs SET state = $1::text, updated_at = $2::float8,
    started_at = CASE WHEN $1::text = 'active' AND started_at IS NULL THEN $2::float8
                      ELSE started_at END,
    finished_at = CASE WHEN $1::text IN ('completed', 'failed', 'cancelled') THEN $2::float8
                       ELSE NULL END,
    reason = CASE WHEN $1::text = 'ready' THEN NULL ELSE coalesce($3::text, reason) END,
    owner = CASE WHEN $1::text = 'preparing' THEN owner ELSE NULL END
WHERE id = $4;

-- name: set_job_priority
UPDATE jobs SET priority = $1, updated_at = $2 WHERE id = $3;

-- name: set_job_rate
UPDATE jobs SET rate = $1 WHERE id = $2;

-- name: merge_job_options
-- Top-level keys of the patch replace the job's; a key the patch sets to null is removed.
UPDATE jobs SET
    options = (options || $1::jsonb)
              - ARRAY(SELECT key FROM jsonb_each($1::jsonb) WHERE value = 'null'::jsonb),
    updated_at = $2
WHERE id = $3;

-- name: delete_job_items
DELETE FROM items WHERE job_id = $1;

-- name: delete_job
DELETE FROM jobs WHERE id = $1;

-- name: delete_job_counts
DELETE FROM counts WHERE job_id = $1;

-- name: delete_job_error_counts
DELETE FROM error_counts WHERE job_id = $1;

-- name: delete_job_discoveries
-- (ON DELETE CASCADE has removed them with the job already; named for the shared delete_job)
DELETE FROM discoveries WHERE job_id = $1;

-- name: delete_job_paused_accounts
DELETE FROM paused_accounts WHERE job_id = $1;

-- name: stale_preparing
SELECT id, owner FROM jobs WHERE state = 'preparing';

-- name: upsert_shards
-- $1 partitions, $2 accounts, $3 regions (parallel arrays). Rows another transaction inserted
-- while this statement ran are not in its snapshot: the caller asks again for any missing.
WITH wanted AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS w(partition, account, region)
), ins AS (
    INSERT INTO shards (partition, account, region)
    SELECT partition, account, region FROM wanted
    ON CONFLICT (partition, account, region) DO NOTHING
    RETURNING id, partition, account, region
)
SELECT id, partition, account, region FROM ins
UNION ALL
SELECT s.id, s.partition, s.account, s.region
FROM shards s JOIN wanted w USING (partition, account, region);

-- name: all_shards
SELECT id, partition, account, region FROM shards;

-- name: upsert_tagsets
-- $1 digests, $2 bodies (parallel arrays); same caveat as upsert_shards.
WITH ins AS (
    INSERT INTO tagsets (digest, body)
    SELECT * FROM unnest($1::text[], $2::text[])
    ON CONFLICT (digest) DO NOTHING
    RETURNING id, digest
)
SELECT id, digest FROM ins
UNION ALL
SELECT id, digest FROM tagsets WHERE digest = ANY($1::text[]);

-- name: get_tagset
SELECT body FROM tagsets WHERE id = $1;

-- name: insert_items
-- One chunk of add_items: $1 job id, then parallel arrays $2 arn, $3 shard id, $4 tagset id,
-- $5 state, $6 line, $7 error code, $8 message, $9 finished_at, $10 route. Ids follow the
-- array order.
INSERT INTO items (job_id, arn, shard_id, tagset_id, state, line, error_code, message,
                   finished_at, route)
SELECT $1, arn, shard_id, tagset_id, state, line, error_code, message, finished_at, route
FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::text[],
            $8::text[], $9::float8[], $10::text[])
     AS u(arn, shard_id, tagset_id, state, line, error_code, message, finished_at, route)
ON CONFLICT (job_id, arn) DO NOTHING;

-- name: counts
SELECT state, sum(n)::bigint FROM counts WHERE job_id = $1 GROUP BY state;

-- name: shard_counts
SELECT shard_id, state, sum(n)::bigint FROM counts WHERE job_id = $1 GROUP BY shard_id, state
HAVING sum(n) > 0;

-- name: route_counts
SELECT shard_id, route, state, n FROM counts WHERE job_id = $1 AND n > 0;

-- name: error_counts
SELECT error_code, n FROM error_counts WHERE job_id = $1 AND n > 0 ORDER BY n DESC, error_code
LIMIT $2;

-- name: error_example
SELECT arn, http_status, message FROM items
WHERE job_id = $1 AND state IN ('failed', 'invalid') AND error_code = $2
ORDER BY id LIMIT 1;

-- name: runnable
-- (job, shard, route) with pending work in jobs that may run, best priority first.
SELECT c.job_id, c.shard_id, j.priority, j.operation, j.state, c.route
FROM counts c JOIN jobs j ON j.id = c.job_id
WHERE c.state = 'pending' AND c.n > 0 AND c.shard_id <> 0
  AND j.state IN ('ready', 'active')
  AND NOT EXISTS (SELECT 1 FROM paused_accounts p JOIN shards s ON s.account = p.account
                  WHERE p.job_id = c.job_id AND s.id = c.shard_id)
ORDER BY j.priority DESC, c.job_id, c.shard_id, c.route;

-- name: unfinished_jobs
-- Jobs whose items are all terminal (and discovery over) but whose state still says otherwise.
SELECT j.id FROM jobs j
WHERE j.state IN ('ready', 'active')
  AND NOT EXISTS (SELECT 1 FROM counts c WHERE c.job_id = j.id
                  AND c.state IN ('pending', 'leased') AND c.n > 0)
  AND NOT EXISTS (SELECT 1 FROM discoveries d WHERE d.job_id = j.id
                  AND d.state IN ('pending', 'running'))
  AND j.loading IS NULL
ORDER BY j.id;

-- name: claim
-- $1 job, $2 shard, $3 now, $4 limit, $5 owner, $6 lease expiry. SKIP LOCKED: two owners
-- claiming at once each take rows the other has not locked, instead of waiting or colliding.
-- Only while the job is ready or active, its row locked for share: a pause waits for a claim
-- in progress, and a claim after it leases nothing (undo relies on it).
WITH open_job AS (
    SELECT id FROM jobs WHERE id = $1 AND state IN ('ready', 'active') FOR SHARE
), picked AS (
    SELECT id FROM items
    WHERE job_id = (SELECT id FROM open_job) AND shard_id = $2 AND state = 'pending'
      AND next_attempt_at <= $3
    ORDER BY tagset_id, next_attempt_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE items i SET state = 'leased', lease_owner = $5, lease_expires_at = $6
    FROM picked WHERE i.id = picked.id
    RETURNING i.id, i.arn, i.tagset_id, i.attempts, i.next_attempt_at, i.before_tags
)
SELECT id, arn, tagset_id, attempts, before_tags FROM leased ORDER BY tagset_id, next_attempt_at, id;

-- name: claim_route
-- As claim, the items of one route ($7): each route of a shard is claimed at its own pace.
WITH open_job AS (
    SELECT id FROM jobs WHERE id = $1 AND state IN ('ready', 'active') FOR SHARE
), picked AS (
    SELECT id FROM items
    WHERE job_id = (SELECT id FROM open_job) AND shard_id = $2 AND route = $7
      AND state = 'pending'
      AND next_attempt_at <= $3
    ORDER BY tagset_id, next_attempt_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE items i SET state = 'leased', lease_owner = $5, lease_expires_at = $6
    FROM picked WHERE i.id = picked.id
    RETURNING i.id, i.arn, i.tagset_id, i.attempts, i.next_attempt_at, i.before_tags
)
SELECT id, arn, tagset_id, attempts, before_tags FROM leased ORDER BY tagset_id, next_attempt_at, id;

-- name: next_due
SELECT min(next_attempt_at) FROM items
WHERE job_id = $1 AND shard_id = $2 AND state = 'pending';

-- name: next_due_route
SELECT min(next_attempt_at) FROM items
WHERE job_id = $1 AND shard_id = $2 AND route = $3 AND state = 'pending';

-- name: set_route
-- A job that takes the setting's route at its first run: its pending items follow it.
UPDATE items SET route = $1 WHERE job_id = $2 AND state = 'pending' AND route <> $1;

-- name: record
-- $1 owner, then parallel arrays: $2 id, $3 state, $4 attempts, $5 next_attempt_at,
-- $6 error code, $7 http status, $8 message, $9 finished_at. Only the lease holder's rows land.
-- `state || ''` keeps the rows found by primary key: with a plain `state = 'leased'` the
-- planner may go through items_leased or items_lease_expiry (partial, WHERE state = 'leased'),
-- which hold a dead entry for every lease recorded since the last vacuum; it walked them all,
-- 10 ms a claim of 240 at the start of a 500,000-item run, 97 ms at its end
-- (benchmarks/lease_scans.py).
UPDATE items SET state = o.state, attempts = o.attempts, next_attempt_at = o.next_attempt_at,
                 error_code = o.error_code, http_status = o.http_status, message = o.message,
                 finished_at = o.finished_at, lease_owner = NULL, lease_expires_at = NULL
FROM unnest($2::bigint[], $3::text[], $4::integer[], $5::float8[], $6::text[], $7::integer[],
            $8::text[], $9::float8[])
     AS o(id, state, attempts, next_attempt_at, error_code, http_status, message, finished_at)
WHERE items.id = o.id AND (items.state || '') = 'leased' AND items.lease_owner = $1;

-- name: plain_index_scans
-- Before release_owner and release_expired, in their transaction. They can only find leases
-- through items_leased / items_lease_expiry, whose dead entries (one per lease recorded since
-- the last vacuum) they walk too. A bitmap scan reads each dead entry's heap page again on
-- every heartbeat; a plain index scan marks them dead in the index the first time, and later
-- walks read only the index (reap_dead_owners after 464,000 items: 80 ms, now 10 ms;
-- benchmarks/lease_scans.py).
SET LOCAL enable_bitmapscan = off;

-- name: release_owner
UPDATE items SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL
WHERE state = 'leased' AND lease_owner = $1;

-- name: release_expired
UPDATE items SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL
WHERE state = 'leased' AND lease_expires_at < $1;

-- name: register_owner
-- $6: whether the owner holds a database session (`session_key`): its liveness
INSERT INTO owners (owner, host, pid, started_at, heartbeat_at, session)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
                                  session = excluded.session;

-- name: heartbeat
UPDATE owners SET heartbeat_at = $1 WHERE owner = $2;

-- name: all_owners
SELECT owner, host, pid, heartbeat_at, session FROM owners;

-- name: owner_session
SELECT session FROM owners WHERE owner = $1;

-- name: delete_owner
DELETE FROM owners WHERE owner = $1;

-- name: workers
SELECT owner, host, pid, started_at, heartbeat_at FROM owners ORDER BY started_at;

-- name: retry_failed
-- Failed items, and those cancelled because their job passed its failure threshold.
UPDATE items SET state = 'pending', attempts = 0, next_attempt_at = 0, finished_at = NULL,
                 before_tags = NULL
WHERE job_id = $1 AND (state = 'failed' OR (state = 'cancelled' AND error_code = 'JobFailed'));

-- name: retry_failed_code
UPDATE items SET state = 'pending', attempts = 0, next_attempt_at = 0, finished_at = NULL,
                 before_tags = NULL
WHERE job_id = $1 AND state = 'failed' AND error_code = $2;

-- name: cancel_items
UPDATE items SET state = 'cancelled', finished_at = $1, lease_owner = NULL,
                 lease_expires_at = NULL, error_code = $2, message = $3
WHERE job_id = $4 AND state IN ('pending', 'leased');

-- name: report_page
SELECT i.id, i.arn, s.account, s.region, i.state, i.attempts, i.error_code, i.http_status,
       i.message, i.finished_at, i.line, i.before_tags, t.body, i.route
FROM items i LEFT JOIN shards s ON s.id = i.shard_id LEFT JOIN tagsets t ON t.id = i.tagset_id
WHERE i.job_id = $1 AND i.id > $2
ORDER BY i.id LIMIT $3;

-- name: report_page_unsuccessful
SELECT i.id, i.arn, s.account, s.region, i.state, i.attempts, i.error_code, i.http_status,
       i.message, i.finished_at, i.line, i.before_tags, t.body, i.route
FROM items i LEFT JOIN shards s ON s.id = i.shard_id LEFT JOIN tagsets t ON t.id = i.tagset_id
WHERE i.job_id = $1 AND i.state IN ('failed', 'invalid') AND i.id > $2
ORDER BY i.id LIMIT $3;

-- name: succeeded_page
SELECT i.id, i.arn, i.shard_id, i.tagset_id FROM items i
WHERE i.job_id = $1 AND i.state = 'succeeded' AND i.id > $2 ORDER BY i.id LIMIT $3;

-- name: set_drift
-- $1 now, $2 item ids, $3 drifts (parallel arrays)
UPDATE items SET verified_at = $1, drift = d.drift
FROM unnest($2::bigint[], $3::text[]) AS d(id, drift)
WHERE items.id = d.id;

-- name: skip_arns
-- $1 now, $2 job, $3 ARNs, $4 reasons (parallel arrays)
UPDATE items SET state = 'skipped', finished_at = $1, message = s.reason
FROM unnest($3::text[], $4::text[]) AS s(arn, reason)
WHERE items.job_id = $2 AND items.arn = s.arn AND items.state = 'pending';

-- name: create_discoveries
-- $1 job, $2 now, then parallel arrays $3 partition, $4 account, $5 region
INSERT INTO discoveries (job_id, partition, account, region, updated_at)
SELECT $1, p, a, r, $2 FROM unnest($3::text[], $4::text[], $5::text[]) AS u(p, a, r)
ON CONFLICT (job_id, account, region) DO NOTHING;

-- name: claim_discovery
-- $1 owner, $2 now, $3 job ids (NULL: any job)
WITH picked AS (
    SELECT d.id FROM discoveries d JOIN jobs j ON j.id = d.job_id
    WHERE d.state = 'pending' AND j.state IN ('ready', 'active')
      AND ($3::bigint[] IS NULL OR d.job_id = ANY($3::bigint[]))
    ORDER BY j.priority DESC, d.id
    LIMIT 1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE discoveries d SET state = 'running', owner = $1, updated_at = $2
FROM picked WHERE d.id = picked.id
RETURNING d.*;

-- name: save_discovery_page
UPDATE discoveries SET token = $1, token_at = $2, pages = pages + 1, found = found + $3,
                       updated_at = $4
WHERE id = $5 AND owner = $6;

-- name: restart_discovery
UPDATE discoveries SET token = NULL, token_at = NULL, restarts = restarts + 1, updated_at = $1
WHERE id = $2;

-- name: finish_discovery
UPDATE discoveries SET state = $1, error = $2, owner = NULL, token = NULL, updated_at = $3
WHERE id = $4;

-- name: release_discoveries
UPDATE discoveries SET state = 'pending', owner = NULL WHERE state = 'running' AND owner = $1;

-- name: job_discoveries
SELECT * FROM discoveries WHERE job_id = $1 ORDER BY account, region;

-- name: pause_account
INSERT INTO paused_accounts (job_id, account, reason, paused_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (job_id, account) DO NOTHING;

-- name: paused_accounts
SELECT account, reason, paused_at FROM paused_accounts WHERE job_id = $1 ORDER BY account;

-- name: clear_paused_accounts
DELETE FROM paused_accounts WHERE job_id = $1;

-- name: acquire_shards
-- $1 shard ids (sorted, distinct), $2 owner, $3 lease expiry, $4 now. Take free or expired
-- leases, renew our own; RETURNING says which we hold. Sorted ids: two owners asking for the
-- same shards lock them in the same order.
INSERT INTO shard_leases (shard_id, owner, expires_at)
SELECT s, $2, $3 FROM unnest($1::bigint[]) AS s ORDER BY s
ON CONFLICT (shard_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE shard_leases.owner = excluded.owner OR shard_leases.expires_at < $4
RETURNING shard_id;

-- name: release_shards
DELETE FROM shard_leases WHERE owner = $1;

-- name: release_some_shards
DELETE FROM shard_leases WHERE owner = $1 AND shard_id = ANY($2::bigint[]);

-- name: shard_holders
SELECT shard_id, owner, expires_at FROM shard_leases WHERE expires_at >= $1;

-- name: sync_insert_rule
-- $1 name, $2 tag key, $3 tag value, $4 resource query, $5 apply (JSON), $6 regions (JSON),
-- $7 accounts (JSON), $8 interval, $9 now, $10 way in (JSON or NULL)
INSERT INTO sync_rules (name, tag_key, tag_value, resource_query, apply_tags, regions, accounts,
                        interval_seconds, created_at, way_in)
VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8, $9, $10::jsonb)
RETURNING id;

-- name: sync_get_rule
SELECT id, name, tag_key, tag_value, resource_query, apply_tags::text AS apply_tags,
       regions::text AS regions, accounts::text AS accounts, interval_seconds, status, error,
       created_at, last_run_at, next_run_at, members, last_added, last_removed,
       last_jobs::text AS last_jobs, way_in::text AS way_in
FROM sync_rules WHERE name = $1;

-- name: sync_list_rules
SELECT id, name, tag_key, tag_value, resource_query, apply_tags::text AS apply_tags,
       regions::text AS regions, accounts::text AS accounts, interval_seconds, status, error,
       created_at, last_run_at, next_run_at, members, last_added, last_removed,
       last_jobs::text AS last_jobs, way_in::text AS way_in
FROM sync_rules ORDER BY name;

-- name: sync_delete_rule
DELETE FROM sync_rules WHERE id = $1;

-- name: sync_delete_members
DELETE FROM sync_members WHERE rule_id = $1;

-- name: sync_due_rules
SELECT name FROM sync_rules WHERE next_run_at <= $1 ORDER BY next_run_at;

-- name: sync_claim_due
-- An evaluation is claimed by moving next_run_at past now: of two daemons, the second waits for
-- the first's row lock, then re-reads the row, finds it no longer due, and updates nothing.
UPDATE sync_rules SET next_run_at = $2 + interval_seconds
WHERE name = $1 AND next_run_at <= $2
RETURNING id, name, tag_key, tag_value, resource_query, apply_tags::text AS apply_tags,
          regions::text AS regions, accounts::text AS accounts, interval_seconds, status,
          error, created_at, last_run_at, next_run_at, members, last_added, last_removed,
          last_jobs::text AS last_jobs, way_in::text AS way_in;

-- name: sync_claim_now
UPDATE sync_rules SET next_run_at = $2 + interval_seconds WHERE name = $1
RETURNING id, name, tag_key, tag_value, resource_query, apply_tags::text AS apply_tags,
          regions::text AS regions, accounts::text AS accounts, interval_seconds, status,
          error, created_at, last_run_at, next_run_at, members, last_added, last_removed,
          last_jobs::text AS last_jobs, way_in::text AS way_in;

-- name: sync_finish_rule
-- $1 status, $2 error, $3 now, $4 rule id, $5 added, $6 removed, $7 job ids (JSON)
UPDATE sync_rules SET status = $1, error = $2, last_run_at = $3,
    members = (SELECT count(*) FROM sync_members WHERE rule_id = $4),
    last_added = $5, last_removed = $6, last_jobs = $7::jsonb
WHERE id = $4;

-- name: sync_members_page
SELECT arn FROM sync_members WHERE rule_id = $1 AND arn > $2 ORDER BY arn LIMIT $3;

-- name: sync_upsert_members
-- $1 rule, $2 applied (JSON), $3 digest, $4 now, $5 ARNs
INSERT INTO sync_members (rule_id, arn, applied, digest, last_seen_at)
SELECT $1, arn, $2, $3, $4 FROM unnest($5::text[]) AS arn
ON CONFLICT (rule_id, arn) DO UPDATE SET applied = excluded.applied, digest = excluded.digest,
    last_seen_at = excluded.last_seen_at;

-- name: sync_delete_members_arns
DELETE FROM sync_members WHERE rule_id = $1 AND arn = ANY($2::text[]);

-- name: sync_rule_status_counts
SELECT status, count(*) FROM sync_rules GROUP BY status;

-- name: metrics_items_by_state
SELECT state, sum(n)::bigint FROM counts GROUP BY state;

-- name: metrics_active_job_items
SELECT j.id, j.name, j.operation, j.priority, c.state, sum(c.n)::bigint FROM jobs j
JOIN counts c ON c.job_id = j.id
WHERE j.state IN ('ready', 'active', 'paused')
GROUP BY j.id, c.state
ORDER BY j.id, c.state;

-- name: metrics_jobs_by_state
SELECT state, count(*) FROM jobs GROUP BY state;

-- name: lease_holders
SELECT lease_owner, count(*) FROM items WHERE state = 'leased' GROUP BY lease_owner;

-- name: import_job
-- $1 id, $2 name, $3 operation, $4 state, $5 priority, $6 options (JSON text), $7 created_at,
-- $8 started_at, $9 finished_at, $10 updated_at, $11 rate, $12 reason
INSERT INTO jobs (id, name, operation, state, priority, options, owner, created_at, started_at,
                  finished_at, updated_at, rate, reason)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, NULL, $7, $8, $9, $10, $11, $12);

-- name: export_items
-- Every column of a page of items, the shard and tagset by value (ids are per store).
SELECT i.id, i.job_id, i.arn, s.partition, s.account, s.region, t.body, i.state, i.attempts,
       i.next_attempt_at, i.lease_owner, i.lease_expires_at, i.error_code, i.http_status,
       i.message, i.finished_at, i.line, i.verified_at, i.drift, i.before_tags, i.route
FROM items i LEFT JOIN shards s ON s.id = i.shard_id LEFT JOIN tagsets t ON t.id = i.tagset_id
WHERE i.id > $1 ORDER BY i.id LIMIT $2;

-- name: export_job_items
SELECT i.id, i.job_id, i.arn, s.partition, s.account, s.region, t.body, i.state, i.attempts,
       i.next_attempt_at, i.lease_owner, i.lease_expires_at, i.error_code, i.http_status,
       i.message, i.finished_at, i.line, i.verified_at, i.drift, i.before_tags, i.route
FROM items i LEFT JOIN shards s ON s.id = i.shard_id LEFT JOIN tagsets t ON t.id = i.tagset_id
WHERE i.job_id = $1 AND i.id > $2 ORDER BY i.id LIMIT $3;

-- name: import_items
-- Parallel arrays, one per column, in the items table's order. The insert trigger keeps the
-- counters, as for add_items.
INSERT INTO items (id, job_id, arn, shard_id, tagset_id, state, attempts, next_attempt_at,
                   lease_owner, lease_expires_at, error_code, http_status, message, finished_at,
                   line, verified_at, drift, before_tags, route)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
                     $6::text[], $7::integer[], $8::float8[], $9::text[], $10::float8[],
                     $11::text[], $12::integer[], $13::text[], $14::float8[], $15::bigint[],
                     $16::float8[], $17::text[], $18::text[], $19::text[]);

-- name: import_discoveries
-- Parallel arrays: $1 id, $2 job, $3 partition, $4 account, $5 region, $6 state, $7 token,
-- $8 token_at, $9 pages, $10 found, $11 restarts, $12 error, $13 updated_at
INSERT INTO discoveries (id, job_id, partition, account, region, state, owner, token, token_at,
                         pages, found, restarts, error, updated_at)
SELECT id, job_id, partition, account, region, state, NULL, token, token_at, pages, found,
       restarts, error, updated_at
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::float8[], $9::integer[], $10::bigint[], $11::integer[], $12::text[],
            $13::float8[])
     AS d(id, job_id, partition, account, region, state, token, token_at, pages, found,
          restarts, error, updated_at);

-- name: import_paused_accounts
-- $1 job, then parallel arrays $2 account, $3 reason, $4 paused_at
INSERT INTO paused_accounts (job_id, account, reason, paused_at)
SELECT $1, a, r, p FROM unnest($2::text[], $3::text[], $4::float8[]) AS u(a, r, p);

-- name: import_sync_rule
INSERT INTO sync_rules (id, name, tag_key, tag_value, resource_query, apply_tags, regions,
                        accounts, interval_seconds, status, error, created_at, last_run_at,
                        next_run_at, members, last_added, last_removed, last_jobs, way_in)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb, $9, $10, $11, $12, $13, $14, $15,
        $16, $17, $18::jsonb, $19::jsonb);

-- name: export_sync_members
SELECT arn, applied, digest, last_seen_at FROM sync_members
WHERE rule_id = $1 AND arn > $2 ORDER BY arn LIMIT $3;

-- name: import_sync_members
-- $1 rule, then parallel arrays $2 arn, $3 applied, $4 digest, $5 last_seen_at
INSERT INTO sync_members (rule_id, arn, applied, digest, last_seen_at)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::float8[]);

-- name: advance_identities
-- After rows were inserted with their own ids: the next generated id of each table follows
-- the highest one present (never goes back below where the sequence already was).
SELECT setval(pg_get_serial_sequence(t, 'id'),
              greatest(m, (SELECT last_value FROM pg_sequences
                           WHERE format('%I.%I', schemaname, sequencename)
                                 = pg_get_serial_sequence(t, 'id'))),
              true)
FROM (VALUES ('jobs', (SELECT max(id) FROM jobs)), ('items', (SELECT max(id) FROM items)),
             ('shards', (SELECT max(id) FROM shards)), ('tagsets', (SELECT max(id) FROM tagsets)),
             ('discoveries', (SELECT max(id) FROM discoveries)),
             ('sync_rules', (SELECT max(id) FROM sync_rules))) AS v(t, m)
WHERE m IS NOT NULL;
-- name: record_sample
-- A job's worked total at a time ($1 job, $2 at, $3 done, $4 min gap); skipped when the job
-- has a sample less than $4 seconds old (several workers write one sample an interval).
INSERT INTO job_samples (job_id, at, done)
SELECT $1::bigint, $2::double precision, $3::bigint
WHERE NOT EXISTS (SELECT 1 FROM job_samples
                  WHERE job_id = $1::bigint AND at > $2::double precision - $4::double precision)
ON CONFLICT (job_id, at) DO NOTHING;

-- name: samples
SELECT at, done FROM job_samples WHERE job_id = $1 AND at >= $2 ORDER BY at;

-- name: delete_job_samples
DELETE FROM job_samples WHERE job_id = $1;

-- name: last_failures
-- The latest failed or invalid items of a job, newest first, read from items_failed_at.
SELECT i.id, i.arn, s.account, s.region, i.state, i.attempts, i.error_code, i.http_status,
       i.message, i.finished_at, i.line, i.before_tags, t.body, i.route
FROM items i LEFT JOIN shards s ON s.id = i.shard_id LEFT JOIN tagsets t ON t.id = i.tagset_id
WHERE i.job_id = $1 AND i.state IN ('failed', 'invalid') AND i.finished_at IS NOT NULL
ORDER BY i.finished_at DESC, i.id DESC LIMIT $2;

-- name: keep_before
-- $1 owner, then parallel arrays: $2 item ids, $3 before-images. An earlier attempt's is kept.
-- `state || ''`: as in record, by primary key, never through the partial indexes' dead
-- entries (`lease_owner || ''` alone still let it walk all of items_lease_expiry).
UPDATE items SET before_tags = b.before_tags
FROM unnest($2::bigint[], $3::text[]) AS b(id, before_tags)
WHERE items.id = b.id AND (items.state || '') = 'leased' AND items.lease_owner = $1
  AND items.before_tags IS NULL;

-- name: changed_page
-- Items a job changed (undo's source): a non-empty before-image, succeeded or skipped.
SELECT i.id, i.arn, s.partition, s.account, s.region, t.body, i.before_tags
FROM items i JOIN shards s ON s.id = i.shard_id JOIN tagsets t ON t.id = i.tagset_id
WHERE i.job_id = $1 AND i.id > $2 AND i.state IN ('succeeded', 'skipped')
  AND i.before_tags IS NOT NULL AND i.before_tags <> '{}'
ORDER BY i.id LIMIT $3;

-- name: first_rows
-- The kept row of each of these ARNs: a duplicate row is compared with it.
SELECT i.arn, i.line, t.body FROM items i LEFT JOIN tagsets t ON t.id = i.tagset_id
WHERE i.job_id = $1 AND i.arn = ANY($2::text[]);

-- name: set_worker_rate
-- $1 owner, $2 job, $3 items finished per second lately, $4 now
INSERT INTO worker_rates (owner, job_id, rate, updated_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (job_id, owner) DO UPDATE SET rate = excluded.rate, updated_at = excluded.updated_at;

-- name: fleet_rate
-- $1 job, $2 rows written since, $3 heartbeats since: the sum of the live workers'
-- rates, how many they are, and when any worker last wrote one for the job
SELECT COALESCE(SUM(CASE WHEN r.updated_at >= $2 AND o.heartbeat_at >= $3 THEN r.rate END), 0),
       COUNT(CASE WHEN r.updated_at >= $2 AND o.heartbeat_at >= $3 THEN 1 END),
       MAX(r.updated_at)
FROM worker_rates r LEFT JOIN owners o ON o.owner = r.owner
WHERE r.job_id = $1;

-- name: delete_worker_rates
DELETE FROM worker_rates WHERE owner = $1;

-- name: staging_create
-- A loader's staging table (Store.loader): on the loader's own connection, unindexed, gone
-- with the session; filled by COPY.
CREATE TEMP TABLE IF NOT EXISTS item_staging (
    seq       BIGSERIAL,
    arn       TEXT   NOT NULL,
    line      BIGINT,
    shard_id  BIGINT NOT NULL,
    tagset_id BIGINT NOT NULL,
    route     TEXT   NOT NULL,
    problem   TEXT
);

-- name: staging_clear
TRUNCATE item_staging;

-- name: staging_drop
DROP TABLE IF EXISTS item_staging;

-- name: move_staged
-- $1 job, $2 now. In ARN order, the first staged row of a repeated ARN, none the job holds: the
-- (job, ARN) index is filled in order and ids follow the ARN order within one move. An
-- anti-join rather than ON CONFLICT DO NOTHING, whose speculative insertion (an extra WAL
-- record and index probe per row) cost 1-2 s a million rows: one loader (one move per part
-- of the ARNs' hash) inserts a job's rows at a time. Counted by the insert trigger.
INSERT INTO items (job_id, arn, shard_id, tagset_id, state, line, error_code, message,
                   finished_at, route)
SELECT $1, arn, shard_id, tagset_id,
       CASE WHEN problem IS NULL THEN 'pending' ELSE 'invalid' END, line,
       CASE WHEN problem IS NULL THEN NULL ELSE 'InvalidInput' END, problem,
       CASE WHEN problem IS NULL THEN NULL ELSE $2::float8 END, route
FROM (SELECT DISTINCT ON (arn) * FROM item_staging s
      WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.job_id = $1 AND i.arn = s.arn)
      ORDER BY arn, seq) s
WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND state IN ('completed', 'failed',
                                                                 'cancelled'))
ORDER BY arn;

-- name: move_staged_on_conflict
-- move_staged when another session inserted some of the ARNs meanwhile (a loader reaped as
-- gone while it still ran): the same rows, those already there skipped by the insert.
INSERT INTO items (job_id, arn, shard_id, tagset_id, state, line, error_code, message,
                   finished_at, route)
SELECT $1, arn, shard_id, tagset_id,
       CASE WHEN problem IS NULL THEN 'pending' ELSE 'invalid' END, line,
       CASE WHEN problem IS NULL THEN NULL ELSE 'InvalidInput' END, problem,
       CASE WHEN problem IS NULL THEN NULL ELSE $2::float8 END, route
FROM item_staging
WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND state IN ('completed', 'failed',
                                                                 'cancelled'))
ORDER BY arn, seq
ON CONFLICT (job_id, arn) DO NOTHING;

-- name: staged_conflicts
-- Staged rows whose ARN the job holds with another tagset (the kept row may be one of them).
SELECT s.arn, s.line, i.line, ti.body, ts.body
FROM item_staging s
JOIN items i ON i.job_id = $1 AND i.arn = s.arn
JOIN tagsets ti ON ti.id = i.tagset_id
JOIN tagsets ts ON ts.id = s.tagset_id
WHERE s.tagset_id <> 0 AND i.tagset_id <> 0 AND i.tagset_id <> s.tagset_id
ORDER BY s.seq LIMIT $2;

-- name: staged_conflict_count
SELECT count(*) FROM item_staging s
JOIN items i ON i.job_id = $1 AND i.arn = s.arn
WHERE s.tagset_id <> 0 AND i.tagset_id <> 0 AND i.tagset_id <> s.tagset_id;

-- name: start_loading
-- $1 job, $2 loader, $3 rows committed, $4 now, $5 their chunks' digests: a preparing job
-- becomes workable while its sources are still being read.
UPDATE jobs SET state = 'ready', owner = NULL, loading = $2, loaded = $3, loading_at = $4,
    updated_at = $4, loaded_digests = $5
WHERE id = $1 AND state = 'preparing';

-- name: continue_loading
-- $1 job, $2 loader, $3 now, $4 the loader it takes over: a resubmit continues an
-- interrupted (paused) load, unless another took it first.
UPDATE jobs SET state = 'ready', reason = NULL, loading = $2, loading_at = $3,
    updated_at = $3
WHERE id = $1 AND loading = $4 AND state = 'paused';

-- name: note_loaded
-- $1 job, $2 loader, $3 rows committed (NULL: unchanged), $4 now, $5 their chunks' digests
UPDATE jobs SET loaded = coalesce($3, loaded), loading_at = $4,
    loaded_digests = coalesce($5, loaded_digests)
WHERE id = $1 AND loading = $2 AND state NOT IN ('completed', 'failed', 'cancelled');

-- name: finish_loading
-- $1 job, $2 loader, $3 rows committed, $4 now: every row is in.
UPDATE jobs SET loading = NULL, loading_at = NULL, loaded = $3, updated_at = $4
WHERE id = $1 AND loading = $2 AND state NOT IN ('completed', 'failed', 'cancelled');

-- name: loading_jobs
SELECT id, loading, loading_at, loaded, state FROM jobs
WHERE loading IS NOT NULL AND state IN ('ready', 'active');

-- name: pause_interrupted_load
-- $1 job, $2 loader, $3 its last sign of life as read, $4 reason, $5 now:
-- only if the loader has not spoken since.
UPDATE jobs SET state = 'paused', reason = $4, updated_at = $5
WHERE id = $1 AND loading = $2 AND loading_at = $3 AND state IN ('ready', 'active');

-- name: pause_load
-- $1 job, $2 loader, $3 reason, $4 now: a load that stopped pauses its job, if the
-- job still runs (one cancelled or failed meanwhile stays so).
UPDATE jobs SET state = 'paused', reason = $3, updated_at = $4
WHERE id = $1 AND loading = $2 AND state IN ('ready', 'active');
