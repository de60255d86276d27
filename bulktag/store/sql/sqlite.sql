-- Every statement the SQLite store runs, by name. `-- name: x` starts a query; the loader keeps
-- them in a dict so that no module outside bulktag/store/ holds SQL of its own. A query that
-- sql/postgres.sql has too takes the same parameters in the same order (`?1` here is `$1`
-- there), so that one Python method (sqlstore.py) serves both; statements over many rows take
-- the rows' columns last (one executemany row here, one array each there).

-- name: create_job
INSERT INTO jobs (name, operation, state, priority, options, owner, created_at, updated_at)
VALUES (?1, ?2, 'preparing', ?3, ?4, ?5, ?6, ?6)
RETURNING id;

-- name: get_job
SELECT * FROM jobs WHERE id = ?;

-- name: list_jobs
SELECT * FROM jobs ORDER BY id;

-- name: set_job_state
-- ?1 state, ?2 now, ?3 reason, ?4 job id
UPDATE jobs SET state = ?1, updated_at = ?2,
    started_at = CASE WHEN ?1 = 'active' AND started_at IS NULL THEN ?2 ELSE started_at END,
    finished_at = CASE WHEN ?1 IN ('completed', 'failed', 'cancelled') THEN ?2
                       ELSE NULL END,
    reason = CASE WHEN ?1 = 'ready' THEN NULL ELSE coalesce(?3, reason) END,
    owner = CASE WHEN ?1 = 'preparing' THEN owner ELSE NULL END
WHERE id = ?4;

-- name: set_job_priority
UPDATE jobs SET priority = ?, updated_at = ? WHERE id = ?;

-- name: set_job_rate
UPDATE jobs SET rate = ? WHERE id = ?;

-- name: delete_job_items
DELETE FROM items WHERE job_id = ?;

-- name: delete_job
DELETE FROM jobs WHERE id = ?;

-- name: delete_job_discoveries
DELETE FROM discoveries WHERE job_id = ?;

-- name: delete_job_paused_accounts
DELETE FROM paused_accounts WHERE job_id = ?;

-- name: delete_job_counts
DELETE FROM counts WHERE job_id = ?;

-- name: delete_job_error_counts
DELETE FROM error_counts WHERE job_id = ?;

-- name: upsert_shard
INSERT INTO shards (partition, account, region) VALUES (?, ?, ?)
ON CONFLICT (partition, account, region) DO UPDATE SET region = excluded.region
RETURNING id;

-- name: all_shards
SELECT id, partition, account, region FROM shards;

-- name: upsert_tagset
INSERT INTO tagsets (digest, body) VALUES (?, ?)
ON CONFLICT (digest) DO UPDATE SET digest = excluded.digest
RETURNING id;

-- name: get_tagset
SELECT body FROM tagsets WHERE id = ?;

-- name: insert_item
INSERT INTO items (job_id, arn, shard_id, tagset_id, state, line, error_code, http_status,
                   message, finished_at, route)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (job_id, arn) DO NOTHING;

-- name: insert_item_at
-- insert_item with the id given (the row's place in the input: rows go in ARN order)
INSERT INTO items (id, job_id, arn, shard_id, tagset_id, state, line, error_code, http_status,
                   message, finished_at, route)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (job_id, arn) DO NOTHING;

-- name: counts
SELECT state, sum(n) FROM counts WHERE job_id = ? GROUP BY state;

-- name: shard_counts
SELECT shard_id, state, sum(n) FROM counts WHERE job_id = ? GROUP BY shard_id, state
HAVING sum(n) > 0;

-- name: route_counts
SELECT shard_id, route, state, n FROM counts WHERE job_id = ? AND n > 0;

-- name: error_counts
SELECT error_code, n FROM error_counts WHERE job_id = ? AND n > 0 ORDER BY n DESC, error_code
LIMIT ?;

-- name: error_example
SELECT arn, http_status, message FROM items
WHERE job_id = ? AND state IN ('failed', 'invalid') AND error_code = ? ORDER BY id LIMIT 1;

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
  AND j.loading IS NULL;

-- name: claim
-- ?1 job, ?2 shard, ?3 now, ?4 limit, ?5 owner, ?6 lease expiry. Only while the job is ready
-- or active: once it is paused or ended nothing more of it is leased (undo relies on it).
UPDATE items SET state = 'leased', lease_owner = ?5, lease_expires_at = ?6
WHERE id IN (SELECT id FROM items INDEXED BY items_pending
             WHERE job_id = ?1 AND shard_id = ?2 AND state = 'pending'
               AND next_attempt_at <= ?3
             ORDER BY tagset_id, next_attempt_at
             LIMIT ?4)
  AND EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND state IN ('ready', 'active'))
