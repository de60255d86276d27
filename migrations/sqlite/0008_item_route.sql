-- The route of each item (issue 15): `ec2` (EC2 CreateTags/DeleteTags) or `tagging-api`
-- (TagResources/UntagResources), decided at submission from the ARN and the job's route, and
-- kept with the item so that a lane claims per (shard, route) and each route runs at its own
-- ceiling. Counters are kept per (job, shard, route, state): `status` shows a row per route.
--
-- Existing items get the route their ARN implies (the rule of bulktag/arn.py `ec2_route` as
-- of this migration), or `tagging-api` when their job was pinned to it. REGEXP is the store's
-- own function (SqliteStore registers Python's re before migrating). The counters are rebuilt
-- from the items once (one read of the items table), as is the pending index (route added).

DROP TRIGGER IF EXISTS items_count_insert;
DROP TRIGGER IF EXISTS items_count_update;
DROP TRIGGER IF EXISTS items_count_delete;

ALTER TABLE items ADD COLUMN route TEXT NOT NULL DEFAULT 'tagging-api'
    CHECK (route IN ('tagging-api', 'ec2'));

UPDATE items SET route = 'ec2'
WHERE arn LIKE 'arn:%:ec2:%'
  AND arn REGEXP '^arn:[^:]+:ec2:[^:]*:[^:]*:(instance/i|volume/vol|snapshot/snap|image/ami|network-interface/eni|security-group/sg|subnet/subnet|vpc/vpc|internet-gateway/igw|route-table/rtb|launch-template/lt|natgateway/nat|network-acl/acl|elastic-ip/eipalloc|dhcp-options/dopt|vpc-peering-connection/pcx|vpn-gateway/vgw|customer-gateway/cgw|vpc-endpoint/vpce|key-pair/key)-[0-9a-zA-Z]{1,64}$'
  AND job_id NOT IN (SELECT id FROM jobs WHERE json_extract(options, '$.route') = 'tagging-api');

DROP INDEX items_pending;
CREATE INDEX items_pending ON items (job_id, shard_id, route, tagset_id, next_attempt_at)
    WHERE state = 'pending';

ALTER TABLE counts RENAME TO counts_before_routes;
CREATE TABLE counts (
    job_id    INTEGER NOT NULL,
    shard_id  INTEGER NOT NULL,
    route     TEXT    NOT NULL,
    state     TEXT    NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (job_id, shard_id, route, state)
) WITHOUT ROWID;
INSERT INTO counts (job_id, shard_id, route, state, n)
SELECT job_id, shard_id, route, state, count(*) FROM items GROUP BY job_id, shard_id, route, state;
DROP TABLE counts_before_routes;

-- Inserts are counted by Store.add_items (per chunk); updates and deletes by these triggers.
-- A pending item whose job takes the setting's route at its first run may change route.
CREATE TRIGGER items_count_update AFTER UPDATE OF state, route ON items
WHEN OLD.state <> NEW.state OR OLD.route <> NEW.route BEGIN
    UPDATE counts SET n = n - 1
        WHERE job_id = OLD.job_id AND shard_id = OLD.shard_id AND route = OLD.route
          AND state = OLD.state;
    INSERT INTO counts (job_id, shard_id, route, state, n)
        VALUES (NEW.job_id, NEW.shard_id, NEW.route, NEW.state, 1)
        ON CONFLICT (job_id, shard_id, route, state) DO UPDATE SET n = n + 1;
    UPDATE error_counts SET n = n - 1
        WHERE OLD.state IN ('failed', 'invalid') AND OLD.state <> NEW.state
          AND job_id = OLD.job_id AND error_code = coalesce(OLD.error_code, 'Unknown');
    INSERT INTO error_counts (job_id, error_code, n)
        SELECT NEW.job_id, coalesce(NEW.error_code, 'Unknown'), 1
        WHERE NEW.state IN ('failed', 'invalid') AND OLD.state <> NEW.state
        ON CONFLICT (job_id, error_code) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER items_count_delete AFTER DELETE ON items BEGIN
    UPDATE counts SET n = n - 1
        WHERE job_id = OLD.job_id AND shard_id = OLD.shard_id AND route = OLD.route
          AND state = OLD.state;
    UPDATE error_counts SET n = n - 1
        WHERE OLD.state IN ('failed', 'invalid') AND job_id = OLD.job_id
          AND error_code = coalesce(OLD.error_code, 'Unknown');
END;
