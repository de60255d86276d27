-- The dashboard (issue 14): throughput samples and the latest failures of a job, both read
-- without counting items (same shape as migrations/sqlite/0006_dashboard.sql).
--
-- job_samples: the daemon writes a job's worked total (succeeded + skipped + failed, from the
-- counts table) every few seconds while the job runs; a chart is the difference between two
-- samples over the time between them. A few thousand rows for a day-long job.
CREATE TABLE job_samples (
    job_id  BIGINT           NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    done    BIGINT           NOT NULL,
    PRIMARY KEY (job_id, at)
);

-- The latest failures of a job by the time they ended: a partial index over failed and invalid
-- items only, so "the last 20 failures" reads 20 index entries on any job size. Building it on
-- an existing store reads the items table once (inside the migration's transaction).
CREATE INDEX items_failed_at ON items (job_id, finished_at, id)
    WHERE state IN ('failed', 'invalid');