RETURNING id, arn, tagset_id, attempts, before_tags;

-- name: claim_route
-- As claim, the items of one route (?7): each route of a shard is claimed (and sent) at its
-- own pace.
UPDATE items SET state = 'leased', lease_owner = ?5, lease_expires_at = ?6
WHERE id IN (SELECT id FROM items INDEXED BY items_pending
             WHERE job_id = ?1 AND shard_id = ?2 AND route = ?7
               AND state = 'pending' AND next_attempt_at <= ?3
             ORDER BY tagset_id, next_attempt_at
             LIMIT ?4)
  AND EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND state IN ('ready', 'active'))
RETURNING id, arn, tagset_id, attempts, before_tags;

-- name: next_due
SELECT min(next_attempt_at) FROM items INDEXED BY items_pending
WHERE job_id = ? AND shard_id = ? AND state = 'pending';

-- name: next_due_route
SELECT min(next_attempt_at) FROM items INDEXED BY items_pending
WHERE job_id = ? AND shard_id = ? AND route = ? AND state = 'pending';

-- name: set_route
-- A job that takes the setting's route at its first run: its pending items follow it.
UPDATE items SET route = ?1 WHERE job_id = ?2 AND state = 'pending' AND route <> ?1;

-- name: record
-- ?1 owner, then a row's ?2 id, ?3 state, ?4 attempts, ?5 next_attempt_at, ?6 error code,
-- ?7 http status, ?8 message, ?9 finished_at. Only the lease holder's rows land.
UPDATE items SET state = ?3, attempts = ?4, next_attempt_at = ?5, error_code = ?6,
                 http_status = ?7, message = ?8, finished_at = ?9, lease_owner = NULL,
                 lease_expires_at = NULL
WHERE id = ?2 AND state = 'leased' AND lease_owner = ?1;

-- name: release_owner
UPDATE items SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL
WHERE state = 'leased' AND lease_owner = ?;

-- name: release_expired
UPDATE items SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL
WHERE state = 'leased' AND lease_expires_at < ?;

-- name: register_owner
-- the last: whether the owner holds a database session (its liveness; never on SQLite)
INSERT INTO owners (owner, host, pid, started_at, heartbeat_at, session) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
                                  session = excluded.session;

-- name: heartbeat
UPDATE owners SET heartbeat_at = ? WHERE owner = ?;

-- name: all_owners
SELECT owner, host, pid, heartbeat_at, session FROM owners;

-- name: delete_owner
DELETE FROM owners WHERE owner = ?;

-- name: stale_preparing
SELECT id, owner FROM jobs WHERE state = 'preparing';

-- name: retry_failed
-- Failed items, and those cancelled because their job passed its failure threshold.
UPDATE items SET state = 'pending', attempts = 0, next_attempt_at = 0, finished_at = NULL,
                 before_tags = NULL
WHERE job_id = ? AND (state = 'failed' OR (state = 'cancelled' AND error_code = 'JobFailed'));

-- name: retry_failed_code
UPDATE items SET state = 'pending', attempts = 0, next_attempt_at = 0, finished_at = NULL,
                 before_tags = NULL
WHERE job_id = ? AND state = 'failed' AND error_code = ?;

-- name: cancel_items
UPDATE items SET state = 'cancelled', finished_at = ?, lease_owner = NULL,
                 lease_expires_at = NULL, error_code = ?, message = ?
WHERE job_id = ? AND state IN ('pending', 'leased');

-- name: report_page
SELECT i.id, i.arn, s.account, s.region, i.state, i.attempts, i.error_code, i.http_status,
       i.message, i.finished_at, i.line, i.before_tags, t.body, i.route
FROM items i LEFT JOIN shards s ON s.id = i.shard_id LEFT JOIN tagsets t ON t.id = i.tagset_id
WHERE i.job_id = ? AND i.id > ?
ORDER BY i.id LIMIT ?;

-- name: report_page_unsuccessful
SELECT i.id, i.arn, s.account, s.region, i.state, i.attempts, i.error_code, i.http_status,
       i.message, i.finished_at, i.line, i.before_tags, t.body, i.route
