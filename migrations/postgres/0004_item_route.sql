-- The route of each item (issue 15): `ec2` (EC2 CreateTags/DeleteTags) or `tagging-api`
-- (TagResources/UntagResources), decided at submission from the ARN and the job's route, and
-- kept with the item so that a lane claims per (shard, route) and each route runs at its own
-- ceiling. Counters are kept per (job, shard, route, state): `status` shows a row per route.
-- Same shape as migrations/sqlite/0008_item_route.sql.
--
-- Existing items get the route their ARN implies (the rule of bulktag/arn.py `ec2_route` as
-- of this migration), or `tagging-api` when their job was pinned to it. The count triggers
-- are off while the column is filled (the counters are rebuilt from the items once after).

DROP TRIGGER items_count_insert ON items;
DROP TRIGGER items_count_update ON items;
DROP TRIGGER items_count_delete ON items;

ALTER TABLE items ADD COLUMN route TEXT NOT NULL DEFAULT 'tagging-api'
    CHECK (route IN ('tagging-api', 'ec2'));

UPDATE items SET route = 'ec2'
WHERE arn ~ '^arn:[^:]+:ec2:[^:]*:[^:]*:(instance/i|volume/vol|snapshot/snap|image/ami|network-interface/eni|security-group/sg|subnet/subnet|vpc/vpc|internet-gateway/igw|route-table/rtb|launch-template/lt|natgateway/nat|network-acl/acl|elastic-ip/eipalloc|dhcp-options/dopt|vpc-peering-connection/pcx|vpn-gateway/vgw|customer-gateway/cgw|vpc-endpoint/vpce|key-pair/key)-[0-9a-zA-Z]{1,64}$'
  AND job_id NOT IN (SELECT id FROM jobs WHERE options->>'route' = 'tagging-api');

DROP INDEX items_pending;
CREATE INDEX items_pending ON items (job_id, shard_id, route, tagset_id, next_attempt_at)
    WHERE state = 'pending';

DROP TABLE counts;
CREATE TABLE counts (
    job_id    BIGINT NOT NULL,
    shard_id  BIGINT NOT NULL,
    route     TEXT   NOT NULL,
    state     TEXT   NOT NULL,
    n         BIGINT NOT NULL,
    PRIMARY KEY (job_id, shard_id, route, state)
);
INSERT INTO counts (job_id, shard_id, route, state, n)
SELECT job_id, shard_id, route, state, count(*) FROM items GROUP BY job_id, shard_id, route, state;

CREATE OR REPLACE FUNCTION items_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO counts (job_id, shard_id, route, state, n)
    SELECT job_id, shard_id, route, state, count(*) FROM new_rows
    GROUP BY job_id, shard_id, route, state ORDER BY job_id, shard_id, route, state
    ON CONFLICT (job_id, shard_id, route, state) DO UPDATE SET n = counts.n + excluded.n;
    INSERT INTO error_counts (job_id, error_code, n)
    SELECT job_id, coalesce(error_code, 'Unknown'), count(*) FROM new_rows
    WHERE state IN ('failed', 'invalid')
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (job_id, error_code) DO UPDATE SET n = error_counts.n + excluded.n;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION items_count_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO counts (job_id, shard_id, route, state, n)
    SELECT job_id, shard_id, route, state, sum(d) FROM (
        SELECT job_id, shard_id, route, state, 1 AS d FROM new_rows
        UNION ALL
        SELECT job_id, shard_id, route, state, -1 FROM old_rows
    ) delta
    GROUP BY job_id, shard_id, route, state HAVING sum(d) <> 0
    ORDER BY job_id, shard_id, route, state
    ON CONFLICT (job_id, shard_id, route, state) DO UPDATE SET n = counts.n + excluded.n;
    INSERT INTO error_counts (job_id, error_code, n)
    SELECT job_id, code, sum(d) FROM (
        SELECT job_id, coalesce(error_code, 'Unknown') AS code, 1 AS d FROM new_rows
        WHERE state IN ('failed', 'invalid')
        UNION ALL
        SELECT job_id, coalesce(error_code, 'Unknown'), -1 FROM old_rows
        WHERE state IN ('failed', 'invalid')
    ) delta
    GROUP BY job_id, code HAVING sum(d) <> 0 ORDER BY job_id, code
    ON CONFLICT (job_id, error_code) DO UPDATE SET n = error_counts.n + excluded.n;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION items_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE counts c SET n = c.n - d.n
    FROM (SELECT job_id, shard_id, route, state, count(*) AS n FROM old_rows
          GROUP BY job_id, shard_id, route, state) d
    WHERE c.job_id = d.job_id AND c.shard_id = d.shard_id AND c.route = d.route
      AND c.state = d.state;
    UPDATE error_counts c SET n = c.n - d.n
    FROM (SELECT job_id, coalesce(error_code, 'Unknown') AS code, count(*) AS n FROM old_rows
          WHERE state IN ('failed', 'invalid')
          GROUP BY 1, 2) d
    WHERE c.job_id = d.job_id AND c.error_code = d.code;
    RETURN NULL;
END
$$;

CREATE TRIGGER items_count_insert AFTER INSERT ON items
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION items_count_insert();

CREATE TRIGGER items_count_update AFTER UPDATE ON items
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION items_count_update();

CREATE TRIGGER items_count_delete AFTER DELETE ON items
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION items_count_delete();