FROM items i INDEXED BY items_unsuccessful LEFT JOIN shards s ON s.id = i.shard_id
     LEFT JOIN tagsets t ON t.id = i.tagset_id
WHERE i.job_id = ? AND i.state IN ('failed', 'invalid') AND i.id > ?
ORDER BY i.id LIMIT ?;

-- name: create_discoveries
-- ?1 job, ?2 now, then a row's ?3 partition, ?4 account, ?5 region
INSERT INTO discoveries (job_id, partition, account, region, updated_at)
VALUES (?1, ?3, ?4, ?5, ?2)
ON CONFLICT (job_id, account, region) DO NOTHING;

-- name: claim_discovery
-- ?1 owner, ?2 now, ?3 job ids (a JSON array; NULL: any job)
UPDATE discoveries SET state = 'running', owner = ?1, updated_at = ?2
WHERE id = (SELECT d.id FROM discoveries d JOIN jobs j ON j.id = d.job_id
            WHERE d.state = 'pending' AND j.state IN ('ready', 'active')
              AND (?3 IS NULL OR d.job_id IN (SELECT value FROM json_each(?3)))
            ORDER BY j.priority DESC, d.id LIMIT 1)
RETURNING *;

-- name: save_discovery_page
UPDATE discoveries SET token = ?, token_at = ?, pages = pages + 1, found = found + ?,
                       updated_at = ?
WHERE id = ? AND owner = ?;

-- name: restart_discovery
UPDATE discoveries SET token = NULL, token_at = NULL, restarts = restarts + 1, updated_at = ?
WHERE id = ?;

-- name: finish_discovery
UPDATE discoveries SET state = ?, error = ?, owner = NULL, token = NULL, updated_at = ?
WHERE id = ?;

-- name: release_discoveries
UPDATE discoveries SET state = 'pending', owner = NULL WHERE state = 'running' AND owner = ?;

-- name: job_discoveries
SELECT * FROM discoveries WHERE job_id = ? ORDER BY account, region;

-- name: skip_arns
-- ?1 now, ?2 job, then a row's ?3 ARN, ?4 reason
UPDATE items SET state = 'skipped', finished_at = ?1, message = ?4
WHERE job_id = ?2 AND arn = ?3 AND state = 'pending';

-- name: succeeded_page
SELECT i.id, i.arn, i.shard_id, i.tagset_id FROM items i
WHERE i.job_id = ? AND i.state = 'succeeded' AND i.id > ? ORDER BY i.id LIMIT ?;

-- name: set_drift
-- ?1 now, then a row's ?2 item id, ?3 drift
UPDATE items SET verified_at = ?1, drift = ?3 WHERE id = ?2;

-- name: set_job_options
UPDATE jobs SET options = ?, updated_at = ? WHERE id = ?;

-- name: sync_insert_rule
-- ?1 name, ?2 tag key, ?3 tag value, ?4 resource query, ?5 apply (JSON), ?6 regions (JSON),
-- ?7 accounts (JSON), ?8 interval, ?9 now, ?10 way in (JSON or NULL)
INSERT INTO sync_rules (name, tag_key, tag_value, resource_query, apply_tags, regions, accounts,
                        interval_seconds, created_at, way_in)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
RETURNING id;

-- name: sync_get_rule
SELECT * FROM sync_rules WHERE name = ?;

-- name: sync_list_rules
SELECT * FROM sync_rules ORDER BY name;

-- name: sync_delete_rule
DELETE FROM sync_rules WHERE id = ?;

-- name: sync_delete_members
DELETE FROM sync_members WHERE rule_id = ?;

-- name: sync_due_rules
SELECT name FROM sync_rules WHERE next_run_at <= ? ORDER BY next_run_at;

-- name: sync_claim_due
-- An evaluation is claimed by moving next_run_at past now: one daemon wins.
UPDATE sync_rules SET next_run_at = ?2 + interval_seconds
WHERE name = ?1 AND next_run_at <= ?2
RETURNING *;

-- name: sync_claim_now
UPDATE sync_rules SET next_run_at = ?2 + interval_seconds WHERE name = ?1 RETURNING *;

-- name: sync_finish_rule
-- ?1 status, ?2 error, ?3 now, ?4 rule id, ?5 added, ?6 removed, ?7 job ids (JSON)
UPDATE sync_rules SET status = ?1, error = ?2, last_run_at = ?3,
    members = (SELECT count(*) FROM sync_members WHERE rule_id = ?4),
    last_added = ?5, last_removed = ?6, last_jobs = ?7
WHERE id = ?4;

-- name: sync_members_page
SELECT arn, digest FROM sync_members WHERE rule_id = ? AND arn > ? ORDER BY arn LIMIT ?;

-- name: sync_upsert_members
-- ?1 rule, ?2 applied (JSON), ?3 digest, ?4 now, then a row's ?5 ARN
INSERT INTO sync_members (rule_id, arn, applied, digest, last_seen_at)
VALUES (?1, ?5, ?2, ?3, ?4)
ON CONFLICT (rule_id, arn) DO UPDATE SET applied = excluded.applied, digest = excluded.digest,
    last_seen_at = excluded.last_seen_at;

-- name: sync_delete_members_arns
DELETE FROM sync_members WHERE rule_id = ? AND arn = ?;

-- name: sync_rule_status_counts
SELECT status, count(*) FROM sync_rules GROUP BY status;

-- name: metrics_items_by_state
SELECT state, sum(n) FROM counts GROUP BY state;

-- name: metrics_active_job_items
SELECT j.id, j.name, j.operation, j.priority, c.state, sum(c.n) FROM jobs j
JOIN counts c ON c.job_id = j.id
WHERE j.state IN ('ready', 'active', 'paused')
GROUP BY j.id, c.state;

-- name: metrics_jobs_by_state
SELECT state, count(*) FROM jobs GROUP BY state;

-- name: metrics_ping
SELECT 1;

-- name: pause_account
INSERT INTO paused_accounts (job_id, account, reason, paused_at) VALUES (?, ?, ?, ?)
ON CONFLICT (job_id, account) DO NOTHING;

-- name: paused_accounts
SELECT account, reason, paused_at FROM paused_accounts WHERE job_id = ? ORDER BY account;

-- name: clear_paused_accounts
DELETE FROM paused_accounts WHERE job_id = ?;

-- name: has_count_trigger
-- Stores made before counts were added per chunk kept an insert trigger.
SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'items_count_insert';

-- name: max_item_id
SELECT max(id) FROM items;

-- name: insert_run
-- A run of consecutive items of one shard and tagset with consecutive source lines: one
-- JSON array of ARNs bound as a single parameter.
INSERT INTO items (job_id, arn, shard_id, tagset_id, state, line, route)
SELECT ?, value, ?, ?, 'pending', ? + key, ? FROM json_each(?) WHERE true
ON CONFLICT (job_id, arn) DO NOTHING;

-- name: insert_run_lines
-- Lines not consecutive: an array of [arn, line] pairs.
INSERT INTO items (job_id, arn, shard_id, tagset_id, state, line, route)
SELECT ?, json_extract(value, '$[0]'), ?, ?, 'pending', json_extract(value, '$[1]'), ?
FROM json_each(?) WHERE true
ON CONFLICT (job_id, arn) DO NOTHING;

-- name: add_counts
-- Both read only the rows just inserted: `+` keeps the planner on the rowid range (id > ?2)
-- instead of an index on job_id, which would scan the whole job every chunk.
INSERT INTO counts (job_id, shard_id, route, state, n)
SELECT job_id, shard_id, route, state, count(*) FROM items WHERE id > ?2 AND +job_id = ?1
GROUP BY shard_id, route, state
ON CONFLICT (job_id, shard_id, route, state) DO UPDATE SET n = n + excluded.n;

-- name: add_error_counts
INSERT INTO error_counts (job_id, error_code, n)
SELECT job_id, coalesce(error_code, 'Unknown'), count(*) FROM items
WHERE id > ?2 AND +job_id = ?1 AND +state IN ('failed', 'invalid')
GROUP BY coalesce(error_code, 'Unknown')
ON CONFLICT (job_id, error_code) DO UPDATE SET n = n + excluded.n;

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations
    (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL);

-- name: migration_applied
SELECT 1 FROM schema_migrations WHERE version = ?;

-- name: migration_done
INSERT INTO schema_migrations VALUES (?, ?, ?);

-- name: acquire_shard
-- Take a free or expired shard lease, or renew our own; RETURNING says whether we hold it.
INSERT INTO shard_leases (shard_id, owner, expires_at) VALUES (:shard_id, :owner, :expires)
ON CONFLICT (shard_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE shard_leases.owner = excluded.owner OR shard_leases.expires_at < :now
RETURNING shard_id;

-- name: release_shards
DELETE FROM shard_leases WHERE owner = ?;

-- name: release_some_shards
DELETE FROM shard_leases WHERE owner = ? AND shard_id = ?;

-- name: shard_holders
SELECT shard_id, owner, expires_at FROM shard_leases WHERE expires_at >= ?;

-- name: workers
SELECT owner, host, pid, started_at, heartbeat_at FROM owners ORDER BY started_at;

-- name: lease_holders
SELECT lease_owner, count(*) FROM items INDEXED BY items_leased
WHERE state = 'leased' GROUP BY lease_owner;

-- name: import_job
INSERT INTO jobs (id, name, operation, state, priority, options, owner, created_at, started_at,
                  finished_at, updated_at, rate, reason)
VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?);

-- name: export_items
-- Every column of a page of items, the shard and tagset by value (ids are per store).
SELECT i.id, i.job_id, i.arn, s.partition, s.account, s.region, t.body, i.state, i.attempts,
       i.next_attempt_at, i.lease_owner, i.lease_expires_at, i.error_code, i.http_status,
       i.message, i.finished_at, i.line, i.verified_at, i.drift, i.before_tags, i.route
FROM items i LEFT JOIN shards s ON s.id = i.shard_id LEFT JOIN tagsets t ON t.id = i.tagset_id
WHERE i.id > ? ORDER BY i.id LIMIT ?;

-- name: export_job_items
SELECT i.id, i.job_id, i.arn, s.partition, s.account, s.region, t.body, i.state, i.attempts,
       i.next_attempt_at, i.lease_owner, i.lease_expires_at, i.error_code, i.http_status,
       i.message, i.finished_at, i.line, i.verified_at, i.drift, i.before_tags, i.route
FROM items i LEFT JOIN shards s ON s.id = i.shard_id LEFT JOIN tagsets t ON t.id = i.tagset_id
WHERE i.job_id = ? AND i.id > ? ORDER BY i.id LIMIT ?;

-- name: import_item
INSERT INTO items (id, job_id, arn, shard_id, tagset_id, state, attempts, next_attempt_at,
                   lease_owner, lease_expires_at, error_code, http_status, message, finished_at,
                   line, verified_at, drift, before_tags, route)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: import_counts
-- Counters of imported items, added up by the caller (SQLite counts inserts itself).
INSERT INTO counts (job_id, shard_id, route, state, n) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (job_id, shard_id, route, state) DO UPDATE SET n = n + excluded.n;

-- name: import_error_counts
INSERT INTO error_counts (job_id, error_code, n) VALUES (?, ?, ?)
ON CONFLICT (job_id, error_code) DO UPDATE SET n = n + excluded.n;

-- name: import_discoveries
INSERT INTO discoveries (id, job_id, partition, account, region, state, owner, token, token_at,
                         pages, found, restarts, error, updated_at)
VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?);

-- name: import_paused_accounts
INSERT INTO paused_accounts (job_id, account, reason, paused_at) VALUES (?, ?, ?, ?);

-- name: import_sync_rule
INSERT INTO sync_rules (id, name, tag_key, tag_value, resource_query, apply_tags, regions,
                        accounts, interval_seconds, status, error, created_at, last_run_at,
                        next_run_at, members, last_added, last_removed, last_jobs, way_in)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: export_sync_members
SELECT arn, applied, digest, last_seen_at FROM sync_members
WHERE rule_id = ? AND arn > ? ORDER BY arn LIMIT ?;

-- name: import_sync_members
INSERT INTO sync_members (rule_id, arn, applied, digest, last_seen_at) VALUES (?, ?, ?, ?, ?);
-- name: record_sample
-- A job's worked total at a time (?1 job, ?2 at, ?3 done, ?4 min gap); skipped when the job
-- has a sample less than ?4 seconds old (several daemons sharing a store write one sample an
-- interval between them).
INSERT INTO job_samples (job_id, at, done)
SELECT ?1, ?2, ?3
WHERE NOT EXISTS (SELECT 1 FROM job_samples WHERE job_id = ?1 AND at > ?2 - ?4)
ON CONFLICT (job_id, at) DO NOTHING;

-- name: samples
SELECT at, done FROM job_samples WHERE job_id = ? AND at >= ? ORDER BY at;

-- name: delete_job_samples
DELETE FROM job_samples WHERE job_id = ?;

-- name: last_failures
-- The latest failed or invalid items of a job, newest first, read from items_failed_at.
SELECT i.id, i.arn, s.account, s.region, i.state, i.attempts, i.error_code, i.http_status,
       i.message, i.finished_at, i.line, i.before_tags, t.body, i.route
FROM items i INDEXED BY items_failed_at LEFT JOIN shards s ON s.id = i.shard_id
     LEFT JOIN tagsets t ON t.id = i.tagset_id
WHERE i.job_id = ? AND i.state IN ('failed', 'invalid') AND i.finished_at IS NOT NULL
ORDER BY i.finished_at DESC, i.id DESC LIMIT ?;

-- name: keep_before
-- A before-image, kept before its item's call is sent; an earlier attempt's is kept instead.
-- ?1 owner, then a row's ?2 item id, ?3 before-image
UPDATE items SET before_tags = ?3
WHERE id = ?2 AND state = 'leased' AND lease_owner = ?1 AND before_tags IS NULL;

-- name: changed_page
-- Items a job changed (undo's source): a non-empty before-image, succeeded or skipped.
SELECT i.id, i.arn, s.partition, s.account, s.region, t.body, i.before_tags
FROM items i JOIN shards s ON s.id = i.shard_id JOIN tagsets t ON t.id = i.tagset_id
WHERE i.job_id = ? AND i.id > ? AND i.state IN ('succeeded', 'skipped')
  AND i.before_tags IS NOT NULL AND i.before_tags <> '{}'
ORDER BY i.id LIMIT ?;

-- name: first_rows
-- The kept row of each of these ARNs (?2: a JSON array): a duplicate row is compared with it.
SELECT i.arn, i.line, t.body FROM items i LEFT JOIN tagsets t ON t.id = i.tagset_id
WHERE i.job_id = ?1 AND i.arn IN (SELECT value FROM json_each(?2));

-- name: set_worker_rate
-- ? owner, ? job, ? items finished per second lately, ? now
INSERT INTO worker_rates (owner, job_id, rate, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (job_id, owner) DO UPDATE SET rate = excluded.rate, updated_at = excluded.updated_at;

-- name: fleet_rate
-- ?1 job, ?2 rows written since, ?3 heartbeats since: the sum of the live workers'
-- rates, how many they are, and when any worker last wrote one for the job
SELECT COALESCE(SUM(CASE WHEN r.updated_at >= ?2 AND o.heartbeat_at >= ?3 THEN r.rate END), 0),
       COUNT(CASE WHEN r.updated_at >= ?2 AND o.heartbeat_at >= ?3 THEN 1 END),
       MAX(r.updated_at)
FROM worker_rates r LEFT JOIN owners o ON o.owner = r.owner
WHERE r.job_id = ?1;

-- name: delete_worker_rates
DELETE FROM worker_rates WHERE owner = ?;

-- name: staging_create
-- A loader's staging table (Store.loader): private to the connection, unindexed, gone with it.
CREATE TEMP TABLE IF NOT EXISTS item_staging (
    seq       INTEGER PRIMARY KEY,
    arn       TEXT    NOT NULL,
    line      INTEGER,
    shard_id  INTEGER NOT NULL,
    tagset_id INTEGER NOT NULL,
    route     TEXT    NOT NULL,
    problem   TEXT
);

-- name: staging_clear
DELETE FROM temp.item_staging;

-- name: stage_item
INSERT INTO temp.item_staging (arn, line, shard_id, tagset_id, route, problem)
VALUES (?, ?, ?, ?, ?, ?);

-- name: stage_group
-- Rows of one shard, tagset and route: ?1 a JSON array of "LINE ARN" texts (LINE 0: none).
INSERT INTO temp.item_staging (arn, line, shard_id, tagset_id, route)
SELECT substr(value, instr(value, ' ') + 1),
       nullif(CAST(substr(value, 1, instr(value, ' ') - 1) AS INTEGER), 0), ?2, ?3, ?4
FROM json_each(?1);

-- name: move_staged
-- ?1 job, ?2 now. In ARN order (the first row of a repeated ARN first: a commit holds the rows
-- of one source, staged by group, so its line is the input order): the (job, ARN) index is
-- filled in order and ids follow the ARN order within one commit. `WHERE true` tells SQLite's
-- parser the ON CONFLICT is the upsert's.
INSERT INTO items (job_id, arn, shard_id, tagset_id, state, line, error_code, message,
                   finished_at, route)
SELECT ?1, arn, shard_id, tagset_id,
       CASE WHEN problem IS NULL THEN 'pending' ELSE 'invalid' END, line,
       CASE WHEN problem IS NULL THEN NULL ELSE 'InvalidInput' END, problem,
       CASE WHEN problem IS NULL THEN NULL ELSE ?2 END, route
FROM temp.item_staging
WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND state IN ('completed', 'failed',
                                                                  'cancelled'))
ORDER BY arn, line, seq
ON CONFLICT (job_id, arn) DO NOTHING;

-- name: add_staged_counts
-- The counters of a commit whose every staged row went in (no repeat): from the staging table,
-- smaller than the rows just inserted and with nothing else to read.
INSERT INTO counts (job_id, shard_id, route, state, n)
SELECT ?1, shard_id, route, CASE WHEN problem IS NULL THEN 'pending' ELSE 'invalid' END, count(*)
FROM temp.item_staging WHERE true
GROUP BY shard_id, route, problem IS NULL
ON CONFLICT (job_id, shard_id, route, state) DO UPDATE SET n = n + excluded.n;

-- name: staged_conflicts
-- Staged rows whose ARN the job holds with another tagset (the kept row may be one of them).
SELECT s.arn, s.line, i.line, ti.body, ts.body
FROM temp.item_staging s
JOIN items i ON i.job_id = ?1 AND i.arn = s.arn
JOIN tagsets ti ON ti.id = i.tagset_id
JOIN tagsets ts ON ts.id = s.tagset_id
WHERE s.tagset_id <> 0 AND i.tagset_id <> 0 AND i.tagset_id <> s.tagset_id
ORDER BY s.line, s.seq LIMIT ?2;

-- name: staged_conflict_count
SELECT count(*) FROM temp.item_staging s
JOIN items i ON i.job_id = ?1 AND i.arn = s.arn
WHERE s.tagset_id <> 0 AND i.tagset_id <> 0 AND i.tagset_id <> s.tagset_id;

-- name: start_loading
-- ?1 job, ?2 loader, ?3 rows committed, ?4 now, ?5 their chunks' digests: a preparing job
-- becomes workable while its sources are still being read.
UPDATE jobs SET state = 'ready', owner = NULL, loading = ?2, loaded = ?3, loading_at = ?4,
    updated_at = ?4, loaded_digests = ?5
WHERE id = ?1 AND state = 'preparing';

-- name: continue_loading
-- ?1 job, ?2 loader, ?3 now, ?4 the loader it takes over: a resubmit continues an
-- interrupted (paused) load, unless another took it first.
UPDATE jobs SET state = 'ready', reason = NULL, loading = ?2, loading_at = ?3,
    updated_at = ?3
WHERE id = ?1 AND loading = ?4 AND state = 'paused';

-- name: note_loaded
-- ?1 job, ?2 loader, ?3 rows committed (NULL: unchanged), ?4 now, ?5 their chunks' digests
UPDATE jobs SET loaded = coalesce(?3, loaded), loading_at = ?4,
    loaded_digests = coalesce(?5, loaded_digests)
WHERE id = ?1 AND loading = ?2 AND state NOT IN ('completed', 'failed', 'cancelled');

-- name: finish_loading
-- ?1 job, ?2 loader, ?3 rows committed, ?4 now: every row is in.
UPDATE jobs SET loading = NULL, loading_at = NULL, loaded = ?3, updated_at = ?4
WHERE id = ?1 AND loading = ?2 AND state NOT IN ('completed', 'failed', 'cancelled');

-- name: loading_jobs
SELECT id, loading, loading_at, loaded, state FROM jobs
WHERE loading IS NOT NULL AND state IN ('ready', 'active');

-- name: pause_interrupted_load
-- ?1 job, ?2 loader, ?3 its last sign of life as read, ?4 reason, ?5 now:
-- only if the loader has not spoken since.
UPDATE jobs SET state = 'paused', reason = ?4, updated_at = ?5
WHERE id = ?1 AND loading = ?2 AND loading_at = ?3 AND state IN ('ready', 'active');

-- name: pause_load
-- ?1 job, ?2 loader, ?3 reason, ?4 now: a load that stopped pauses its job, if the
-- job still runs (one cancelled or failed meanwhile stays so).
UPDATE jobs SET state = 'paused', reason = ?3, updated_at = ?4
WHERE id = ?1 AND loading = ?2 AND state IN ('ready', 'active');
